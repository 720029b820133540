"""Tests for data/recordio.py, recordio_reader.py and recordio_writer.py against files written
by MXNet itself."""
import io
import json
import os
import shutil
import struct

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from data import image_ops
from data import recordio, recordio_reader, recordio_writer
from data.recordio import IRHeader, RecordIOError

JPEG_TOLERANCE = 12  # per-channel error allowed after JPEG quality 95


@pytest.fixture(scope='module')
def fixture_dir(shared_data):
    return os.path.join(shared_data, 'mxnet_fixture')


@pytest.fixture(scope='module')
def expected(fixture_dir):
    with open(os.path.join(fixture_dir, 'expected.json')) as f:
        return json.load(f)


def _open_fixture(folder):
    return recordio_reader.IndexedRecordReader(os.path.join(folder, 'train.rec'),
                                               os.path.join(folder, 'train.idx'))


def _idx_lines(path):
    with open(path) as f:
        return [line.split() for line in f if line.strip()]


def test_insightface_layout(fixture_dir, expected):
    with _open_fixture(fixture_dir) as reader:
        header, payload = recordio.unpack(reader.read(0))
        assert header.flag == 2 and payload == b''
        assert header.label.tolist() == expected['header_key0_label']
        assert reader.num_images == 6
        assert reader.image_keys.tolist() == [1, 2, 3, 4, 5, 6]
        assert list(reader.identity_keys) == [7, 8, 9]
        records = list(reader.iter_images())
        assert [r.key for r in records] == [1, 2, 3, 4, 5, 6]  # identities skipped
        for record, image in zip(records, expected['images']):
            header, payload = recordio.unpack(record.data)
            assert (header.flag, header.label, header.id) == (0, image['label'], image['key'])
            assert payload[:3] == b'\xff\xd8\xff'
            assert record.offset == reader.offset_of(record.key)
        for key, label in expected['identity_records'].items():
            header, _ = recordio.unpack(reader.read(int(key)))
            assert header.label.tolist() == label
        # Contiguous position ranges, as parallel workers read them.
        assert [r.key for r in reader.iter_images(2, 5)] == [3, 4, 5]


def _mean_bgr(image, columns):
    # Stay clear of the edges, where JPEG blurs the two halves together.
    return image[8:-8, columns, :].reshape(-1, 3).mean(axis=0)


def test_payloads_decode_to_expected_bgr_colours(fixture_dir, expected):
    with _open_fixture(fixture_dir) as reader:
        payloads = [recordio.unpack(r.data)[1] for r in reader.iter_images()]
    with tf.Graph().as_default():
        encoded = tf.placeholder(tf.string, [])
        decoded = image_ops.decode_image(encoded)
        with tf.Session() as session:
            images = [session.run(decoded, {encoded: p}) for p in payloads]
    for image, want in zip(images, expected['images']):
        assert image.shape == (112, 112, 3)
        np.testing.assert_allclose(_mean_bgr(image, slice(8, 48)), want['left_half_bgr'],
                                   atol=JPEG_TOLERANCE, err_msg='key %d left' % want['key'])
        np.testing.assert_allclose(_mean_bgr(image, slice(64, 104)), want['right_half_bgr'],
                                   atol=JPEG_TOLERANCE, err_msg='key %d right' % want['key'])


def test_magic_split_streaming(fixture_dir):
    with open(os.path.join(fixture_dir, 'magic_split.expected.json')) as f:
        want = [bytes.fromhex(h) for h in json.load(f)['records_hex']]
    records = list(recordio_reader.iter_records(os.path.join(fixture_dir, 'magic_split.rec')))
    assert [r.data for r in records] == want
    assert [r.offset for r in records] == [0, 28]
    # Our writer splits the first record exactly as MXNet did.
    out = io.BytesIO()
    for data in want:
        recordio_writer.write_record(out, data)
    with open(os.path.join(fixture_dir, 'magic_split.rec'), 'rb') as f:
        assert out.getvalue() == f.read()


