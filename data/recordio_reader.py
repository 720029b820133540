"""Reading MXNet RecordIO files: records streamed from a .rec, or looked up by its .idx.

Hand-written (data/recordio.py has the format) because MXNet is retired.
Records are read one at a time with seek/read, so memory stays flat however
big the file is; only the index is held, as two int64 arrays (16 bytes per
record).

Typical use:
    with IndexedRecordReader('train.rec', 'train.idx') as reader:
        for record in reader.iter_images():          # or iter_images(begin, end)
            header, jpeg = unpack(record.data, reader.rec_path, record.key, record.offset)
    for record in iter_records('plain.rec'):         # no .idx needed; streams
        ...
"""
import array
import collections
import os

import numpy as np

from data.recordio import MAGIC, MAGIC_BYTES, MAX_PART_LENGTH, PART_HEAD, RecordIOError, unpack

_READ_BUFFER = 1 << 20  # large reads: records are a few KB and mostly sequential
_ITER_CHUNK = 4096  # keys looked up at a time when iterating

Record = collections.namedtuple('Record', ['key', 'offset', 'data'])
Record.__doc__ = """One record read from a .rec file.

key: int from the .idx, or None when streaming a file without index.
offset: byte offset of the record's first part in the .rec file.
data: bytes, the whole record (split parts rejoined), IRHeader included.
"""


def _read_record(fileobj, path, offset, file_size, key=None):
    """Reads the record starting at `offset`; returns (data, next offset)."""
    if fileobj.tell() != offset:  # sequential reads skip the seek
        fileobj.seek(offset)
    parts = []
    position = offset
    while True:
        head = fileobj.read(8)
        if len(head) < 8:
            raise RecordIOError(path, 'truncated record: %d bytes left where an '
                                '8-byte part header was expected' % len(head),
                                key, position)
        magic, lrecord = PART_HEAD.unpack(head)
        if magic != MAGIC:
            raise RecordIOError(path, 'wrong magic 0x%08x (expected 0x%08x)'
                                % (magic, MAGIC), key, position)
        cflag, length = lrecord >> 29, lrecord & MAX_PART_LENGTH
        expected = (0, 1) if not parts else (2, 3)
        if cflag > 3:
            raise RecordIOError(path, 'invalid continuation flag %d (expected 0 to 3)'
                                % cflag, key, position)
        if cflag not in expected:
            raise RecordIOError(path, 'continuation flag %d out of order (expected '
                                '%s %s)' % (cflag, ' or '.join(map(str, expected)),
                                            'after a part with flag 1 or 2' if parts
                                            else 'at the start of a record'),
                                key, position)
        padded = (length + 3) & ~3
        if position + 8 + padded > file_size:
            raise RecordIOError(path, 'truncated record: length %d runs past the end '
                                'of the file (%d bytes)' % (length, file_size),
                                key, position)
        chunk = fileobj.read(padded)
        if len(chunk) != padded:  # the file shrank while we read it
            raise RecordIOError(path, 'truncated record: read %d of %d bytes'
                                % (len(chunk), padded), key, position)
        parts.append(chunk if padded == length else chunk[:length])
        position += 8 + padded
        if cflag in (0, 3):
            return MAGIC_BYTES.join(parts), position


def _open_existing(path, mode, **kwargs):
    try:
        return open(path, mode, **kwargs)
    except (IOError, OSError) as error:
        raise RecordIOError(path, 'cannot open: %s' % (error.strerror or error,))


def iter_records(rec_path):
    """Streams the records of a .rec file in file order, without an index.

    Args:
      rec_path: path of the .rec file.
    Yields:
      Record(key=None, offset, data).
    Raises:
      RecordIOError: missing file, wrong magic, truncated record, bad flags.
    """
    with _open_existing(rec_path, 'rb', buffering=_READ_BUFFER) as fileobj:
        file_size = os.fstat(fileobj.fileno()).st_size
        offset = 0
        while offset < file_size:
            data, next_offset = _read_record(fileobj, rec_path, offset, file_size)
            yield Record(None, offset, data)
            offset = next_offset


def _read_idx(idx_path):
    """Parses a .idx file into int64 arrays (keys, offsets) in file order."""
    # array('q') holds 8 bytes per value, where a list of ints would take ~36.
    keys, offsets = array.array('q'), array.array('q')
    with _open_existing(idx_path, 'r') as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            fields = line.split()
            try:
                key, offset = int(fields[0]), int(fields[1])
                well_formed = len(fields) == 2 and key >= 0 and offset >= 0
            except (IndexError, ValueError, OverflowError):
                well_formed = False
            if not well_formed:
                raise RecordIOError(idx_path, 'line %d: malformed idx line %r '
                                    '(expected "key<TAB>offset", two non-negative '
                                    'integers)' % (number, line.rstrip('\r\n')))
            if offset % 4:
                raise RecordIOError(idx_path, 'line %d: offset is not a multiple of 4 '
                                    '(records are 4-byte aligned)' % number,
                                    key, offset)
            try:
                keys.append(key)
                offsets.append(offset)
            except OverflowError:
                raise RecordIOError(idx_path, 'line %d: key or offset does not fit in '
                                    '64 bits' % number)
    return (np.frombuffer(keys, dtype=np.int64) if keys else np.zeros(0, np.int64),
            np.frombuffer(offsets, dtype=np.int64) if offsets else np.zeros(0, np.int64))


