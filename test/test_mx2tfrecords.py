"""Tests for data/mx2tfrecords.py (and data/manifest.py) on MXNet-written .rec files."""
import collections
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from data import manifest as manifest_lib
from data import mx2tfrecords
from data import progress
from data import recordio, recordio_reader, recordio_writer
from data import shard_records
from data import safe_files, shard_writer
from data.recordio import IRHeader

PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join('data', 'mx2tfrecords.py')


def _rec_images(rec, idx):
    """[(payload, label)] of the image records, in key order."""
    with recordio_reader.IndexedRecordReader(rec, idx) as reader:
        out = []
        for record in reader.iter_images():
            header, payload = recordio.unpack(record.data)
            out.append((payload, int(header.label)))
        return out


def _tfrecord_examples(manifest):
    """[(image_raw, label)] of every shard, in shard order."""
    out = []
    for path in manifest['shard_paths']:
        for serialized in tf.io.tf_record_iterator(path):
            feature = tf.train.Example.FromString(serialized).features.feature
            assert sorted(feature.keys()) == ['image_raw', 'label']
            out.append((feature['image_raw'].bytes_list.value[0],
                        feature['label'].int64_list.value[0]))
    return out


def _folder_files(folder):
    return sorted(os.listdir(folder)) if os.path.isdir(folder) else []


@pytest.fixture(scope='module')
def rec(tiny_data):
    """The synthetic dataset's .rec (8 identities x 6 images of 32x32, with a property
    file), written by this project's RecordIO writer; MXNet's own bytes are tested on
    ../shared/data/mxnet_fixture below."""
    return (os.path.join(tiny_data['raw'], 'train.rec'),
            os.path.join(tiny_data['raw'], 'train.idx'))


@pytest.fixture(scope='module')
def converted(rec, tmp_path_factory):
    out = str(tmp_path_factory.mktemp('converted') / 'tfrecords')
    mx2tfrecords.convert(rec[0], rec[1], out, num_workers=1, progress=False)
    return out


def test_conversion(rec, converted):
    manifest = manifest_lib.load_manifest(converted)
    examples = _tfrecord_examples(manifest)
    assert len(examples) == 48
    assert collections.Counter(label for _, label in examples) == {i: 6 for i in range(8)}
    assert examples == _rec_images(*rec)  # payloads byte-identical, key order
    assert manifest['num_images'] == 48
    assert manifest['num_classes'] == 8
    assert manifest['image_size'] == [32, 32]
    assert manifest['shards'] == [{
        'file': 'train-00000-of-00001.tfrecord', 'num_images': 48,
        'size_bytes': os.path.getsize(manifest['shard_paths'][0])}]
    assert manifest['source'] == {
        'rec_path': rec[0], 'idx_path': rec[1],
        'property_path': os.path.join(os.path.dirname(rec[0]), 'property')}
    assert _folder_files(converted) == ['manifest.json', 'train-00000-of-00001.tfrecord']
    assert not os.path.exists(mx2tfrecords.partial_dir_for(converted))


def test_two_workers_give_the_same_examples(rec, converted, tmp_path):
    out = str(tmp_path / 'two')
    manifest = mx2tfrecords.convert(rec[0], rec[1], out, num_shards=4, num_workers=2,
                                    progress=False)
    assert [s['num_images'] for s in manifest['shards']] == [12, 12, 12, 12]
    assert (_tfrecord_examples(manifest_lib.load_manifest(out))
            == _tfrecord_examples(manifest_lib.load_manifest(converted)))


