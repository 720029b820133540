"""Training input: TFRecord shards -> shuffled, flipped, fixed-shape batches.

Reads the shards written by data/mx2tfrecords.py (tf.train.Example with
`image_raw`: the JPEG/PNG bytes of the .rec, `label`: int64) straight into the
graph; no numpy or feed_dict round trip.

    shard files -> [rank shard of files] -> [file shuffle] -> interleave records
      -> [rank shard of records] -> [shuffle] -> [repeat]
      -> parallel map per image: parse, decode (BGR), size check, [flip]
      -> batch(drop_remainder=True)
      -> parallel map per batch: [translate, crop], [contrast, brightness], [erase],
         normalise
      -> prefetch

Choices, and why:
  * Records are shuffled while still encoded (a few KB each). Shuffling decoded
    float images, as the original did, holds buffer_size * 150 KB (1.5 GB for
    10,000 112x112 images).
  * Batches have a static shape (drop_remainder): the Ascend NPU compiles
    fixed shapes only, and the other devices do not mind.
  * Random choices (flip, augmentation) are stateless ops seeded by (seed,
    element index), so a seeded pipeline gives the same batches however many
    threads run the maps.
  * Work that needs no per-image op runs once per batch: fewer op launches,
    and the batching copies uint8, not float32.
  * Distributed runs: with `num_shards` workers, each takes every num_shards-th
    file when the file count divides evenly (each reads only its own files),
    otherwise every num_shards-th record of the same file order (each reads all
    files). Either way the parts are disjoint and cover the data.
  * Augmentation beyond the flip (translation, crop-and-resize, brightness,
    contrast, random erasing: data/augmentation.py) is off by default, as in the
    original; it helps small real sets.

Typical use:
    manifest = data.manifest.load_manifest('datasets/synthetic_tfrecords')
    images, labels = make_input(manifest['shard_paths'], batch_size=128)
    # images: float32 [128, 112, 112, 3] in [-1, 1], BGR; labels: int64 [128]
"""
import logging
import multiprocessing
import numbers
import random
import threading

import tensorflow.compat.v1 as tf

from data import augmentation, image_ops

AUTOTUNE = tf.data.experimental.AUTOTUNE
_FEATURES = {
    'image_raw': tf.io.FixedLenFeature([], tf.string),
    'label': tf.io.FixedLenFeature([], tf.int64),
}
_MAX_INDEX = 2 ** 62  # element counter: never runs out
_READ_BUFFER = 1 << 18  # bytes of read-ahead per open shard


