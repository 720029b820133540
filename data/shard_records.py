"""One TFRecord shard of (encoded image, label) records, as every converter writes it.

The tf.train.Example encoding, the shard writer and its ShardResult, and
ConversionError, the one-line error every part of a conversion raises.
"""
import collections

# skipped: what --skip_bad left out of the shard, [{..., 'problem': text}] (manifest entries).
ShardResult = collections.namedtuple('ShardResult', 'path num_images max_label skipped',
                                     defaults=((),))
REPORT_EVERY = 256  # images between progress reports of a shard writer


class ConversionError(ValueError):
    """Bad arguments, output folder or input; the message is one line."""


def encode_example(payload, label):
    """Serialized tf.train.Example {'image_raw': bytes payload, 'label': int64 label}.

    Args:
      payload: bytes, the encoded image.
      label: non-negative int.
    Returns:
      bytes; deterministic (map keys sorted), so the same images give the same shards.
    """
    import tensorflow.compat.v1 as tf  # already loaded by write_records: a lookup
    feature = {
        'image_raw': tf.train.Feature(bytes_list=tf.train.BytesList(value=[payload])),
        'label': tf.train.Feature(int64_list=tf.train.Int64List(value=[label])),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString(
        deterministic=True)


def write_records(path, examples, report):
    """Writes one TFRecord shard of (payload bytes, label) pairs; returns its ShardResult.

    report(n) is called every REPORT_EVERY records and at the end.
    """
    # Imported here: a parent that only coordinates workers never pays for it.
    import tensorflow.compat.v1 as tf
    count, max_label, unreported = 0, -1, 0
    with tf.io.TFRecordWriter(path) as writer:
        for payload, label in examples:
            writer.write(encode_example(payload, label))
            count += 1
            max_label = max(max_label, label)
            unreported += 1
            if unreported == REPORT_EVERY:
                report(unreported)
                unreported = 0
    report(unreported)
    return ShardResult(path, count, max_label)