def test_cli_subprocess(shared_data, tmp_path):
    folder = os.path.join(shared_data, 'mxnet_fixture')
    out = str(tmp_path / 'out')
    argv = [sys.executable, SCRIPT, '--bin_path', os.path.join(folder, 'train.rec'),
            '--idx_path', os.path.join(folder, 'train.idx'), '--tfrecords_file_path', out,
            '--num_workers', '1']
    run = subprocess.run(argv, cwd=PROJECT_ROOT, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, universal_newlines=True)
    assert run.returncode == 0, run.stderr
    assert 'mx2tfrecords: 6/6 images (100.0%)' in run.stderr  # progress, not a TTY
    assert 'mx2tfrecords: wrote 6 images of 3 classes in 1 shards' in run.stderr
    manifest = manifest_lib.load_manifest(out)
    assert (manifest['num_images'], manifest['num_classes']) == (6, 3)
    assert [label for _, label in _tfrecord_examples(manifest)] == [0, 0, 1, 1, 2, 2]
    # A second run refuses to replace the complete conversion.
    again = subprocess.run(argv, cwd=PROJECT_ROOT, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, universal_newlines=True)
    assert again.returncode == 2
    assert again.stderr == ('mx2tfrecords: error: %s already holds a complete conversion '
                            '(manifest.json); pass --overwrite to replace it\n' % out)
    assert manifest_lib.load_manifest(out)['num_images'] == 6


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_bar_on_a_terminal():
    stream = _Terminal()
    with progress.ProgressBar(1000, 'mx2tfrecords', stream=stream) as bar:
        bar.update(10)
        bar.update(990)
    shown = stream.getvalue()
    assert shown.startswith('\rmx2tfrecords:')  # tqdm redraws one line in place
    assert '1000/1000' in shown.split('\r')[-1]
    assert shown.count('\n') == 1 and shown.endswith('\n')  # the last state is kept


def test_progress_bar_off_a_terminal_prints_plain_lines(monkeypatch):
    monkeypatch.setattr(progress, 'PLAIN_INTERVAL', 0.0)  # a line on every update
    stream = io.StringIO()
    with progress.ProgressBar(6, 'mx2tfrecords', stream=stream) as bar:
        for _ in range(3):
            bar.update(2)
    lines = stream.getvalue().splitlines()
    assert '\r' not in stream.getvalue()
    assert [line.split(', ')[0] for line in lines] == [
        'mx2tfrecords: %d/6 images (%.1f%%)' % (done, 100.0 * done / 6) for done in (0, 2, 4, 6)]
    assert lines[-1].endswith(' images/s, ETA 00:00')


def test_progress_bar_off_a_terminal_ends_with_one_final_line():
    """A short run prints only the final count; a failed one nothing (its error is the
    last line); a disabled bar nothing at all."""
    stream = io.StringIO()
    with progress.ProgressBar(6, 'folder2tfrecords', stream=stream) as bar:
        bar.update(6)
    assert stream.getvalue().startswith('folder2tfrecords: 6/6 images (100.0%), ')
    assert stream.getvalue().count('\n') == 1
    shown = {}
    for name, stream, enabled in [('plain', io.StringIO(), True),
                                  ('terminal', _Terminal(), True),
                                  ('disabled', _Terminal(), False)]:
        with pytest.raises(ValueError), progress.ProgressBar(6, 'x', enabled=enabled,
                                                             stream=stream) as bar:
            bar.update(3)
            raise ValueError('bad image')
        shown[name] = stream.getvalue()
    assert shown['plain'] == shown['disabled'] == ''
    # The terminal's bar is blanked out and the cursor left at the start of its line.
    assert shown['terminal'].endswith('\r') and '\n' not in shown['terminal']
    assert not shown['terminal'].split('\r')[-2].strip()


def test_overwrite_replaces_old_shards(shared_data, tmp_path, capsys):
    folder = os.path.join(shared_data, 'mxnet_fixture')
    out = str(tmp_path / 'out')
    flags = ['--bin_path', os.path.join(folder, 'train.rec'), '--idx_path',
             os.path.join(folder, 'train.idx'), '--tfrecords_file_path', out,
             '--num_workers', '1', '--no_progress']
    assert mx2tfrecords.main(flags + ['--num_shards', '2']) == 0
    assert mx2tfrecords.main(flags + ['--num_shards', '3']) == 2
    assert mx2tfrecords.main(flags + ['--num_shards', '3', '--overwrite']) == 0
    assert _folder_files(out) == ['manifest.json'] + [
        manifest_lib.shard_file_name(i, 3) for i in range(3)]
    assert len(_tfrecord_examples(manifest_lib.load_manifest(out))) == 6
    assert 'images (' not in capsys.readouterr().err  # --no_progress: no progress lines


