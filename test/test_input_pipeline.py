"""Tests for data/input_pipeline.py on a tiny synthetic set converted to TFRecords."""
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from conftest import PROJECT_ROOT
from data import (image_ops, input_pipeline, make_synthetic_dataset, mx2tfrecords, recordio,
                  recordio_reader)

SIZE = (32, 32)
NUM_IDS, PER_ID = 5, 6  # 30 images in 3 shards of 10


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    """Shard paths, manifest folder, and the reference decode of every image in key order."""
    root = tmp_path_factory.mktemp('pipeline')
    source = str(root / 'synthetic')
    make_synthetic_dataset.make_dataset(source, num_identities=NUM_IDS,
                                        images_per_identity=PER_ID, num_val_identities=2,
                                        num_val_pairs=20, image_size=SIZE, seed=1)
    tfrecords = str(root / 'tfrecords')
    manifest = mx2tfrecords.convert(os.path.join(source, 'train.rec'),
                                    os.path.join(source, 'train.idx'), tfrecords,
                                    num_shards=3, progress=False)
    with recordio_reader.IndexedRecordReader(os.path.join(source, 'train.rec'),
                                             os.path.join(source, 'train.idx')) as reader:
        records = [recordio.unpack(r.data) for r in reader.iter_images()]
    with tf.Graph().as_default():
        encoded = tf.placeholder(tf.string, [])
        decoded = image_ops.decode_image(encoded)
        with tf.Session() as session:
            images = np.stack([session.run(decoded, {encoded: payload})
                               for _, payload in records])
    return {
        'files': [os.path.join(tfrecords, s['file']) for s in manifest['shards']],
        'dir': tfrecords,
        'images': image_ops.normalize(images),
        'labels': np.array([int(header.label) for header, _ in records]),
    }


def _run_all(dataset, limit=100):
    """Every batch of a finite dataset (at most `limit`), as two numpy arrays."""
    batch = tf.data.make_one_shot_iterator(dataset).get_next()
    images, labels = [], []
    with tf.Session() as session:
        for _ in range(limit):
            try:
                image, label = session.run(batch)
            except tf.errors.OutOfRangeError:
                break
            images.append(image)
            labels.append(label)
    return np.concatenate(images), np.concatenate(labels)


def _in_order(data, **kwargs):
    """One unshuffled pass, file by file, so element i is image key i + 1."""
    options = dict(batch_size=1, image_size=SIZE, shuffle=False, repeat=False, cycle_length=1,
                   seed=0)
    options.update(kwargs)
    with tf.Graph().as_default():
        return _run_all(input_pipeline.build_dataset(data['files'], **options))


def test_batches_have_static_shapes_and_range(data):
    with tf.Graph().as_default():
        images, labels = input_pipeline.make_input(data['files'], 8, SIZE, seed=0,
                                                   buffer_size=30)
        assert images.shape.as_list() == [8, 32, 32, 3]
        assert labels.shape.as_list() == [8]
        assert images.dtype == tf.float32 and labels.dtype == tf.int64
        with tf.Session() as session:
            for _ in range(5):  # past one epoch: repeats
                image, label = session.run([images, labels])
                assert -1.0 <= image.min() and image.max() <= 1.0
                assert set(label) <= set(range(NUM_IDS))


def test_images_and_labels_match_the_source(data):
    images, labels = _in_order(data, flip=False)
    np.testing.assert_array_equal(labels, data['labels'])
    np.testing.assert_array_equal(images, data['images'])


def test_flip_mirrors_some_images_exactly(data):
    images, labels = _in_order(data, flip=True)
    np.testing.assert_array_equal(labels, data['labels'])
    flipped = [np.array_equal(a, b[:, ::-1]) for a, b in zip(images, data['images'])]
    kept = [np.array_equal(a, b) for a, b in zip(images, data['images'])]
    assert all(f or k for f, k in zip(flipped, kept))
    assert 0 < sum(flipped) < len(flipped)


