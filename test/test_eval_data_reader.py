"""Tests for data/eval_data_reader.py: safe .bin loading and decoding."""
import json
import os
import pickle
import subprocess
import sys
import tracemalloc

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from data import eval_data_reader
from data import image_ops
from data import recordio, recordio_reader
from data.eval_data_reader import BinFileError

from conftest import PROJECT_ROOT  # noqa: E402
JPEG_TOLERANCE = 12


@pytest.fixture(scope='module')
def orl_loaded(shared_data):
    return eval_data_reader.load_bin(os.path.join(shared_data, 'orl_faces', 'orl_val.bin'),
                                     batch_size=256)


@pytest.fixture(scope='module')
def faces_bin(tmp_path_factory):
    """A .bin of 112x112 synthetic faces (20 pairs, 40 JPEGs), made here: the tests of
    reading and refusing .bin files need no real faces."""
    from data.make_synthetic_dataset import make_dataset
    root = str(tmp_path_factory.mktemp('faces_bin') / 'set')
    make_dataset(root, num_identities=1, images_per_identity=1, num_val_identities=4,
                 num_val_pairs=20, image_size=(112, 112), seed=5)
    return os.path.join(root, 'lfw.bin')


@pytest.fixture(scope='module')
def faces_loaded(faces_bin):
    return eval_data_reader.load_bin(faces_bin, batch_size=16)


@pytest.fixture(scope='module')
def faces_encoded(faces_bin):
    return eval_data_reader.read_bin(faces_bin)


def _write_pickle(path, obj):
    with open(str(path), 'wb') as f:
        pickle.dump(obj, f, protocol=2)
    return str(path)


def _decode_with_training_path(encoded):
    """Decodes with image_ops.decode_image, one image per run, as training does."""
    with tf.Graph().as_default():
        one = tf.placeholder(tf.string, [])
        decoded = image_ops.decode_image(one)
        with tf.Session() as session:
            return [session.run(decoded, {one: e}) for e in encoded]


def test_orl_val(orl_loaded):
    images, issame = orl_loaded
    assert images.shape == (900, 112, 112, 3)
    assert images.dtype == np.uint8
    assert issame.shape == (450,) and issame.dtype == np.bool_
    assert issame.sum() == 225


def test_same_pixels_as_the_training_decoder(faces_loaded, faces_encoded):
    indices = [0, 1, 21, 39]
    expected = _decode_with_training_path([faces_encoded[0][i] for i in indices])
    for index, image in zip(indices, expected):
        np.testing.assert_array_equal(faces_loaded[0][index], image)


# Encoded images and OpenCV's decoding of them (cv2.imdecode, what MXNet and the original's
# .bin reader used): real face JPEGs from lfw_dev.bin and orl_val.bin, and a colour JPEG
# and PNG. Made with opencv-python-headless (libjpeg-turbo); the file records the version.
OPENCV_DECODED = os.path.join(PROJECT_ROOT, 'test', 'reference', 'opencv_decoded.npz')


def test_pixels_are_opencvs_bit_for_bit(tmp_path):
    """JPEGs decode with the accurate DCT, as OpenCV and the original's decode_jpeg do;
    TensorFlow's decode_image (fast DCT) moved about two thirds of the values here."""
    reference = np.load(OPENCV_DECODED)
    count = len(reference['sources'])
    encoded = [reference['encoded_%d' % i].tobytes() for i in range(count)]
    issame = [True, False, True]
    faces = _write_pickle(tmp_path / 'faces.bin', (encoded[:2] + encoded[2:3] * 4, issame))
    images, _ = eval_data_reader.load_bin(faces, (112, 112))
    for index in range(3):
        np.testing.assert_array_equal(images[index], reference['opencv_bgr_%d' % index],
                                      err_msg=str(reference['sources'][index]))
    colour = _write_pickle(tmp_path / 'colour.bin', (encoded[3:5], [True]))
    images, _ = eval_data_reader.load_bin(colour, (112, 96))
    for index in (3, 4):
        np.testing.assert_array_equal(images[index - 3], reference['opencv_bgr_%d' % index],
                                      err_msg=str(reference['sources'][index]))