def _snapshot(folder):
    """{name: bytes} of a folder's files: what must survive a refused run unchanged."""
    out = {}
    for name in _folder_files(folder):
        path = os.path.join(folder, name)
        with open(path, 'rb') if os.path.isfile(path) else io.BytesIO(b'<folder>') as f:
            out[name] = f.read()
    return out


def test_overwrite_removes_only_what_a_conversion_wrote(rec, tmp_path, capsys):
    out = str(tmp_path / 'out')
    flags = ['--num_workers', '1', '--num_shards', '2']
    assert _convert_cli(rec[0], rec[1], out, *flags) == 0
    with open(os.path.join(out, 'notes.txt'), 'w') as f:
        f.write('mine')
    before = _snapshot(out)
    capsys.readouterr()
    for more in ([], ['--overwrite']):
        assert _convert_cli(rec[0], rec[1], out, *flags + more) == 2
        assert capsys.readouterr().err.splitlines() == [
            'mx2tfrecords: error: --tfrecords_file_path %s holds notes.txt, which no conversion '
            'wrote (its manifest.json lists what one wrote); give a new or empty folder' % out]
        assert _snapshot(out) == before
    os.remove(os.path.join(out, 'notes.txt'))
    assert _convert_cli(rec[0], rec[1], out, '--num_workers', '1', '--num_shards', '3',
                        '--overwrite') == 0
    assert _folder_files(out) == ['manifest.json'] + [
        manifest_lib.shard_file_name(i, 3) for i in range(3)]


def test_a_folder_of_other_files_is_refused(rec, tmp_path, capsys):
    """Shard-like names included: only a manifest says which files a conversion wrote."""
    out = str(tmp_path / 'mine')
    os.makedirs(os.path.join(out, 'photos'))
    with open(os.path.join(out, manifest_lib.shard_file_name(0, 3)), 'w') as f:
        f.write('not a shard of ours')
    before = _snapshot(out)
    assert _convert_cli(rec[0], rec[1], out, '--num_workers', '1', '--overwrite') == 2
    assert capsys.readouterr().err.splitlines() == [
        'mx2tfrecords: error: --tfrecords_file_path %s holds photos, %s, which no conversion '
        'wrote (its manifest.json lists what one wrote); give a new or empty folder'
        % (out, manifest_lib.shard_file_name(0, 3))]
    assert _snapshot(out) == before
    assert _folder_files(str(tmp_path)) == ['mine']


def test_interrupted_replacement_is_finished_by_the_next_run(rec, tmp_path, monkeypatch):
    out = str(tmp_path / 'out')
    assert _convert_cli(rec[0], rec[1], out, '--num_workers', '1', '--num_shards', '2') == 0
    real_replace, calls = os.replace, []

    def dies_after_one_move(source, target):  # 1: the pending list, 2: the first new shard
        calls.append(target)
        if len(calls) == 3:
            raise KeyboardInterrupt()
        real_replace(source, target)

    monkeypatch.setattr(os, 'replace', dies_after_one_move)
    assert _convert_cli(rec[0], rec[1], out, '--num_workers', '1', '--num_shards', '3',
                        '--overwrite') == 130
    monkeypatch.setattr(os, 'replace', real_replace)
    assert _folder_files(out) == [safe_files.PENDING_NAME,  # caught half-way
                                  manifest_lib.shard_file_name(0, 3)]
    assert _convert_cli(rec[0], rec[1], out, '--num_workers', '1', '--num_shards', '3') == 0
    assert _folder_files(out) == ['manifest.json'] + [
        manifest_lib.shard_file_name(i, 3) for i in range(3)]
    assert len(_tfrecord_examples(manifest_lib.load_manifest(out))) == 48


