"""Loads insightface verification sets (lfw.bin, cfp_fp.bin, agedb_30.bin, ...).

A `.bin` file is a Python 2 pickle of `(bins, issame_list)`: `bins` holds
2 * P encoded JPEG/PNG images (pair i is bins[2i], bins[2i+1]) and
`issame_list` P bools. Some variants store each image as a numpy uint8 array
of the encoded bytes, or the lists as numpy arrays.

Pickles can run arbitrary code while loading, so the file is read with an
unpickler that only resolves the globals such files need (set/frozenset/
bytearray, `_codecs.encode` which Python 3 protocol-2 pickles use for bytes,
and numpy's array/dtype/scalar reconstructors); any other global is refused
before anything is called.

Images are decoded by `data.image_ops.decode_image`, the function the training
input uses, so both see the same BGR pixels.

Typical use:
    images, issame = load_bin('datasets/faces_emore/lfw.bin')
    # images: uint8 [N, 112, 112, 3] BGR; issame: bool [N / 2]
"""
import builtins
import codecs
import importlib
import logging
import pickle

import numpy as np
import tensorflow.compat.v1 as tf

from data import image_ops

LOG_EVERY = 1000  # images between progress log lines

_log = logging.getLogger(__name__)

# What a .bin may reference. Python 2 pickles say __builtin__ for builtins;
# numpy 2 writes numpy._core.* where numpy 1 wrote numpy.core.*.
_SAFE_BUILTINS = frozenset(['set', 'frozenset', 'bytearray'])
_NUMPY_CORE_GLOBALS = frozenset([('multiarray', '_reconstruct'), ('multiarray', 'scalar'),
                                 ('numeric', '_frombuffer')])


class BinFileError(ValueError):
    """A .bin file that is missing, unsafe, corrupt or inconsistent; one-line message."""


def _numpy_core(submodule):
    """numpy's core submodule, named numpy._core since numpy 2 (core warns there)."""
    try:
        return importlib.import_module('numpy._core.' + submodule)
    except ImportError:
        return importlib.import_module('numpy.core.' + submodule)


