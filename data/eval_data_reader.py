"""Loads insightface verification sets (lfw.bin, cfp_fp.bin, agedb_30.bin, ...).

A `.bin` file is a Python 2 pickle of `(bins, issame_list)`: `bins` holds
2 * P encoded JPEG/PNG images (pair i is bins[2i], bins[2i+1]) and
`issame_list` P bools. Some variants store each image as a numpy uint8 array
of the encoded bytes, or the lists as numpy arrays.

Pickles can run arbitrary code while loading, so the file is read with an
unpickler that only resolves the globals such files need (set/frozenset/
bytearray, `_codecs.encode` which Python 3 protocol-2 pickles use for bytes,
and numpy's array/dtype/scalar reconstructors); any other global is refused
before anything is called. What those may allocate is bounded in proportion to
the file's size (ALLOCATION_PER_BYTE): a 33-byte pickle of bytearray(2**29)
is refused before it takes 512 MB.

Images are decoded by `data.image_ops.decode_image`, the function the training
input uses, so both see the same BGR pixels. `distinct_images` finds the
images a set repeats.

Typical use:
    images, issame = load_bin('datasets/faces_emore/lfw.bin')
    # images: uint8 [N, 112, 112, 3] BGR; issame: bool [N / 2]
"""
import builtins
import codecs
import hashlib
import importlib
import io
import logging
import pickle

import numpy as np
import tensorflow.compat.v1 as tf

from data import image_ops

LOG_EVERY = 1000  # images between progress log lines
# insightface's protocol scores a .bin in 10 folds of consecutive pairs (verification.py);
# make_pairs.py lays its pairs out for them.
NROF_FOLDS = 10

_log = logging.getLogger(__name__)

# What a .bin may reference. Python 2 pickles say __builtin__ for builtins;
# numpy 2 writes numpy._core.* where numpy 1 wrote numpy.core.*.
_SAFE_BUILTINS = frozenset(['set', 'frozenset', 'bytearray'])
_NUMPY_CORE_GLOBALS = frozenset([('multiarray', '_reconstruct'), ('multiarray', 'scalar'),
                                 ('numeric', '_frombuffer')])
# Bytes the allowed globals may allocate per byte of .bin, in all. A real .bin
# needs at most ~2: each image's bytes are made once from the pickle's text
# (_codecs.encode) and, in the numpy variant, copied once into an array.
ALLOCATION_PER_BYTE = 4
ALLOCATION_SLACK = 1 << 16  # plus this much, for tiny files
_LATIN1 = ('latin1', 'latin-1')  # the only encoding protocol-2 pickles use for bytes


class BinFileError(ValueError):
    """A .bin file that is missing, unsafe, corrupt or inconsistent; one-line message."""


def _numpy_core(submodule):
    """numpy's core submodule, named numpy._core since numpy 2 (core warns there)."""
    try:
        return importlib.import_module('numpy._core.' + submodule)
    except ImportError:
        return importlib.import_module('numpy.core.' + submodule)


def _nbytes(shape, dtype):
    """Bytes of an array of `shape` and `dtype`, counted in Python ints (no overflow)."""
    count = 1
    for dim in (shape if isinstance(shape, (tuple, list)) else (shape,)):
        count *= max(int(dim), 0)
    return count * np.dtype(dtype).itemsize