# --- malformed inputs ------------------------------------------------------

def _copy_fixture(shared_data, tmp_path):
    folder = os.path.join(shared_data, 'mxnet_fixture')
    rec, idx = str(tmp_path / 'in' / 'train.rec'), str(tmp_path / 'in' / 'train.idx')
    os.makedirs(str(tmp_path / 'in'))
    shutil.copy(os.path.join(folder, 'train.rec'), rec)
    shutil.copy(os.path.join(folder, 'train.idx'), idx)
    return rec, idx


def _rewrite(shared_data, rec, idx, replace):
    """Re-writes the MXNet fixture with our writer, payloads changed by `replace`."""
    folder = os.path.join(shared_data, 'mxnet_fixture')
    with recordio_reader.IndexedRecordReader(os.path.join(folder, 'train.rec'),
                                             os.path.join(folder, 'train.idx')) as reader, \
            recordio_writer.IndexedRecordWriter(rec, idx) as writer:
        for key in reader.keys.tolist():
            header, payload = recordio.unpack(reader.read(key))
            writer.write(key, recordio.pack(header, replace.get(key, payload)))


def _make_missing(shared_data, rec, idx):
    os.remove(rec)
    return [rec, 'cannot open']


def _make_wrong_magic(shared_data, rec, idx):
    with open(rec, 'r+b') as f:
        f.seek(2228)  # key 3
        f.write(b'JUNK')
    return [rec, 'key 3', 'byte offset 2228', 'wrong magic 0x4b4e554a']


def _make_truncated(shared_data, rec, idx):
    with open(rec, 'r+b') as f:
        f.truncate(6760 + 20)  # inside record 0, the last
    return [rec, 'key 0', 'byte offset 6760', 'truncated record']


def _make_idx_past_end(shared_data, rec, idx):
    with open(idx, 'a') as f:
        f.write('11\t999996\n')
    return [idx, 'key 11', 'byte offset 999996', 'past the end']


def _make_not_jpeg(shared_data, rec, idx):
    _rewrite(shared_data, rec, idx, {5: b'GIF89a' + b'\0' * 100})
    with open(idx) as f:
        offset = dict(line.split() for line in f)['5']
    return [rec, 'key 5', 'byte offset %s' % offset, 'not a JPEG or PNG', "b'GIF89a"]


def _make_no_images(shared_data, rec, idx):
    with recordio_writer.IndexedRecordWriter(rec, idx) as writer:
        writer.write(0, recordio.pack_insightface_header(1, 1))
    return [rec, 'no image records']


@pytest.mark.parametrize('make', [_make_missing, _make_wrong_magic, _make_truncated,
                                  _make_idx_past_end, _make_not_jpeg, _make_no_images])
def test_bad_input_fails_cleanly(shared_data, tmp_path, capsys, make):
    rec, idx = _copy_fixture(shared_data, tmp_path)
    fragments = make(shared_data, rec, idx)
    out = str(tmp_path / 'out')
    status = mx2tfrecords.main(['--bin_path', rec, '--idx_path', idx, '--tfrecords_file_path',
                                out, '--num_workers', '1'])
    lines = capsys.readouterr().err.splitlines()
    assert status == 2
    assert len(lines) == 1 and lines[0].startswith('mx2tfrecords: error: '), lines
    for fragment in fragments:
        assert fragment in lines[0]
    assert not os.path.exists(out)
    assert _folder_files(str(tmp_path)) == ['in']  # no .partial folder left


def test_failing_worker_leaves_nothing(shared_data, tmp_path, capsys):
    rec, idx = _copy_fixture(shared_data, tmp_path)
    fragments = _make_not_jpeg(shared_data, rec, idx)  # key 5 is in the second shard
    out = str(tmp_path / 'out')
    os.makedirs(out)
    status = mx2tfrecords.main(['--bin_path', rec, '--idx_path', idx, '--tfrecords_file_path',
                                out, '--num_workers', '2', '--num_shards', '2'])
    lines = [l for l in capsys.readouterr().err.splitlines() if 'error' in l]
    assert status == 2
    assert len(lines) == 1 and all(f in lines[0] for f in fragments), lines
    assert _folder_files(out) == []
    assert _folder_files(str(tmp_path)) == ['in', 'out']