class _SafeUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the few globals a .bin needs; refuses the rest."""

    def __init__(self, fileobj, path):
        # encoding='bytes': Python 2 str (the JPEGs) must stay bytes.
        super(_SafeUnpickler, self).__init__(fileobj, encoding='bytes')
        self._path = path

    def find_class(self, module, name):
        found = None
        if module in ('builtins', '__builtin__') and name in _SAFE_BUILTINS:
            found = getattr(builtins, name)
        elif (module, name) == ('_codecs', 'encode'):
            found = codecs.encode  # how Python 3 protocol-2 pickles store bytes
        elif module == 'numpy' and name in ('ndarray', 'dtype'):
            found = getattr(np, name)
        elif module in ('numpy.core.multiarray', 'numpy._core.multiarray',
                        'numpy.core.numeric', 'numpy._core.numeric'):
            submodule = module.rsplit('.', 1)[1]
            if (submodule, name) in _NUMPY_CORE_GLOBALS:
                found = getattr(_numpy_core(submodule), name, None)
        if found is None:
            raise BinFileError('%s: refused to unpickle global %s.%s; a verification .bin '
                               'holds only lists of encoded images and bools'
                               % (self._path, module, name))
        return found


def read_bin(path):
    """Reads the encoded images and pair labels of a .bin file, without decoding.

    Args:
      path: the .bin file.
    Returns:
      (encoded, issame): list of 2P bytes (JPEG/PNG), bool numpy array [P].
    Raises:
      BinFileError: missing, truncated or corrupt file, refused global, wrong
        structure, or len(encoded) != 2 * len(issame).
    """
    try:
        with open(path, 'rb') as bin_file:
            loaded = _SafeUnpickler(bin_file, path).load()
    except BinFileError:
        raise
    except (IOError, OSError) as error:
        raise BinFileError('%s: cannot read: %s' % (path, error.strerror or error))
    except Exception as error:  # pickle raises many types on corrupt input
        raise BinFileError('%s: truncated, corrupt or unsupported pickle (%s: %s)'
                           % (path, type(error).__name__, error))
    if not (isinstance(loaded, (tuple, list)) and len(loaded) == 2):
        raise BinFileError('%s: expected a pickled pair (bins, issame_list), got %s'
                           % (path, type(loaded).__name__))
    bins, issame = loaded
    if len(bins) != 2 * len(issame):
        raise BinFileError('%s: %d images for %d pairs; expected 2 images per pair (%d)'
                           % (path, len(bins), len(issame), 2 * len(issame)))
    encoded = [_as_bytes(item, path, index) for index, item in enumerate(bins)]
    issame = np.asarray(issame)
    if issame.dtype != np.bool_ and not np.isin(issame, (0, 1)).all():
        raise BinFileError('%s: issame_list holds values other than booleans (%s)'
                           % (path, issame.dtype))
    return encoded, issame.astype(bool)


def _as_bytes(item, path, index):
    """One encoded image as bytes, from bytes, bytearray or a uint8 numpy array."""
    if isinstance(item, (bytes, bytearray)):
        return bytes(item)
    if isinstance(item, np.ndarray) and item.dtype == np.uint8 and item.ndim == 1:
        return item.tobytes()
    raise BinFileError('%s: image %d is a %s %s; expected encoded JPEG/PNG bytes or a 1-D '
                       'uint8 array of them' % (path, index, type(item).__name__,
                                                getattr(item, 'shape', '')))


def load_bin(path, image_size=image_ops.DEFAULT_IMAGE_SIZE, batch_size=512):
    """Loads a verification .bin as decoded uint8 BGR images and pair labels.

    Decoding runs in a private graph and session (a tf.data pipeline decoding
    in parallel), so it works with or without eager execution enabled.

    Args:
      path: the .bin file.
      image_size: (height, width) every image must have.
      batch_size: images decoded per session call.
    Returns:
      (images, issame): uint8 numpy array [2P, height, width, 3] in BGR order,
      and a bool numpy array [P]; pair i is images[2i], images[2i + 1].
    Raises:
      BinFileError: see `read_bin`; also an undecodable image or one whose size
        is not `image_size` (naming its index).
    """
    encoded, issame = read_bin(path)
    return decode_images(encoded, image_size, batch_size, path), issame


def decode_images(encoded, image_size=image_ops.DEFAULT_IMAGE_SIZE, batch_size=512,
                  source='images'):
    """Decodes encoded JPEG/PNG images (bytes) to one uint8 BGR array, in parallel.

    Args:
      encoded: list of bytes.
      image_size: (height, width) every image must have.
      batch_size: images decoded per session call.
      source: what the images are, for messages (a .bin path, a folder).
    Returns:
      uint8 numpy array [N, height, width, 3] in BGR order.
    Raises:
      BinFileError: an undecodable image or one whose size is not `image_size`
        (naming `source` and its index).
    """
    path = source
    height, width = image_size
    images = np.empty((len(encoded), height, width, 3), dtype=np.uint8)
    graph = tf.Graph()
    with graph.as_default():
        encoded_ph = tf.placeholder(tf.string, [None])

        def decode(one):
            image = image_ops.decode_image(one)
            size = tf.shape(image)[:2]
            # A wrong-sized image would break batching with an opaque error:
            # swap in zeros and report its size, checked below in numpy.
            fits = tf.reduce_all(tf.equal(size, [height, width]))
            image = tf.cond(fits, lambda: image,
                            lambda: tf.zeros([height, width, 3], tf.uint8))
            image.set_shape([height, width, 3])
            return image, size

        dataset = tf.data.Dataset.from_tensor_slices(encoded_ph).map(
            decode, num_parallel_calls=tf.data.experimental.AUTOTUNE)
        iterator = tf.data.make_initializable_iterator(dataset.batch(batch_size).prefetch(1))
        next_batch = iterator.get_next()
    with tf.Session(graph=graph) as session:
        session.run(iterator.initializer, {encoded_ph: np.array(encoded, dtype=object)})
        done = 0
        while done < len(encoded):
            try:
                batch, sizes = session.run(next_batch)
            except tf.errors.InvalidArgumentError as error:
                raise BinFileError('%s: cannot decode an image among %d..%d: %s' % (
                    path, done, min(done + batch_size, len(encoded)) - 1,
                    error.message.splitlines()[0]))
            wrong = np.flatnonzero((sizes != [height, width]).any(axis=1))
            if wrong.size:
                index = int(wrong[0])
                raise BinFileError('%s: image %d is %dx%d, expected %dx%d (height x width)'
                                   % (path, done + index, sizes[index][0], sizes[index][1],
                                      height, width))
            images[done:done + len(batch)] = batch
            if (done + len(batch)) // LOG_EVERY > done // LOG_EVERY:
                _log.info('%s: decoded %d/%d images', path, done + len(batch), len(encoded))
            done += len(batch)
    return images
