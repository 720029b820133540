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
    contrast, random erasing) is off by default, as in the original; it helps
    small real sets.

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

from data import image_ops

AUTOTUNE = tf.data.experimental.AUTOTUNE
_FEATURES = {
    'image_raw': tf.io.FixedLenFeature([], tf.string),
    'label': tf.io.FixedLenFeature([], tf.int64),
}
# Uniform draws per element: [0] flip, [1] brightness, [2] contrast,
# [3:5] translation (y, x), [5:7] crop position (y, x), [7] crop side,
# [8:10] erased rectangle's sides (y, x), [10:12] its centre (y, x).
_NUM_DRAWS = 12
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
        draws = tf.random.stateless_uniform([_NUM_DRAWS], seed=tf.stack(
            [tf.constant(seed, tf.int64), index]))
        if flip:
            # On the uint8 image: a batched tf.where over float images costs
            # half the pipeline's throughput.
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
                                            tf.zeros([_NUM_DRAWS], tf.float32), False))
        chosen = ok.concatenate(bad).take(1)
        return chosen.map(lambda image, label, draws, good: (
            image, label, draws, _reported(good, name, number, lost, on_bad_record)))

    def finish(images, labels, draws):
        images = _geometric(images, draws, height, width, max_translation, crop_scale)
        images = _photometric(tf.cast(images, tf.float32), draws, brightness_delta,
                              contrast_range)
        images = _erase(images, draws, height, width, erase_max_side)
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
        # closes cleanly on both frameworks and reads about 30% faster.
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


def _geometric(images, draws, height, width, max_translation, crop_scale):
    """Optional random translation and crop-and-resize of a batch, as one op.

    Each image gets a square box (side fraction from crop_scale, else 1) at a
    random position, moved by a whole number of pixels in [-max_translation,
    max_translation]; crop_and_resize samples it back to height x width. At
    side 1 the samples fall on pixel centres, so a translation is an exact
    shift; pixels shifted in from outside are 0 (black).

    Args:
      images: uint8 [B, height, width, 3].
      draws: float32 [B, _NUM_DRAWS] uniform in [0, 1), the images' randomness.
    Returns:
      images unchanged if both options are off, else float32 [B, height, width, 3]
      in [0, 255].
    """
    if not (max_translation or crop_scale):
        return images
    if crop_scale:
        side = crop_scale[0] + (crop_scale[1] - crop_scale[0]) * draws[:, 7]
    else:
        side = tf.ones_like(draws[:, 7])
    y0, x0 = draws[:, 5] * (1.0 - side), draws[:, 6] * (1.0 - side)
    if max_translation:
        shift = tf.floor(draws[:, 3:5] * (2 * max_translation + 1)) - max_translation
        # Box coordinates are in units of (size - 1) pixels.
        y0 += shift[:, 0] / max(height - 1, 1)
        x0 += shift[:, 1] / max(width - 1, 1)
    boxes = tf.stack([y0, x0, y0 + side, x0 + side], axis=1)
    return tf.image.crop_and_resize(images, boxes, box_indices=tf.range(tf.shape(images)[0]),
                                    crop_size=[height, width])


def _photometric(images, draws, brightness_delta, contrast_range):
    """Optional per-image brightness and contrast jitter of a float batch.

    Like tf.image.adjust_brightness/adjust_contrast, the result is not clipped:
    jittered pixels may leave [0, 255] (and the normalised ones [-1, 1]).

    Args:
      images: float32 [B, H, W, 3] in [0, 255].
      draws: float32 [B, _NUM_DRAWS], the images' randomness.
    Returns:
      float32 [B, H, W, 3] (unchanged if both options are off).
    """
    if contrast_range:
        lower, upper = contrast_range
        factor = (lower + (upper - lower) * draws[:, 2])[:, None, None, None]
        mean = tf.reduce_mean(images, axis=[1, 2], keepdims=True)
        # (x - mean) * factor + mean, as one multiply and one add.
        images = images * factor + mean * (1.0 - factor)
    if brightness_delta:
        shift = (2.0 * draws[:, 1] - 1.0) * (brightness_delta * 255.0)
        images += shift[:, None, None, None]
    return images


def _erase(images, draws, height, width, max_side):
    """Optional random erasing: one rectangle per image set to the image's mean colour.

    The rectangle hides a random part of the face (eyes, mouth, glasses, hair) in
    each step, so the model cannot lean on any single region. On ORL's 30
    identities it raised the final accuracy by about 0.01 (three seeds; README).

    Args:
      images: float32 [B, height, width, 3].
      draws: float32 [B, _NUM_DRAWS], the images' randomness.
      max_side: largest side as a fraction of the image's; 0 leaves images as they are.
    Returns:
      float32 [B, height, width, 3].
    """
    if not max_side:
        return images
    sides = max_side * (0.2 + 0.8 * draws[:, 8:10])  # (y, x) fractions in [max/5, max]
    centres = draws[:, 10:12]

    def inside(size, axis):
        # [B, size]: pixel centres within half a side of the rectangle's centre.
        position = (tf.range(size, dtype=tf.float32) + 0.5) / size
        return tf.abs(position[None, :] - centres[:, axis:axis + 1]) < sides[:, axis:axis + 1] / 2

    mask = tf.cast(tf.logical_and(inside(height, 0)[:, :, None], inside(width, 1)[:, None, :]),
                   tf.float32)[:, :, :, None]
    mean = tf.reduce_mean(images, axis=[1, 2], keepdims=True)
    return images + mask * (mean - images)