def test_rewriting_the_mxnet_fixture_is_byte_identical(fixture_dir, tmp_path):
    rec, idx = str(tmp_path / 'copy.rec'), str(tmp_path / 'copy.idx')
    with _open_fixture(fixture_dir) as reader, recordio_writer.IndexedRecordWriter(rec, idx) as writer:
        for key, _ in _idx_lines(reader.idx_path):  # MXNet's write order: key 0 last
            data = reader.read(int(key))
            header, payload = recordio.unpack(data)
            assert recordio.pack(header, payload) == data  # pack inverts unpack
            writer.write(int(key), data)
    for ours, theirs in ((rec, 'train.rec'), (idx, 'train.idx')):
        with open(ours, 'rb') as a, open(os.path.join(fixture_dir, theirs), 'rb') as b:
            assert a.read() == b.read(), theirs


MAGIC = recordio.MAGIC_BYTES
ROUND_TRIP_PAYLOADS = [
    b'',
    b'abc',  # needs padding
    MAGIC,  # aligned at 0: empty first part
    b'abcd' + MAGIC + b'efgh',  # the MXNet fixture's case
    MAGIC + MAGIC + b'wxyz' + MAGIC,  # empty middle part, magic at the very end
    b'a' + MAGIC + b'bcdefg',  # unaligned: stored whole
    b'ab' + MAGIC + b'cd',
    b'abc' + MAGIC,
    b'\xff\xd8\xff' + os.urandom(1000) + MAGIC + os.urandom(61),
]


def _parts(blob):
    """(cflag, length) of every part of a written blob."""
    parts, position = [], 0
    while position < len(blob):
        magic, lrecord = struct.unpack_from('<II', blob, position)
        assert magic == recordio.MAGIC
        length = lrecord & ((1 << 29) - 1)
        parts.append((lrecord >> 29, length))
        position += 8 + (length + 3) // 4 * 4
    return parts


def test_writer_splits_at_aligned_magic_only():
    def parts_of(data):
        out = io.BytesIO()
        recordio_writer.write_record(out, data)
        assert len(out.getvalue()) % 4 == 0
        return _parts(out.getvalue())
    assert parts_of(b'abc') == [(0, 3)]
    assert parts_of(MAGIC) == [(1, 0), (3, 0)]
    assert parts_of(b'abcd' + MAGIC + b'efgh') == [(1, 4), (3, 4)]
    assert parts_of(MAGIC + MAGIC + b'wxyz' + MAGIC) == [(1, 0), (2, 0), (2, 4), (3, 0)]
    assert parts_of(b'a' + MAGIC + b'bcdefg') == [(0, 11)]


def test_writer_round_trip_indexed_and_streaming(tmp_path):
    rec, idx = str(tmp_path / 'rt.rec'), str(tmp_path / 'rt.idx')
    records = {}
    with recordio_writer.IndexedRecordWriter(rec, idx) as writer:
        for key, payload in enumerate(ROUND_TRIP_PAYLOADS, start=10):
            label = float(key) if key % 2 else [key, 0.5, -3.0]
            records[key] = recordio.pack(IRHeader(0, label, key, 7), payload)
            writer.write(key, records[key])
    assert [r.data for r in recordio_reader.iter_records(rec)] == list(records.values())
    with recordio_reader.IndexedRecordReader(rec, idx) as reader:  # no key 0: plain dataset
        assert reader.image_keys.tolist() == sorted(records)
        for key, payload in enumerate(ROUND_TRIP_PAYLOADS, start=10):
            header, got = recordio.unpack(reader.read(key))
            assert got == payload
            assert (header.id, header.id2) == (key, 7)
            if key % 2:
                assert (header.flag, header.label) == (0, key)
            else:
                assert header.flag == 3
                assert header.label.dtype == np.float32
                assert header.label.tolist() == [key, 0.5, -3.0]