def test_reporting_bad_records_keeps_the_clean_data_unchanged(data):
    reported = []
    images, labels = _in_order(data, flip=False, on_bad_record=lambda *bad: reported.append(bad),
                               records_per_file=[10, 10, 10])
    np.testing.assert_array_equal(labels, data['labels'])
    np.testing.assert_array_equal(images, data['images'])
    assert reported == []


def test_bad_records_are_skipped_and_reported_by_file_and_index(data, tmp_path):
    """An undecodable image: that record; a flipped byte: the file's rest (record CRCs)."""
    files = []
    for number, source in enumerate(data['files']):
        files.append(str(tmp_path / os.path.basename(source)))
        records = list(tf.io.tf_record_iterator(source))
        if number == 0:  # record 4's JPEG cut short
            example = tf.train.Example.FromString(records[4])
            jpeg = example.features.feature['image_raw'].bytes_list.value[0]
            example.features.feature['image_raw'].bytes_list.value[0] = jpeg[:len(jpeg) // 3]
            records[4] = example.SerializeToString()
        with tf.io.TFRecordWriter(files[-1]) as writer:
            for record in records:
                writer.write(record)
    with open(files[2], 'rb') as shard:
        content = bytearray(shard.read())
    record_size = len(content) // 10  # the synthetic JPEGs are not all of one size:
    content[6 * record_size + record_size // 2] ^= 0x5A  # a byte of record 5, 6 or 7
    with open(files[2], 'wb') as shard:
        shard.write(bytes(content))
    reported = []
    _, labels = _in_order({'files': files}, flip=False, records_per_file=[10, 10, 10],
                          on_bad_record=lambda *bad: reported.append(bad))
    assert reported[0] == (files[0], 4, 0)
    name, first, lost = reported[1]
    assert len(reported) == 2 and name == files[2] and 5 <= first <= 7 and lost == 10 - first
    expected = [label for i, label in enumerate(data['labels'])
                if i != 4 and not 20 + first <= i]
    np.testing.assert_array_equal(labels, expected)


# Opens the reporting pipeline, reads two batches and closes the session, many
# times: what every training run does once at its end. Under TensorFlow 1.15
# the core interleave with num_parallel_calls over the per-record datasets
# crashed (SIGSEGV) while being torn down, in about one close in ten.
_OPEN_AND_CLOSE = """
import sys
import tensorflow.compat.v1 as tf
tf.disable_v2_behavior()
from data import input_pipeline
for round in range(int(sys.argv[1])):
    with tf.Graph().as_default():
        dataset = input_pipeline.build_dataset(sys.argv[2:], 4, image_size=(32, 32), seed=round,
                                               buffer_size=30, on_bad_record=print)
        batch = tf.data.make_one_shot_iterator(dataset).get_next()
        with tf.Session() as session:
            session.run(batch)
            session.run(batch)
print('closed', round + 1)
"""


def test_the_reporting_pipeline_closes_cleanly(data):
    result = subprocess.run([sys.executable, '-c', _OPEN_AND_CLOSE, '25'] + data['files'],
                            cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            universal_newlines=True)
    assert result.returncode == 0 and 'closed 25' in result.stdout, result.stdout[-2000:]


def test_bad_records_over_the_limit_stop_the_pipeline(data):
    logged = []
    bad = input_pipeline.BadRecords(1, log=logged.append)
    bad('a.tfrecord', 3, 0)
    bad('a.tfrecord', 3, 0)  # the same record in the next epoch: counted once
    assert (bad.count, bad.exceeded, bad.last) == (1, False, 'a.tfrecord record 3')
    with pytest.raises(ValueError, match='more than 1 bad records'):
        bad('b.tfrecord', 7, 3)
    assert (bad.count, bad.exceeded, bad.last) == (4, True, 'b.tfrecord records 7-9')
    assert logged[-1] == ('bad records skipped: b.tfrecord is corrupted from record 7 on (the '
                          'records cannot be read), 3 records lost; 4 bad records so far')


def test_drop_remainder_gives_full_batches_only(data):
    with tf.Graph().as_default():
        images, labels = _run_all(input_pipeline.build_dataset(
            data['files'], 8, SIZE, repeat=False, seed=0, buffer_size=30))
    assert images.shape == (24, 32, 32, 3)  # 30 images -> 3 batches of 8
    assert labels.shape == (24,)


@pytest.mark.parametrize('num_shards', [2, 3])  # by record (3 files, 2 ranks), by file
def test_rank_shards_are_disjoint_and_cover_the_data(data, num_shards):
    seen = []
    for rank in range(num_shards):
        with tf.Graph().as_default():
            # seed=None: each rank shuffles on its own, as real workers would.
            images, labels = _run_all(input_pipeline.build_dataset(
                data['files'], 1, SIZE, repeat=False, flip=False, buffer_size=30,
                num_shards=num_shards, shard_index=rank))
        seen.extend(next(i for i, ref in enumerate(data['images']) if np.array_equal(ref, image))
                    for image in images)
    assert sorted(seen) == list(range(NUM_IDS * PER_ID))


def test_same_seed_same_batches(data):
    def first_batches(seed):
        with tf.Graph().as_default():
            return _run_all(input_pipeline.build_dataset(
                data['files'], 4, SIZE, seed=seed, buffer_size=30, num_parallel_calls=4,
                max_translation=2), limit=3)
    first, again, other = first_batches(7), first_batches(7), first_batches(8)
    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_array_equal(first[1], again[1])
    assert not np.array_equal(first[0], other[0])


def test_augmentation_keeps_shape_and_range(data):
    plain, labels = _in_order(data, flip=False)
    augmented, aug_labels = _in_order(data, flip=False, max_translation=3, crop_scale=(0.8, 1.0),
                                      brightness_delta=0.1, contrast_range=(0.8, 1.2))
    np.testing.assert_array_equal(labels, aug_labels)
    assert augmented.shape == plain.shape and augmented.dtype == np.float32
    # Jitter is not clipped: (255 - mean) * 1.2 + mean + 25.5 stays under 1.5.
    assert np.all(np.abs(augmented) < 1.5)
    assert not np.array_equal(plain, augmented)


def _whole_pixel_shift(before, after, limit):
    """(dy, dx) with after[y, x] == before[y + dy, x + dx] wherever both exist, or None.

    Equality is up to float rounding in crop_and_resize's box arithmetic.
    """
    height, width = before.shape[:2]
    for dy in range(-limit, limit + 1):
        for dx in range(-limit, limit + 1):
            rows = slice(max(0, -dy), height - max(0, dy))
            cols = slice(max(0, -dx), width - max(0, dx))
            moved = np.roll(before, (-dy, -dx), axis=(0, 1))
            if np.allclose(moved[rows, cols], after[rows, cols], atol=1e-3):
                return dy, dx
    return None


def test_translation_is_a_whole_pixel_shift(data):
    plain, _ = _in_order(data, flip=False)
    shifted, _ = _in_order(data, flip=False, max_translation=2)
    shifts = [_whole_pixel_shift(before, after, 2) for before, after in zip(plain, shifted)]
    assert None not in shifts
    assert len(set(shifts)) > 1
    black = image_ops.normalize(np.zeros(3, np.uint8))
    assert np.any(np.all(np.isclose(shifted, black, atol=1e-3), axis=-1))  # black edges


def test_random_erasing_fills_one_rectangle_per_image_with_its_mean(data):
    plain, _ = _in_order(data, flip=False)
    erased, _ = _in_order(data, flip=False, erase_max_side=0.5)
    sides = []
    for before, after in zip(plain, erased):
        changed = np.any(after != before, axis=-1)
        rows, cols = np.nonzero(changed)
        if not len(rows):  # rectangle cut to nothing by the border, or no visible change
            continue
        top, bottom, left, right = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
        box = after[top:bottom, left:right]
        # The whole bounding box is one colour: the image's own per-channel mean.
        np.testing.assert_allclose(box, np.broadcast_to(before.mean(axis=(0, 1)), box.shape),
                                   atol=1e-5)
        np.testing.assert_array_equal(np.delete(after, np.s_[top:bottom], axis=0),
                                      np.delete(before, np.s_[top:bottom], axis=0))
        sides.extend([bottom - top, right - left])
    assert len(sides) // 2 >= len(plain) // 2  # most images got a visible rectangle
    assert max(sides) <= 0.5 * SIZE[0] + 1 and len(set(sides)) > 3


def test_wrong_image_size_fails_naming_both_sizes(data):
    with tf.Graph().as_default():
        images, _ = input_pipeline.make_input(data['files'], 2, (24, 24), seed=0)
        with tf.Session() as session:
            with pytest.raises(tf.errors.InvalidArgumentError) as error:
                session.run(images)
    message = error.value.message
    assert 'decoded image has (height, width) =' in message
    assert '[32 32]' in message and '[24 24]' in message


def test_bad_arguments_raise_value_errors(data):
    with pytest.raises(ValueError, match='shard_index=2'):
        input_pipeline.build_dataset(data['files'], 8, SIZE, num_shards=2, shard_index=2)
    with pytest.raises(ValueError, match='batch_size=0'):
        input_pipeline.build_dataset(data['files'], 0, SIZE)
    with pytest.raises(ValueError, match='filenames'):
        input_pipeline.build_dataset([], 8, SIZE)
    with pytest.raises(ValueError, match='crop_scale'):
        input_pipeline.build_dataset(data['files'], 8, SIZE, crop_scale=(0.5, 1.5))
    with pytest.raises(ValueError, match='erase_max_side'):
        input_pipeline.build_dataset(data['files'], 8, SIZE, erase_max_side=1.5)


@pytest.mark.parametrize('net_size', [(16, 16), (24, 20)])
def test_resize_for_network_is_the_area_average(net_size):
    # Whole factors take the average-pool path, others resize_area; both must be
    # the area average, computed here in numpy for the whole-factor case.
    images = np.random.RandomState(0).uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32)
    with tf.Graph().as_default(), tf.Session() as sess:
        shrunk = image_ops.resize_for_network(tf.constant(images), net_size)
        assert shrunk.get_shape().as_list() == [2, net_size[0], net_size[1], 3]
        reference = tf.image.resize_area(tf.constant(images), list(net_size))
        got, want = sess.run([shrunk, reference])
    np.testing.assert_allclose(got, want, atol=1e-5)
    if net_size == (16, 16):
        blocks = images.reshape(2, 16, 2, 16, 2, 3).mean(axis=(2, 4))
        np.testing.assert_allclose(got, blocks, atol=1e-5)


@pytest.mark.parametrize('size,net_size', [((112, 112), (32, 32)), ((112, 96), (64, 40)),
                                           ((112, 112), (96, 96))])
def test_resize_for_network_is_resize_area_as_matrix_products(size, net_size):
    """Factors that are not whole: TensorFlow's area resize, in ops that every runtime and
    converter computes exactly (no ResizeArea, which tf2onnx turns into a nearest Resize)."""
    images = np.random.RandomState(1).uniform(-1, 1, (2,) + size + (3,)).astype(np.float32)
    with tf.Graph().as_default() as graph, tf.Session() as sess:
        shrunk = image_ops.resize_for_network(tf.constant(images), net_size)
        ops = {op.type for op in graph.get_operations()}
        want = tf.image.resize_area(tf.constant(images), list(net_size))
        got, want = sess.run([shrunk, want])
    assert 'ResizeArea' not in ops and 'MatMul' in ops
    np.testing.assert_allclose(got, want, atol=1e-5)
    # Each output pixel averages its footprint: a constant image stays that constant.
    weights = image_ops.area_weights(size[0], net_size[0])
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, atol=1e-6)
    if size[0] / float(net_size[0]) == 3.5:  # output pixel 0 covers input 0, 1, 2 and half of 3
        np.testing.assert_allclose(weights[0, :5], np.array([1, 1, 1, 0.5, 0]) / 3.5)


def test_resize_for_network_keeps_same_size_and_none():
    with tf.Graph().as_default():
        images = tf.zeros([1, 32, 32, 3])
        assert image_ops.resize_for_network(images, None) is images
        assert image_ops.resize_for_network(images, (32, 32)) is images
