"""MXNet RecordIO files (insightface's train.rec/train.idx), read and written in pure Python.

MXNet is not needed: this module reproduces the byte format of dmlc-core's
`RecordIOWriter`/`RecordIOReader` and of `mxnet.recordio.pack`/`unpack`.

Format. A file is a sequence of parts, each 4-byte aligned:
    uint32 magic 0xCED7230A | uint32 lrecord | data | zero padding to 4 bytes
(little-endian). `lrecord` holds the continuation flag in its top 3 bits and the
data length in the low 29. A record whose payload holds the magic word at a
4-byte-aligned offset is split there by the writer (the magic word itself is
dropped): flags 1 (first), 2 (middle), 3 (last); 0 is an unsplit record. The
reader re-inserts the magic word between the parts. A `.idx` file has one text
line `key<TAB>byte offset` per record.

Image records start with an `IRHeader` (`struct` '<IfQQ': flag uint32, label
float32, id uint64, id2 uint64; 24 bytes). When flag > 0, `flag` float32 labels
follow the header (whose own label field is then 0) and the payload comes after.

insightface layout. Record 0 has flag 2 and labels [a, b]: images are keys
1..a-1 and keys a..b-1 are identity records (labels [first image key, end key]
of one identity, empty payload). If record 0 has flag 0 (or there is no key 0),
the file is a plain image dataset and every key is an image.

Writing an insightface-style dataset (what the synthetic-data tools do):
    with IndexedRecordWriter('train.rec', 'train.idx') as writer:
        for key, (label, jpeg) in enumerate(images, start=1):
            writer.write(key, pack(IRHeader(0, float(label), key, 0), jpeg))
        first_identity = len(images) + 1
        for i, (start, end) in enumerate(identity_ranges):
            writer.write(first_identity + i, pack(IRHeader(0, [start, end], 0, 0), b''))
        writer.write(0, pack_insightface_header(
            first_identity, first_identity + len(identity_ranges)))

Reading:
    with IndexedRecordReader('train.rec', 'train.idx') as reader:
        for record in reader.iter_images():          # or iter_images(begin, end)
            header, jpeg = unpack(record.data, reader.rec_path, record.key, record.offset)
    for record in iter_records('plain.rec'):         # no .idx needed; streams
        ...

Records are read one at a time with seek/read, so memory stays flat however big
the file is (faces_emore is ~5.8 M images); only the index is held, as two int64
arrays (16 bytes per record).

Every format problem raises `RecordIOError`, whose one-line message names the
file, the key and the byte offset when they are known.
"""
import array
import collections
import numbers
import os
import struct

import numpy as np

MAGIC = 0xCED7230A
MAGIC_BYTES = struct.pack('<I', MAGIC)
IR_FORMAT = '<IfQQ'
IR_SIZE = struct.calcsize(IR_FORMAT)  # 24
MAX_PART_LENGTH = (1 << 29) - 1  # the length field has 29 bits
_PART_HEAD = struct.Struct('<II')
_READ_BUFFER = 1 << 20  # large reads: records are a few KB and mostly sequential
_ITER_CHUNK = 4096  # keys looked up at a time when iterating

IRHeader = collections.namedtuple('IRHeader', ['flag', 'label', 'id', 'id2'])
IRHeader.__doc__ = """Image record header.

flag: 0, or the number of float32 labels stored after the header.
label: float when flag == 0, else float32 numpy array of `flag` values.
id, id2: uint64 ids (insightface sets id to the record's key).
"""

Record = collections.namedtuple('Record', ['key', 'offset', 'data'])
Record.__doc__ = """One record read from a .rec file.

key: int from the .idx, or None when streaming a file without index.
offset: byte offset of the record's first part in the .rec file.
data: bytes, the whole record (split parts rejoined), IRHeader included.
"""


class RecordIOError(ValueError):
    """A malformed or missing RecordIO/.idx file; the message is one line."""

    def __init__(self, path, problem, key=None, offset=None):
        self.path = path
        self.problem = problem
        self.key = key
        self.offset = offset
        where = [str(path)]
        if key is not None:
            where.append('key %s' % (key,))
        if offset is not None:
            where.append('byte offset %d' % offset)
        super(RecordIOError, self).__init__('%s: %s' % (', '.join(where), problem))

    def __reduce__(self):
        # Workers raise this error in other processes; rebuild it from its parts.
        return (type(self), (self.path, self.problem, self.key, self.offset))


def pack(header, payload):
    """Builds a record from an IRHeader and a payload, like `mxnet.recordio.pack`.

    Args:
      header: IRHeader or 4-tuple (flag, label, id, id2). A numeric label is
        stored in the header with flag 0 (the given flag is ignored); a sequence
        or array of floats is stored after the header and flag becomes its length.
      payload: bytes, e.g. a JPEG.
    Returns:
      bytes: 24-byte header, [4 * flag bytes of float32 labels], payload.
    Raises:
      ValueError: if the label is an empty sequence.
    """
    header = IRHeader(*header)
    if isinstance(header.label, numbers.Number):
        head = struct.pack(IR_FORMAT, 0, header.label, header.id, header.id2)
        return head + bytes(payload)
    labels = np.asarray(header.label, dtype='<f4').ravel()
    if labels.size == 0:
        raise ValueError('label %r: expected a number or a non-empty sequence of '
                         'numbers' % (header.label,))
    head = struct.pack(IR_FORMAT, labels.size, 0.0, header.id, header.id2)
    return head + labels.tobytes() + bytes(payload)