def test_colour_images_come_out_bgr(shared_data, tmp_path):
    """The ORL faces are grey; the MXNet fixture's colours catch a channel swap."""
    folder = os.path.join(shared_data, 'mxnet_fixture')
    with open(os.path.join(folder, 'expected.json')) as f:
        expected = json.load(f)['images']
    with recordio_reader.IndexedRecordReader(os.path.join(folder, 'train.rec'),
                                             os.path.join(folder, 'train.idx')) as reader:
        jpegs = [recordio.unpack(r.data)[1] for r in reader.iter_images()]
    path = _write_pickle(tmp_path / 'colour.bin', (jpegs, [True, False, True]))
    images, issame = eval_data_reader.load_bin(path, batch_size=4)
    assert issame.tolist() == [True, False, True]
    for image, want in zip(images, expected):
        np.testing.assert_allclose(image[8:-8, 8:48].reshape(-1, 3).mean(0),
                                   want['left_half_bgr'], atol=JPEG_TOLERANCE)
        np.testing.assert_allclose(image[8:-8, 64:104].reshape(-1, 3).mean(0),
                                   want['right_half_bgr'], atol=JPEG_TOLERANCE)


class _RunsShell(object):
    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def test_malicious_pickle_is_refused(tmp_path, faces_encoded):
    marker = tmp_path / 'pwned'
    evil = _RunsShell('touch %s' % marker)
    path = _write_pickle(tmp_path / 'evil.bin', (faces_encoded[0][:2], [evil]))
    with pytest.raises(BinFileError) as error:
        eval_data_reader.load_bin(path)
    message = str(error.value)
    assert message.startswith('%s: refused to unpickle global %s.system' % (path, os.name))
    assert '\n' not in message
    assert not marker.exists()
    # Other code-running globals are refused too.
    for module, name in [('builtins', 'eval'), ('__builtin__', 'getattr'),
                         ('subprocess', 'Popen'), ('numpy', 'load')]:
        blob = b'\x80\x02c' + ('%s\n%s\n' % (module, name)).encode() + b')R.'
        with open(path, 'wb') as f:
            f.write(blob)
        with pytest.raises(BinFileError, match='refused to unpickle global %s.%s'
                           % (module, name)):
            eval_data_reader.read_bin(path)


# Hand-made pickles that ask the unpickler for far more memory than the file holds.
_BIG = 1 << 29  # 512 MiB


def _bytearray_pickle():
    """bytearray(2**29) in 33 bytes."""
    return (b'\x80\x02c__builtin__\nbytearray\nJ' + (_BIG).to_bytes(4, 'little')
            + b'\x85R.'), 'bytearray(%d)' % _BIG


def _ndarray_pickle():
    """numpy's _reconstruct(ndarray, (2**29,), 'b'): what an array's pickle starts with."""
    return (b'\x80\x02cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nJ'
            + (_BIG).to_bytes(4, 'little') + b'\x85U\x01b\x87R.'), 'array of %d bytes' % _BIG


def _hex_chain_pickle():
    """_codecs.encode(..., 'hex') nested 24 times: 4 bytes doubled to 64 MiB in ~300 bytes."""
    depth = 24
    blob = (b'\x80\x02c_codecs\nencode\nq\x00' + b'h\x00' * (depth - 1) + b'C\x04abcd'
            + b'X\x03\x00\x00\x00hex\x86R' * depth + b'.')
    return blob, "encoding 'hex'"