def test_pack_and_insightface_header():
    data = recordio.pack_insightface_header(7, 10)
    header, payload = recordio.unpack(data)
    assert (header.flag, header.label.tolist(), payload) == (2, [7.0, 10.0], b'')
    assert recordio.pack(IRHeader(5, 2.0, 1, 0), b'x')[:4] == b'\0\0\0\0'  # flag follows label
    assert recordio.pack(IRHeader(0, np.float32([4]), 1, 0), b'')[:4] == b'\1\0\0\0'
    with pytest.raises(ValueError, match='non-empty'):
        recordio.pack(IRHeader(0, [], 0, 0), b'')
    with pytest.raises(ValueError, match='identity_start'):
        recordio.pack_insightface_header(0, 5)
    with pytest.raises(RecordIOError, match='fewer than the 24-byte'):
        recordio.unpack(b'short')
    with pytest.raises(RecordIOError, match='needs 8 bytes of labels'):
        recordio.unpack(struct.pack('<IfQQ', 2, 0, 0, 0) + b'1234')


def test_writer_rejects_bad_keys(tmp_path):
    with recordio_writer.IndexedRecordWriter(str(tmp_path / 'a.rec'), str(tmp_path / 'a.idx')) as w:
        with pytest.raises(ValueError, match='non-negative integer'):
            w.write(-1, b'')
        with pytest.raises(ValueError, match='non-negative integer'):
            w.write(1.5, b'')


# --- malformed inputs: copies of the MXNet fixture, corrupted -------------

@pytest.fixture
def broken(fixture_dir, tmp_path):
    """Paths of a writable copy of the MXNet fixture."""
    rec, idx = str(tmp_path / 'train.rec'), str(tmp_path / 'train.idx')
    shutil.copy(os.path.join(fixture_dir, 'train.rec'), rec)
    shutil.copy(os.path.join(fixture_dir, 'train.idx'), idx)
    return rec, idx


def _patch(path, offset, data):
    with open(path, 'r+b') as f:
        f.seek(offset)
        f.write(data)


def test_missing_files(broken, tmp_path):
    rec, idx = broken
    missing = str(tmp_path / 'nope.rec')
    with pytest.raises(RecordIOError, match='nope.rec: cannot open'):
        recordio_reader.IndexedRecordReader(missing, idx)
    with pytest.raises(RecordIOError, match='nope.rec: cannot open'):
        list(recordio_reader.iter_records(missing))
    with pytest.raises(RecordIOError, match='nope.idx: cannot open'):
        recordio_reader.IndexedRecordReader(rec, str(tmp_path / 'nope.idx'))


def test_wrong_magic(broken):
    rec, idx = broken
    _patch(rec, 2228, b'\0\0\0\0')  # key 3
    with recordio_reader.IndexedRecordReader(rec, idx) as reader:
        reader.read(2)
        with pytest.raises(RecordIOError) as error:
            list(reader.iter_images())
    message = str(error.value)
    assert '\n' not in message
    assert message.startswith(rec + ', key 3, byte offset 2228: wrong magic 0x00000000')
    with pytest.raises(RecordIOError, match='byte offset 2228: wrong magic'):
        list(recordio_reader.iter_records(rec))


def test_truncated_record(broken):
    rec, idx = broken
    with open(rec, 'r+b') as f:
        f.truncate(6760 + 20)  # inside record 0, the last one
    with pytest.raises(RecordIOError) as error:
        recordio_reader.IndexedRecordReader(rec, idx)
    assert str(error.value) == ('%s, key 0, byte offset 6760: truncated record: length 32 '
                                'runs past the end of the file (6780 bytes)' % rec)
    with pytest.raises(RecordIOError, match='byte offset 6760: truncated record'):
        list(recordio_reader.iter_records(rec))
    with open(rec, 'r+b') as f:
        f.truncate(6760 + 4)  # not even a part header left
    with pytest.raises(RecordIOError, match='byte offset 6760: truncated record: 4 bytes'):
        list(recordio_reader.iter_records(rec))


def test_idx_offset_past_end(broken):
    rec, idx = broken
    with open(idx, 'a') as f:
        f.write('11\t999996\n')
    with pytest.raises(RecordIOError) as error:
        recordio_reader.IndexedRecordReader(rec, idx)
    assert str(error.value) == ('%s, key 11, byte offset 999996: idx offset is past the '
                                'end of %s (6800 bytes)' % (idx, rec))