def unpack(data, path='<record>', key=None, offset=None):
    """Splits a record into its IRHeader and payload, like `mxnet.recordio.unpack`.

    Args:
      data: bytes of one record.
      path, key, offset: where the record came from, for error messages only.
    Returns:
      (IRHeader, payload bytes). With flag > 0, header.label is a float32 array.
    Raises:
      RecordIOError: if the record is shorter than its header and labels.
    """
    if len(data) < IR_SIZE:
        raise RecordIOError(path, 'record has %d bytes, fewer than the %d-byte '
                            'IRHeader' % (len(data), IR_SIZE), key, offset)
    header = IRHeader(*struct.unpack_from(IR_FORMAT, data))
    start = IR_SIZE
    if header.flag > 0:
        start += 4 * header.flag
        if len(data) < start:
            raise RecordIOError(path, 'IRHeader flag %d needs %d bytes of labels but '
                                'the record has %d bytes' %
                                (header.flag, 4 * header.flag, len(data)), key, offset)
        labels = np.frombuffer(data, dtype='<f4', count=header.flag, offset=IR_SIZE)
        header = header._replace(label=labels.astype(np.float32))
    return header, data[start:]


def pack_insightface_header(identity_start, identity_end):
    """Builds insightface's record 0 (write it under key 0).

    Args:
      identity_start: first identity-record key = number of images + 1
        (images are keys 1..identity_start-1).
      identity_end: one past the last identity-record key (equal to
        identity_start when there are no identity records).
    Returns:
      bytes of a record with flag 2, labels [identity_start, identity_end].
    Raises:
      ValueError: unless 1 <= identity_start <= identity_end.
    """
    if not 1 <= identity_start <= identity_end:
        raise ValueError('insightface header [%r, %r]: expected 1 <= identity_start '
                         '<= identity_end' % (identity_start, identity_end))
    return pack(IRHeader(0, [identity_start, identity_end], 0, 0), b'')


def write_record(fileobj, data):
    """Appends one record to an open binary file exactly as dmlc-core does.

    The payload is split wherever the magic word sits at a 4-byte-aligned
    offset; unaligned occurrences are left alone, since a reader resyncing on
    part boundaries only ever looks at aligned words.

    Args:
      fileobj: binary file opened for writing, positioned at a 4-byte boundary.
      data: bytes-like record, shorter than 2**29 bytes.
    Returns:
      Number of bytes written.
    """
    data = bytes(data)
    length = len(data)
    if length > MAX_PART_LENGTH:
        raise ValueError('record of %d bytes: RecordIO records must be shorter than '
                         '2**29 bytes' % length)
    lower_align = length & ~3
    words = np.frombuffer(data, dtype='<u4', count=lower_align // 4)
    chunks = []
    start = 0
    for position in (np.flatnonzero(words == MAGIC) * 4).tolist():
        chunks.append(_PART_HEAD.pack(MAGIC, _lrecord(1 if start == 0 else 2,
                                                      position - start)))
        chunks.append(data[start:position])
        start = position + 4
    chunks.append(_PART_HEAD.pack(MAGIC, _lrecord(3 if start else 0, length - start)))
    chunks.append(data[start:])
    chunks.append(b'\0' * (-length % 4))
    blob = b''.join(chunks)
    fileobj.write(blob)
    return len(blob)


def _lrecord(cflag, length):
    return (cflag << 29) | length


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
        magic, lrecord = _PART_HEAD.unpack(head)
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


class IndexedRecordWriter(object):
    """Writes a .rec file and its .idx, like `mxnet.recordio.MXIndexedRecordIO`.

    Usage:
        with IndexedRecordWriter('train.rec', 'train.idx') as writer:
            writer.write(1, pack(IRHeader(0, 0.0, 1, 0), jpeg_bytes))
    """

    def __init__(self, rec_path, idx_path):
        self.rec_path = rec_path
        self.idx_path = idx_path
        self._rec = open(rec_path, 'wb')
        self._idx = open(idx_path, 'w')
        self._position = 0

    def write(self, key, data):
        """Appends record bytes under an int key.

        Each key must be written once; keeping no set of keys here keeps memory
        flat, and the reader rejects an index with a repeated key.

        Raises:
          ValueError: for a negative or non-integer key.
        """
        if not isinstance(key, numbers.Integral) or key < 0:
            raise ValueError('key %r: expected a non-negative integer' % (key,))
        offset = self._position
        self._position += write_record(self._rec, data)
        self._idx.write('%d\t%d\n' % (key, offset))

    def close(self):
        """Flushes and closes both files."""
        self._rec.close()
        self._idx.close()

    def __enter__(self):
        return self

    def __exit__(self, *unused_exc_info):
        self.close()