class IndexedRecordReader(object):
    """Random and ranged access to an indexed .rec file (insightface layout aware).

    Attributes:
      rec_path, idx_path: the files.
      keys: int64 array of every key in the .idx, ascending.
      image_keys: int64 array of the image keys, ascending (header and identity
        records excluded in the insightface layout).
      identity_keys: range of the identity-record keys (empty if none).
    """

    def __init__(self, rec_path, idx_path):
        """Opens and validates the index; reads record 0 to learn the layout.

        Raises:
          RecordIOError: missing file, malformed idx line, duplicate key, idx
            offset past the end of the .rec, bad record 0.
        """
        self.rec_path = rec_path
        self.idx_path = idx_path
        keys, offsets = _read_idx(idx_path)
        order = np.argsort(keys, kind='mergesort')
        self.keys = keys[order]
        self._offsets = offsets[order]
        duplicates = np.flatnonzero(np.diff(self.keys) == 0)
        if duplicates.size:
            key = int(self.keys[duplicates[0]])
            raise RecordIOError(idx_path, 'key appears more than once', key)
        self._file = _open_existing(rec_path, 'rb', buffering=_READ_BUFFER)
        self._file_size = os.fstat(self._file.fileno()).st_size
        past_end = np.flatnonzero(self._offsets + 8 > self._file_size)
        if past_end.size:
            self.close()
            first = past_end[np.argmin(self._offsets[past_end])]
            raise RecordIOError(idx_path, 'idx offset is past the end of %s (%d bytes)'
                                % (rec_path, self._file_size),
                                int(self.keys[first]), int(self._offsets[first]))
        try:
            self.image_keys, self.identity_keys = self._layout()
        except RecordIOError:
            self.close()
            raise

    def _layout(self):
        if not self._has_key(0):
            return self.keys, range(0)
        header, _ = unpack(self.read(0), self.rec_path, 0, self.offset_of(0))
        if header.flag == 0:  # record 0 is an image: a plain dataset
            return self.keys, range(0)
        if header.flag < 2:
            raise RecordIOError(self.rec_path, 'header record has %d label(s), expected '
                                '2: [first identity key, end key]' % header.flag,
                                0, self.offset_of(0))
        start, end = int(header.label[0]), int(header.label[1])
        if not 1 <= start <= end:
            raise RecordIOError(self.rec_path, 'header record labels [%d, %d]: expected '
                                '1 <= first identity key <= end key' % (start, end),
                                0, self.offset_of(0))
        image_keys = np.arange(1, start, dtype=np.int64)
        missing = image_keys[~np.isin(image_keys, self.keys)]
        if missing.size:
            raise RecordIOError(self.idx_path, 'image key listed by header record 0 '
                                '(images are keys 1..%d) is missing' % (start - 1),
                                int(missing[0]))
        return image_keys, range(start, end)

    @property
    def num_images(self):
        """Number of image records."""
        return int(self.image_keys.size)

    def _has_key(self, key):
        position = np.searchsorted(self.keys, key)
        return position < self.keys.size and self.keys[position] == key

    def offset_of(self, key):
        """Byte offset of `key` in the .rec file; KeyError if not in the .idx."""
        if not self._has_key(key):
            raise KeyError('key %r is not in %s' % (key, self.idx_path))
        return int(self._offsets[np.searchsorted(self.keys, key)])

    def read(self, key):
        """Returns the bytes of record `key` (split parts rejoined).

        Raises:
          KeyError: if the key is not in the .idx.
          RecordIOError: wrong magic, truncated record, bad continuation flags.
        """
        offset = self.offset_of(key)
        return _read_record(self._file, self.rec_path, offset, self._file_size, key)[0]

    def iter_images(self, begin=0, end=None):
        """Yields the image records at positions [begin, end) of `image_keys`.

        Parallel workers each take a contiguous position range.

        Yields:
          Record(key, offset, data).
        """
        keys = self.image_keys[begin:end]
        # Chunks keep the Python ints made by tolist() few, for any range size.
        for start in range(0, keys.size, _ITER_CHUNK):
            chunk = keys[start:start + _ITER_CHUNK]
            offsets = self._offsets[np.searchsorted(self.keys, chunk)]
            for key, offset in zip(chunk.tolist(), offsets.tolist()):
                data = _read_record(self._file, self.rec_path, offset, self._file_size,
                                    key)[0]
                yield Record(key, offset, data)

    def close(self):
        """Closes the .rec file."""
        self._file.close()

    def __enter__(self):
        return self

    def __exit__(self, *unused_exc_info):
        self.close()