@pytest.mark.parametrize('line, problem', [
    ('3\tabc', "line 3: malformed idx line '3\\tabc'"),
    ('3', "line 3: malformed idx line '3'"),
    ('3\t4\t5', "line 3: malformed idx line"),
    ('3\t-4', "line 3: malformed idx line"),
    ('3\t6', 'key 3, byte offset 6: line 3: offset is not a multiple of 4'),
])
def test_malformed_idx_line(broken, line, problem):
    rec, idx = broken
    lines = _idx_lines(idx)
    lines[2] = [line]
    with open(idx, 'w') as f:
        f.write(''.join('\t'.join(fields) + '\n' for fields in lines))
    with pytest.raises(RecordIOError) as error:
        recordio_reader.IndexedRecordReader(rec, idx)
    assert str(error.value).startswith(idx + ', ' + problem if problem.startswith('key')
                                       else idx + ': ' + problem)


def test_duplicate_idx_key(broken):
    rec, idx = broken
    with open(idx, 'a') as f:
        f.write('3\t0\n')
    with pytest.raises(RecordIOError, match='key 3: key appears more than once'):
        recordio_reader.IndexedRecordReader(rec, idx)


def _raw_part(cflag, data):
    return (struct.pack('<II', recordio.MAGIC, (cflag << 29) | len(data)) + data
            + b'\0' * (-len(data) % 4))


@pytest.mark.parametrize('parts, offset, flag, expected', [
    ([(2, b'abcd'), (3, b'efgh')], 0, 2, '0 or 1'),
    ([(3, b'abcd')], 0, 3, '0 or 1'),
    ([(1, b'abcd'), (0, b'efgh')], 12, 0, '2 or 3'),
    ([(1, b'abcd'), (1, b'efgh')], 12, 1, '2 or 3'),
])
def test_continuation_flags_out_of_order(tmp_path, parts, offset, flag, expected):
    rec = str(tmp_path / 'flags.rec')
    with open(rec, 'wb') as f:
        f.write(b''.join(_raw_part(cflag, data) for cflag, data in parts))
    with pytest.raises(RecordIOError) as error:
        list(recordio_reader.iter_records(rec))
    assert str(error.value).startswith('%s, byte offset %d: continuation flag %d out of '
                                       'order (expected %s' % (rec, offset, flag, expected))


def test_invalid_continuation_flag(tmp_path):
    rec = str(tmp_path / 'flags.rec')
    with open(rec, 'wb') as f:
        f.write(_raw_part(0, b'ok') + _raw_part(5, b'efgh'))
    with pytest.raises(RecordIOError) as error:
        list(recordio_reader.iter_records(rec))
    assert str(error.value) == ('%s, byte offset 12: invalid continuation flag 5 (expected '
                                '0 to 3)' % rec)


def test_split_record_cut_short(tmp_path):
    rec = str(tmp_path / 'cut.rec')
    with open(rec, 'wb') as f:
        f.write(_raw_part(1, b'abcd'))  # first part, and no last part
    with pytest.raises(RecordIOError, match='byte offset 12: truncated record: 0 bytes'):
        list(recordio_reader.iter_records(rec))


def test_header_missing_image_key(broken):
    rec, idx = broken
    lines = [fields for fields in _idx_lines(idx) if fields[0] != '4']
    with open(idx, 'w') as f:
        f.write(''.join('\t'.join(fields) + '\n' for fields in lines))
    with pytest.raises(RecordIOError, match=r'key 4: image key listed by header record 0 '
                                            r'\(images are keys 1..6\) is missing'):
        recordio_reader.IndexedRecordReader(rec, idx)


def test_error_survives_pickling():
    import pickle
    error = RecordIOError('a.rec', 'wrong magic', 3, 12)
    copy = pickle.loads(pickle.dumps(error))
    assert (str(copy), copy.key, copy.offset) == (str(error), 3, 12)