@pytest.mark.parametrize('make', [_bytearray_pickle, _ndarray_pickle, _hex_chain_pickle])
def test_allocation_is_bounded_by_the_file_size(tmp_path, make):
    blob, fragment = make()
    path = str(tmp_path / 'bomb.bin')
    with open(path, 'wb') as f:
        f.write(blob)
    tracemalloc.start()
    try:
        with pytest.raises(BinFileError) as error:
            eval_data_reader.read_bin(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    message = str(error.value)
    assert message.startswith('%s: refused' % path) and fragment in message, message
    assert '\n' not in message
    assert peak < (1 << 20), 'the unpickler allocated %d bytes first' % peak


def test_truncated_file(tmp_path, faces_bin):
    path = str(tmp_path / 'cut.bin')
    with open(faces_bin, 'rb') as src, open(path, 'wb') as dst:
        dst.write(src.read()[:60000])
    with pytest.raises(BinFileError, match='^%s: truncated, corrupt or unsupported pickle'
                       % path):
        eval_data_reader.load_bin(path)


def test_missing_file(tmp_path):
    with pytest.raises(BinFileError, match='nope.bin: cannot read'):
        eval_data_reader.read_bin(str(tmp_path / 'nope.bin'))


def test_mismatched_counts(tmp_path, faces_encoded):
    path = _write_pickle(tmp_path / 'counts.bin', (faces_encoded[0][:10], [True] * 4))
    with pytest.raises(BinFileError) as error:
        eval_data_reader.load_bin(path)
    assert str(error.value) == ('%s: 10 images for 4 pairs; expected 2 images per pair (8)'
                                % path)


def test_numpy_variant_loads(tmp_path, faces_encoded, faces_loaded):
    """Images as uint8 arrays of the encoded bytes, issame as a numpy bool array."""
    encoded = [np.frombuffer(e, dtype=np.uint8) for e in faces_encoded[0][:20]]
    path = _write_pickle(tmp_path / 'np.bin', (encoded, np.array(faces_encoded[1][:10])))
    images, issame = eval_data_reader.load_bin(path, batch_size=8)
    np.testing.assert_array_equal(images, faces_loaded[0][:20])
    np.testing.assert_array_equal(issame, faces_loaded[1][:10])


@pytest.mark.parametrize('protocol', [2, 4, 5])
def test_numpy_scalars_and_newer_protocols_load(tmp_path, faces_encoded, faces_loaded, protocol):
    """issame as numpy bools (numpy scalars), images as arrays, in the pickle protocols
    numpy and Python write today (5 stores arrays through numpy's _frombuffer)."""
    if protocol > pickle.HIGHEST_PROTOCOL:
        pytest.skip('Python %d.%d has no pickle protocol %d' % (sys.version_info[:2] + (protocol,)))
    encoded = [np.frombuffer(e, dtype=np.uint8) for e in faces_encoded[0][:20]]
    issame = [np.bool_(same) for same in faces_encoded[1][:10]]
    path = str(tmp_path / ('p%d.bin' % protocol))
    with open(path, 'wb') as f:
        pickle.dump((encoded, issame), f, protocol=protocol)
    images, loaded = eval_data_reader.load_bin(path, batch_size=8)
    np.testing.assert_array_equal(images, faces_loaded[0][:20])
    np.testing.assert_array_equal(loaded, faces_loaded[1][:10])


def test_wrong_image_size(tmp_path, faces_encoded):
    path = _write_pickle(tmp_path / 'size.bin', (faces_encoded[0][:4], faces_encoded[1][:2]))
    with pytest.raises(BinFileError) as error:
        eval_data_reader.load_bin(path, image_size=(112, 96))
    assert str(error.value) == ('%s: image 0 is 112x112, expected 112x96 (height x width)'
                                % path)


def test_undecodable_image(tmp_path, faces_encoded):
    images = list(faces_encoded[0][:4])
    images[2] = b'not an image at all'
    path = _write_pickle(tmp_path / 'bad.bin', (images, faces_encoded[1][:2]))
    with pytest.raises(BinFileError, match=r'^%s: cannot decode an image among 0..3: '
                       % path) as error:
        eval_data_reader.load_bin(path)
    assert '\n' not in str(error.value)


def test_works_with_eager_enabled(tmp_path, faces_encoded):
    """load_bin builds its own graph: fine in a process that runs eagerly."""
    path = _write_pickle(tmp_path / 'small.bin', (faces_encoded[0][:6], faces_encoded[1][:3]))
    script = ('import sys; import tensorflow.compat.v1 as tf; tf.enable_eager_execution(); '
              'assert tf.executing_eagerly(); from data import eval_data_reader; '
              'images, issame = eval_data_reader.load_bin(sys.argv[1]); '
              'print(images.shape, images.dtype, issame.tolist())')
    run = subprocess.run([sys.executable, '-c', script, path], cwd=PROJECT_ROOT,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         universal_newlines=True)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == '(6, 112, 112, 3) uint8 %s' % faces_encoded[1][:3].tolist()