def test_ctrl_c_leaves_nothing(shared_data, tmp_path, capsys, monkeypatch):
    rec, idx = _copy_fixture(shared_data, tmp_path)
    calls = []

    def interrupted(payload, label):
        calls.append(label)
        if len(calls) == 3:
            raise KeyboardInterrupt()
        return b''

    monkeypatch.setattr(shard_records, 'encode_example', interrupted)
    out = str(tmp_path / 'out')
    status = mx2tfrecords.main(['--bin_path', rec, '--idx_path', idx, '--tfrecords_file_path',
                                out, '--num_workers', '1', '--no_progress'])
    assert status == 130
    assert 'interrupted' in capsys.readouterr().err
    assert _folder_files(str(tmp_path)) == ['in']


def test_killed_conversion_then_rerun(shared_data, tmp_path):
    folder = os.path.join(shared_data, 'mxnet_fixture')
    payloads = [p for p, _ in _rec_images(os.path.join(folder, 'train.rec'),
                                          os.path.join(folder, 'train.idx'))]
    num_images = 30000  # ~35 MB: the conversion runs long enough to be caught mid-way
    rec, idx = str(tmp_path / 'big.rec'), str(tmp_path / 'big.idx')  # no property file
    with recordio_writer.IndexedRecordWriter(rec, idx) as writer:
        writer.write(0, recordio.pack_insightface_header(num_images + 1, num_images + 1))
        for key in range(1, num_images + 1):
            writer.write(key, recordio.pack(IRHeader(0, key % 7, key, 0),
                                            payloads[key % len(payloads)]))
    out = str(tmp_path / 'out')
    partial = mx2tfrecords.partial_dir_for(out)
    process = subprocess.Popen(
        [sys.executable, SCRIPT, '--bin_path', rec, '--idx_path', idx,
         '--tfrecords_file_path', out, '--num_workers', '1', '--num_shards', '4'],
        cwd=PROJECT_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 60
        while not any(name.endswith('.tfrecord') for name in _folder_files(partial)):
            assert process.poll() is None and time.time() < deadline
            time.sleep(0.002)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert process.returncode == -signal.SIGKILL
    assert _folder_files(partial)  # it was caught mid-way
    assert not os.path.exists(os.path.join(out, manifest_lib.MANIFEST_NAME))
    with pytest.raises(manifest_lib.ManifestError, match='mx2tfrecords.py --bin_path'):
        manifest_lib.load_manifest(out)
    manifest = mx2tfrecords.convert(rec, idx, out, num_shards=2, progress=False)
    assert not os.path.exists(partial)
    assert _folder_files(out) == ['manifest.json', 'train-00000-of-00002.tfrecord',
                                  'train-00001-of-00002.tfrecord']
    assert manifest['num_images'] == num_images
    assert manifest['num_classes'] == 7  # max label + 1 without a property file
    assert manifest['image_size'] == [112, 112]  # read from the first JPEG's header
    assert manifest['source']['property_path'] is None


def test_png_payloads_and_size_without_property(tmp_path):
    with tf.Graph().as_default():
        png = tf.image.encode_png(tf.zeros([48, 40, 3], tf.uint8))
        with tf.Session() as session:
            png = session.run(png)
    rec, idx = str(tmp_path / 'p.rec'), str(tmp_path / 'p.idx')
    with recordio_writer.IndexedRecordWriter(rec, idx) as writer:  # plain dataset: no key 0
        for key in (1, 2, 3):
            writer.write(key, recordio.pack(IRHeader(0, [key, 9.0], key, 0), png))
    manifest = mx2tfrecords.convert(rec, idx, str(tmp_path / 'out'), progress=False)
    assert (manifest['image_size'], manifest['num_classes']) == ([48, 40], 4)
    assert _tfrecord_examples(manifest_lib.load_manifest(str(tmp_path / 'out'))) == [
        (png, 1), (png, 2), (png, 3)]  # the first label of each label array


# --- images that do not decode, or are not the size the property file says ---

def _zero_body(jpeg):
    """The JPEG with everything after its start-of-scan header zeroed: the header (and
    its size) still reads, the image does not decode."""
    sos = jpeg.index(b'\xff\xda')
    body = sos + 2 + int.from_bytes(jpeg[sos + 2:sos + 4], 'big')
    return jpeg[:body] + b'\0' * (len(jpeg) - body)


def _jpeg(size):
    with tf.Graph().as_default(), tf.Session() as session:
        return session.run(tf.image.encode_jpeg(tf.fill(list(size) + [3], tf.constant(
            90, tf.uint8))))


def _tiny_copy(rec, folder, replace=None, prop=None):
    """The tiny .rec rewritten into `folder` with payloads replaced ({key: bytes}) and a
    property file (its own unless `prop` is given); returns (rec, idx, {key: offset})."""
    os.makedirs(folder)
    out_rec, out_idx = os.path.join(folder, 'train.rec'), os.path.join(folder, 'train.idx')
    with recordio_reader.IndexedRecordReader(*rec) as reader, \
            recordio_writer.IndexedRecordWriter(out_rec, out_idx) as writer:
        for key in reader.keys.tolist():
            header, payload = recordio.unpack(reader.read(key))
            writer.write(key, recordio.pack(header, (replace or {}).get(key, payload)))
    with open(os.path.join(os.path.dirname(rec[0]), 'property')) as f:
        own = f.read()
    with open(os.path.join(folder, 'property'), 'w') as f:
        f.write(own if prop is None else prop)
    with open(out_idx) as f:
        offsets = {int(k): int(v) for k, v in (line.split() for line in f)}
    return out_rec, out_idx, offsets


def _convert_cli(rec, idx, out, *flags):
    return mx2tfrecords.main(['--bin_path', rec, '--idx_path', idx, '--tfrecords_file_path',
                              out, '--no_progress'] + list(flags))


def test_image_that_does_not_decode_is_refused(rec, tmp_path, capsys):
    good = _rec_images(*rec)[6][0]  # key 7
    in_rec, in_idx, offsets = _tiny_copy(rec, str(tmp_path / 'in'), {7: _zero_body(good)})
    out = str(tmp_path / 'out')
    assert _convert_cli(in_rec, in_idx, out, '--num_workers', '1') == 2
    lines = capsys.readouterr().err.splitlines()
    assert lines == ['mx2tfrecords: error: %s, key 7, byte offset %d: image does not decode '
                     '(JPEG/PNG, as training decodes it); pass --skip_bad to leave such '
                     'images out' % (in_rec, offsets[7])]
    assert _folder_files(str(tmp_path)) == ['in']  # no output, no .partial folder


def test_image_size_other_than_the_property_is_refused(rec, tmp_path, capsys):
    in_rec, in_idx, offsets = _tiny_copy(rec, str(tmp_path / 'in'), prop='8,112,112\n')
    out = str(tmp_path / 'out')
    assert _convert_cli(in_rec, in_idx, out, '--num_workers', '1') == 2
    lines = capsys.readouterr().err.splitlines()
    assert lines == ['mx2tfrecords: error: %s, key 1, byte offset %d: image is 32x32 '
                     '(height x width), %s says 112x112; pass --skip_bad to leave such '
                     'images out' % (in_rec, offsets[1], os.path.join(str(tmp_path / 'in'),
                                                                      'property'))]
    assert _folder_files(str(tmp_path)) == ['in']


def test_skip_bad_leaves_them_out_and_reports_them(rec, tmp_path, capsys):
    images = _rec_images(*rec)  # key k is images[k - 1]
    bad = {7: _zero_body(images[6][0]), 30: _jpeg((16, 16))}
    in_rec, in_idx, offsets = _tiny_copy(rec, str(tmp_path / 'in'), bad)
    out = str(tmp_path / 'out')
    # Two workers: key 7 is in the first shard, key 30 in the second.
    assert _convert_cli(in_rec, in_idx, out, '--skip_bad', '--num_workers', '2',
                        '--num_shards', '2') == 0
    problems = {7: 'image does not decode (JPEG/PNG, as training decodes it)',
                30: 'image is 16x16 (height x width), %s says 32x32'
                    % os.path.join(str(tmp_path / 'in'), 'property')}
    err = capsys.readouterr().err
    for key, problem in problems.items():
        assert 'mx2tfrecords: skipped %s, key %d, byte offset %d: %s\n' % (
            in_rec, key, offsets[key], problem) in err, err
    assert 'mx2tfrecords: skipped 2 bad images' in err
    manifest = manifest_lib.load_manifest(out)
    assert manifest['skipped'] == [{'key': key, 'byte_offset': offsets[key], 'problem': problem}
                                   for key, problem in sorted(problems.items())]
    assert manifest['num_images'] == 46
    kept = [image for key, image in enumerate(images, 1) if key not in bad]
    assert _tfrecord_examples(manifest) == kept


# --- manifest reading ------------------------------------------------------

def test_load_manifest_errors(converted, tmp_path):
    how_to = 'make one with: python3 data/mx2tfrecords.py --bin_path .../train.rec'
    folder = str(tmp_path / 'ds')
    with pytest.raises(manifest_lib.ManifestError, match='does not exist; ' + how_to):
        manifest_lib.load_manifest(folder)
    os.makedirs(folder)
    with pytest.raises(manifest_lib.ManifestError, match='is empty; ' + how_to):
        manifest_lib.load_manifest(folder)
    shutil.copy(os.path.join(converted, 'train-00000-of-00001.tfrecord'), folder)
    with pytest.raises(manifest_lib.ManifestError, match='has no manifest.json'):
        manifest_lib.load_manifest(folder)
    original = str(tmp_path / 'original')  # the original InsightFace_TF's layout
    os.makedirs(original)
    shutil.copy(os.path.join(converted, 'train-00000-of-00001.tfrecord'),
                os.path.join(original, 'tran.tfrecords'))
    with pytest.raises(manifest_lib.ManifestError, match=r"holds tran\.tfrecords, the original "
                                                         r"InsightFace_TF's single file.*" + how_to):
        manifest_lib.load_manifest(original)
    with open(os.path.join(folder, 'manifest.json'), 'w') as f:
        f.write('{"format": ')
    with pytest.raises(manifest_lib.ManifestError, match='not valid JSON'):
        manifest_lib.load_manifest(folder)
    with open(os.path.join(converted, 'manifest.json')) as f:
        good = json.load(f)
    for change, problem in [({'num_images': 47}, 'add up to 48, num_images is 47'),
                            ({'version': 9}, 'version 9'),
                            ({'shards': []}, 'non-empty list')]:
        manifest_lib.write_manifest(folder, dict(good, **change))
        with pytest.raises(manifest_lib.ManifestError, match=problem):
            manifest_lib.load_manifest(folder)
    manifest_lib.write_manifest(folder, good)
    assert manifest_lib.load_manifest(folder)['num_images'] == 48
    shard = os.path.join(folder, 'train-00000-of-00001.tfrecord')
    with open(shard, 'ab') as f:
        f.write(b'x')
    with pytest.raises(manifest_lib.ManifestError, match='has %d bytes' % os.path.getsize(shard)):
        manifest_lib.load_manifest(folder)


def test_shard_names():
    assert manifest_lib.shard_file_name(3, 8) == 'train-00003-of-00008.tfrecord'
    assert manifest_lib.is_shard_file_name('train-00003-of-00008.tfrecord')
    assert not manifest_lib.is_shard_file_name('train-3-of-8.tfrecord')
    assert np.all([manifest_lib.is_shard_file_name(manifest_lib.shard_file_name(i, 12))
                   for i in range(12)])
