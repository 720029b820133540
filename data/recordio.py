"""MXNet RecordIO (insightface's train.rec/train.idx): the byte format, records and headers.

MXNet is retired, so the byte format of dmlc-core's `RecordIOWriter`/`RecordIOReader`
and of `mxnet.recordio.pack`/`unpack` is reproduced here in pure Python:
data/recordio_reader.py reads .rec/.idx files, data/recordio_writer.py writes
them, and this module holds what both share.

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

Every format problem raises `RecordIOError`, whose one-line message names the
file, the key and the byte offset when they are known.
"""
import collections
import numbers
import struct

import numpy as np

MAGIC = 0xCED7230A
MAGIC_BYTES = struct.pack('<I', MAGIC)
IR_FORMAT = '<IfQQ'
IR_SIZE = struct.calcsize(IR_FORMAT)  # 24
MAX_PART_LENGTH = (1 << 29) - 1  # the length field has 29 bits
PART_HEAD = struct.Struct('<II')  # magic, lrecord

IRHeader = collections.namedtuple('IRHeader', ['flag', 'label', 'id', 'id2'])
IRHeader.__doc__ = """Image record header.

flag: 0, or the number of float32 labels stored after the header.
label: float when flag == 0, else float32 numpy array of `flag` values.
id, id2: uint64 ids (insightface sets id to the record's key).
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
