"""Writing MXNet RecordIO files: records split as dmlc-core splits them, and the .idx.

Typical use (an insightface-style dataset; data/recordio.py has the layout):
    with IndexedRecordWriter('train.rec', 'train.idx') as writer:
        for key, (label, jpeg) in enumerate(images, start=1):
            writer.write(key, pack(IRHeader(0, float(label), key, 0), jpeg))
        first_identity = len(images) + 1
        for i, (start, end) in enumerate(identity_ranges):
            writer.write(first_identity + i, pack(IRHeader(0, [start, end], 0, 0), b''))
        writer.write(0, pack_insightface_header(
            first_identity, first_identity + len(identity_ranges)))
"""
import numbers

import numpy as np

from data.recordio import MAGIC, MAX_PART_LENGTH, PART_HEAD


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
        chunks.append(PART_HEAD.pack(MAGIC, _lrecord(1 if start == 0 else 2,
                                                     position - start)))
        chunks.append(data[start:position])
        start = position + 4
    chunks.append(PART_HEAD.pack(MAGIC, _lrecord(3 if start else 0, length - start)))
    chunks.append(data[start:])
    chunks.append(b'\0' * (-length % 4))
    blob = b''.join(chunks)
    fileobj.write(blob)
    return len(blob)


def _lrecord(cflag, length):
    return (cflag << 29) | length


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