def build_dataset(filenames, batch_size, image_size=image_ops.DEFAULT_IMAGE_SIZE,
                  buffer_size=10000, shuffle=True, flip=True, num_shards=1, shard_index=0,
                  seed=None, repeat=True, num_parallel_calls=None, max_translation=0,
                  crop_scale=None, brightness_delta=0.0, contrast_range=None,
                  erase_max_side=0.0, cycle_length=4, records_per_file=None,
                  on_bad_record=None):
    """Builds the training tf.data pipeline.

    Args:
      filenames: TFRecord shard path (str) or list of paths.
      batch_size: images per batch (int >= 1); the last partial batch is dropped.
      image_size: (height, width) or "height,width" of every image; an image of
        another size fails at run time with an error naming both sizes.
      buffer_size: shuffle buffer, in records.
      shuffle: shuffle files and records (each epoch anew).
      flip: mirror each image left-right with probability 1/2.
      num_shards, shard_index: this worker's part of the data (0 <= index < shards).
      seed: int for a reproducible pipeline, None for a fresh random one.
      repeat: repeat forever; False gives one pass.
      num_parallel_calls: map parallelism; None means tf.data AUTOTUNE.
      max_translation: augmentation, off at 0: shift by up to this many pixels
        each way (black comes in at the edges), keeping the image size.
      crop_scale: augmentation, off at None: (min, max) side fraction of a random
        crop that is resized back to image_size, e.g. (0.85, 1.0).
      brightness_delta: augmentation, off at 0: add U(-d, d) * 255 to the pixels.
      contrast_range: augmentation, off at None: (lower, upper) factor about each
        image's per-channel mean, e.g. (0.8, 1.2). Brightness and contrast are
        not clipped (as tf.image's adjust_*), so values may leave [-1, 1].
      erase_max_side: augmentation, off at 0: random erasing. One rectangle per
        image, each side a random fraction in [max/5, max] of the image's, centred
        anywhere (the border may cut it), is filled with the image's mean colour.
      cycle_length: shard files read concurrently.
      records_per_file: the record count of each file (the manifest's), with
        on_bad_record: a file whose records cannot all be read is reported.
      on_bad_record: None: a record that cannot be read or decoded stops the
        pipeline with TensorFlow's error. Else fn(file, index, lost): such
        records are skipped and reported, from tf.data's threads, as
        (file str, 0-based record index in it, lost): lost 0, that record's
        image does not decode to image_size; lost > 0, the file is corrupted
        from that record on and its `lost` records left are skipped. fn may
        raise to stop the pipeline (e.g. BadRecords over its limit).
    Returns:
      tf.data.Dataset of (images float32 [batch_size, H, W, 3] BGR, in [-1, 1]
      unless jittered, labels int64 [batch_size]), both with fully static shapes.
    Raises:
      ValueError: on a bad argument, naming it and the expected values.
    """
    filenames = [filenames] if isinstance(filenames, str) else list(filenames)
    height, width = _check_args(filenames, batch_size, image_size, buffer_size, num_shards,
                                shard_index, max_translation, crop_scale, brightness_delta,
                                contrast_range, erase_max_side)
    if seed is None:
        seed = random.SystemRandom().randrange(2 ** 31)
    # Each file with its record count (-1: unknown), for _named_records.
    counts = list(records_per_file) if records_per_file else [-1] * len(filenames)
    files = tf.data.Dataset.from_tensor_slices((tf.constant(filenames, tf.string),
                                                tf.constant(counts, tf.int64)))
    shard_files = num_shards > 1 and len(filenames) % num_shards == 0
    shard_records = num_shards > 1 and not shard_files
    if shard_files:
        files = files.shard(num_shards, shard_index)
    if shuffle and not shard_records:
        # (Record sharding needs the same file order on every worker.)
        files = files.shuffle(len(filenames), seed=seed)
    if on_bad_record is None:
        records = files.interleave(
            lambda f, unused_count: tf.data.TFRecordDataset(f, buffer_size=_READ_BUFFER),
            cycle_length=max(1, cycle_length), block_length=1)
    else:  # each record with its file and index, so that a bad one can be named
        records = files.interleave(_named_records, cycle_length=max(1, cycle_length),
                                   block_length=1)
    if shard_records:
        records = records.shard(num_shards, shard_index)
    if shuffle:
        records = records.shuffle(buffer_size, seed=seed)
    if repeat:
        records = records.repeat()
    # The element index seeds that element's random draws; ranks count apart
    # (rank r: r, r + num_shards, ...) so they draw differently with one seed.
    counter = tf.data.Dataset.range(shard_index, _MAX_INDEX, num_shards)
    indexed = tf.data.Dataset.zip((counter, records))

    def decode(index, serialized):
        example = tf.io.parse_single_example(serialized, _FEATURES)
        image = _decode_checked(example['image_raw'], height, width)
        draws = tf.random.stateless_uniform([augmentation.NUM_DRAWS], seed=tf.stack(
            [tf.constant(seed, tf.int64), index]))
        if flip:
            # On the uint8 image: a batched tf.where over float images is much
            # slower.
            image = tf.cond(draws[0] < 0.5, lambda: tf.reverse(image, axis=[1]), lambda: image)
        return image, example['label'], draws

    def decode_or_report(index, record):
        """decode's element, or nothing when it cannot be read or decoded (reported)."""
        name, number, serialized, lost = record
        decoded = tf.data.Dataset.from_tensors((index, serialized)).map(decode).apply(
            tf.data.experimental.ignore_errors())
        # TensorFlow 1.15 has no try/except in a graph: a one-element dataset whose
        # error is ignored is empty, and the bad marker after it then comes first.
        # (A corrupted file's marker holds no bytes: it never decodes.)
        ok = decoded.map(lambda image, label, draws: (image, label, draws, True))
        bad = tf.data.Dataset.from_tensors((tf.zeros([height, width, 3], tf.uint8),
                                            tf.constant(0, tf.int64),
                                            tf.zeros([augmentation.NUM_DRAWS], tf.float32),
                                            False))
        chosen = ok.concatenate(bad).take(1)
        return chosen.map(lambda image, label, draws, good: (
            image, label, draws, _reported(good, name, number, lost, on_bad_record)))

    def finish(images, labels, draws):
        images = augmentation.geometric(images, draws, height, width, max_translation,
                                        crop_scale)
        images = augmentation.photometric(tf.cast(images, tf.float32), draws,
                                          brightness_delta, contrast_range)
        images = augmentation.erase(images, draws, height, width, erase_max_side)
        return image_ops.normalize(images), labels

    parallel = num_parallel_calls or AUTOTUNE
    # Per image only what must be: decode, size check, flip. Augmentation,
    # conversion to float and normalisation run as a few ops per batch (far
    # fewer op launches), and batching copies uint8, not float32.
    if on_bad_record is None:
        dataset = indexed.map(decode, num_parallel_calls=parallel)
    else:
        # The experimental parallel_interleave, not interleave(num_parallel_calls=):
        # under TensorFlow 1.15 the latter crashes (SIGSEGV) in about one session
        # close in ten while tearing down these per-record datasets. This one
        # closes cleanly on both frameworks.
        threads = num_parallel_calls or max(2, multiprocessing.cpu_count())
        dataset = indexed.apply(tf.data.experimental.parallel_interleave(
            decode_or_report, cycle_length=threads, block_length=1))
        dataset = dataset.filter(lambda image, label, draws, good: good).map(
            lambda image, label, draws, good: (image, label, draws))
    dataset = dataset.batch(batch_size, drop_remainder=True)
    dataset = dataset.map(finish, num_parallel_calls=parallel)
    return dataset.prefetch(AUTOTUNE)