# pylint: disable=protected-access
class _SafeUnpickler(pickle._Unpickler):
    """Unpickler that resolves only the few globals a .bin needs, within a memory budget.

    The pure-Python unpickler, not the C one: its BUILD step can be checked
    before numpy sizes an array, and its memo is a dict (the C memo is an array
    that one huge memo index would grow). It reads from memory, so a length
    field claiming gigabytes allocates nothing: the read just comes up short.
    """

    dispatch = dict(pickle._Unpickler.dispatch)

    def __init__(self, data, path):
        # encoding='bytes': Python 2 str (the JPEGs) must stay bytes.
        super(_SafeUnpickler, self).__init__(io.BytesIO(data), encoding='bytes')
        self._path = path
        self._size = len(data)
        self._budget = ALLOCATION_PER_BYTE * len(data) + ALLOCATION_SLACK
        # Stands in for numpy.ndarray: a class would let NEWOBJ size an array unchecked.
        self._ndarray = self._new_ndarray

    def _allocate(self, nbytes, what):
        """Charges `nbytes` to the budget, or refuses the file before they are taken."""
        if nbytes > self._budget:
            raise BinFileError('%s: refused: %s asks for %d bytes, more than the %d left of '
                               'what a %d-byte .bin may allocate (%d per byte + %d); a '
                               'verification .bin holds only its images\' bytes'
                               % (self._path, what, nbytes, self._budget, self._size,
                                  ALLOCATION_PER_BYTE, ALLOCATION_SLACK))
        self._budget -= nbytes

    def _bytearray(self, *args):
        if args and isinstance(args[0], int):  # bytearray(n): n zero bytes
            self._allocate(args[0], 'bytearray(%d)' % args[0])
            return bytearray(*args)
        result = bytearray(*args)  # from the pickle's own bytes: no bigger than the file
        self._allocate(len(result), 'a bytearray')
        return result

    def _encode(self, text, encoding='utf-8', errors='strict'):
        # Other codecs expand (hex doubles): nested calls would grow without bound.
        if not isinstance(text, str) or encoding not in _LATIN1:
            raise BinFileError('%s: refused _codecs.encode of a %s with encoding %r; a .bin '
                               'uses it only for bytes (a str, latin1)'
                               % (self._path, type(text).__name__, encoding))
        self._allocate(len(text), 'a byte string')
        return codecs.encode(text, encoding, errors)

    def _new_ndarray(self, shape, dtype=float, *args, **kwargs):
        nbytes = _nbytes(shape, dtype)
        self._allocate(nbytes, 'an array of %d bytes' % nbytes)
        return np.ndarray(shape, dtype, *args, **kwargs)

    def _reconstruct(self, subtype, shape, dtype):
        if subtype is not self._ndarray:
            raise BinFileError('%s: refused to reconstruct a %s; a .bin holds numpy arrays '
                               'only' % (self._path, type(subtype).__name__))
        nbytes = _nbytes(shape, dtype)
        self._allocate(nbytes, 'an array of %d bytes' % nbytes)
        return _numpy_core('multiarray')._reconstruct(np.ndarray, shape, dtype)

    def _scalar(self, dtype, *args):
        self._allocate(np.dtype(dtype).itemsize, 'a numpy scalar')
        return _numpy_core('multiarray').scalar(dtype, *args)

    def _frombuffer(self, buf, dtype, shape, order):
        self._allocate(len(buf), 'an array from a buffer')
        return _numpy_core('numeric')._frombuffer(buf, dtype, shape, order)

    def _load_build(self):
        """BUILD: an array's state (shape, dtype, data) is charged before numpy sizes it."""
        state, inst = self.stack[-1], self.stack[-2]
        if isinstance(inst, np.ndarray) and isinstance(state, tuple) and len(state) >= 4:
            nbytes = _nbytes(state[-4], state[-3])  # (version,) shape, dtype, fortran, data
            self._allocate(nbytes, 'an array of %d bytes' % nbytes)
        pickle._Unpickler.load_build(self)

    dispatch[pickle.BUILD[0]] = _load_build

    def find_class(self, module, name):
        found = None
        if module in ('builtins', '__builtin__') and name in _SAFE_BUILTINS:
            found = self._bytearray if name == 'bytearray' else getattr(builtins, name)
        elif (module, name) == ('_codecs', 'encode'):
            found = self._encode  # how Python 3 protocol-2 pickles store bytes
        elif module == 'numpy' and name in ('ndarray', 'dtype'):
            found = self._ndarray if name == 'ndarray' else np.dtype
        elif module in ('numpy.core.multiarray', 'numpy._core.multiarray',
                        'numpy.core.numeric', 'numpy._core.numeric'):
            submodule = module.rsplit('.', 1)[1]
            if (submodule, name) in _NUMPY_CORE_GLOBALS:
                found = {'_reconstruct': self._reconstruct, 'scalar': self._scalar,
                         '_frombuffer': self._frombuffer}[name]
        if found is None:
            raise BinFileError('%s: refused to unpickle global %s.%s; a verification .bin '
                               'holds only lists of encoded images and bools'
                               % (self._path, module, name))
        return found
# pylint: enable=protected-access


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
            data = bin_file.read()  # the images are kept anyway: no more than twice the file
        loaded = _SafeUnpickler(data, path).load()
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


def distinct_images(images):
    """Finds the byte-identical images of a set (orl_val.bin's 900 rows hold 50).

    The protocol embeds each distinct image once (verification.embed_images),
    and the error report counts it as one image (evaluation/pair_errors.py).

    Args:
      images: array [N, ...].
    Returns:
      (rows, inverse): int64 [K] the first row of each distinct image, in order
      of appearance, and int64 [N] the position in `rows` of each row's image,
      so that images[rows][inverse] equals images.
    """
    position, rows = {}, []
    inverse = np.empty(len(images), np.int64)
    for row, image in enumerate(images):
        key = hashlib.sha1(np.ascontiguousarray(image).tobytes()).digest()
        if key not in position:
            position[key] = len(rows)
            rows.append(row)
        inverse[row] = position[key]
    return np.array(rows, np.int64), inverse