def make_input(filenames, batch_size, image_size=image_ops.DEFAULT_IMAGE_SIZE, **kwargs):
    """Returns the (images, labels) tensors of a one-shot iterator over build_dataset.

    Training uses an initializable iterator instead (Ascend's loop sinking
    refuses one-shot iterators); this is for tools and tests.

    Args:
      filenames, batch_size, image_size: as for build_dataset.
      **kwargs: any other build_dataset argument.
    Returns:
      images: float32 [batch_size, H, W, 3], BGR, in [-1, 1] unless jittered.
      labels: int64 [batch_size].
    """
    dataset = build_dataset(filenames, batch_size, image_size, **kwargs)
    return tf.data.make_one_shot_iterator(dataset).get_next()


def _check_args(filenames, batch_size, image_size, buffer_size, num_shards, shard_index,
                max_translation, crop_scale, brightness_delta, contrast_range, erase_max_side):
    """Validates build_dataset's arguments; returns (height, width)."""
    if not filenames or not all(isinstance(f, str) and f for f in filenames):
        raise ValueError('filenames %r: expected a non-empty list of TFRecord paths'
                         % (filenames,))
    height, width = image_ops.parse_image_size(
        image_size if isinstance(image_size, str) else ','.join(str(s) for s in image_size))
    for name, value, minimum in (('batch_size', batch_size, 1), ('buffer_size', buffer_size, 1),
                                 ('num_shards', num_shards, 1),
                                 ('max_translation', max_translation, 0)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
            raise ValueError('%s=%r: expected an integer >= %d' % (name, value, minimum))
    if not 0 <= shard_index < num_shards:
        raise ValueError('shard_index=%r: expected 0 <= shard_index < num_shards=%d'
                         % (shard_index, num_shards))
    if crop_scale is not None and not (len(crop_scale) == 2 and
                                       0.0 < crop_scale[0] <= crop_scale[1] <= 1.0):
        raise ValueError('crop_scale=%r: expected (min, max) with 0 < min <= max <= 1, or None'
                         % (crop_scale,))
    if not 0.0 <= brightness_delta <= 1.0:
        raise ValueError('brightness_delta=%r: expected a fraction in [0, 1]'
                         % (brightness_delta,))
    if contrast_range is not None and not (len(contrast_range) == 2 and
                                           0.0 < contrast_range[0] <= contrast_range[1]):
        raise ValueError('contrast_range=%r: expected (lower, upper) with 0 < lower <= upper, '
                         'or None' % (contrast_range,))
    if not 0.0 <= erase_max_side <= 1.0:
        raise ValueError('erase_max_side=%r: expected a fraction in [0, 1] (0: off)'
                         % (erase_max_side,))
    return height, width


def _named_records(filename, expected):
    """The records of one TFRecord file, each as (filename, index, serialized, 0).

    A read error (DataLossError: a flipped or truncated byte fails the record's
    CRC) ends the file, as the reader moves past a file that fails; when fewer
    than `expected` records (-1: unknown) were read, one marker follows,
    (filename, index of the first unread record, b'', records lost).
    """
    records = tf.data.Dataset.zip((tf.data.Dataset.range(_MAX_INDEX),
                                   tf.data.TFRecordDataset(filename, buffer_size=_READ_BUFFER)))
    records = records.apply(tf.data.experimental.ignore_errors())
    end = tf.data.Dataset.from_tensors((tf.constant(-1, tf.int64), tf.constant(b'')))

    def count(read, element):
        index, serialized = element
        is_end = tf.less(index, 0)
        lost = tf.where(is_end, tf.maximum(expected - read, 0), tf.constant(0, tf.int64))
        return read + 1, (filename, tf.where(is_end, read, index), serialized, lost, is_end)

    records = records.concatenate(end).apply(
        tf.data.experimental.scan(tf.constant(0, tf.int64), count))
    records = records.filter(lambda name, index, serialized, lost, is_end: tf.logical_or(
        tf.logical_not(is_end), tf.greater(lost, 0)))
    return records.map(lambda name, index, serialized, lost, is_end: (
        name, index, serialized, lost))


def _reported(good, filename, index, lost, on_bad_record):
    """`good`, after calling on_bad_record(filename, index, lost) when it is False.

    A Python call from the graph (tf.py_function), made for bad records only.
    """
    def call(name, number, count):
        on_bad_record(name.numpy().decode('utf-8'), int(number.numpy()), int(count.numpy()))
        return False

    return tf.cond(good, lambda: tf.constant(True), lambda: tf.reshape(
        tf.py_function(call, [filename, index, lost], tf.bool), []))


class BadRecords(object):
    """Counts, names in the log, and limits the records build_dataset skips.

    Its instance is build_dataset's on_bad_record. A record is counted once
    however many epochs meet it; a corrupted file counts each record lost.
    Called from tf.data's threads, hence the lock.
    """

    def __init__(self, max_count, log=logging.warning, stop_pipeline=True):
        self.max_count = max_count  # more than this many stops the pipeline
        # False: the pipeline goes on skipping and the caller stops on `exceeded`
        # (HCCL ranks, which must stop at the same step; see trainer.py).
        self.stop_pipeline = stop_pipeline
        self.count = 0
        self.last = None            # the latest bad record: 'file record i' (or records i-j)
        self.exceeded = False
        self._log = log
        self._seen = set()
        self._lock = threading.Lock()

    def __call__(self, filename, index, lost):
        with self._lock:
            if (filename, index) in self._seen:
                return
            self._seen.add((filename, index))
            if lost:
                self.last = '%s records %d-%d' % (filename, index, index + lost - 1)
                self.count += lost
                self._log('bad records skipped: %s is corrupted from record %d on (the records '
                          'cannot be read), %d records lost; %d bad records so far'
                          % (filename, index, lost, self.count))
            else:
                self.last = '%s record %d' % (filename, index)
                self.count += 1
                self._log('bad record skipped: %s record %d: its image does not decode to the '
                          'training size; %d bad records so far' % (filename, index, self.count))
            self.exceeded = self.count > self.max_count
        if self.exceeded and self.stop_pipeline:  # the trainer names the cause
            raise ValueError('more than %d bad records' % self.max_count)


def _decode_checked(encoded, height, width):
    """Decodes to uint8 [height, width, 3] BGR; fails clearly on another size."""
    image = image_ops.decode_image(encoded)
    size = tf.shape(image)[:2]
    check = tf.Assert(tf.reduce_all(tf.equal(size, [height, width])), [
        'input_pipeline: decoded image has (height, width) =', size,
        'but image_size expects', tf.constant([height, width])], summarize=2)
    with tf.control_dependencies([check]):
        image = tf.identity(image)
    image.set_shape([height, width, 3])
    return image
