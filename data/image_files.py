"""Folders of face images, one folder per person: listing them and checking each image.

The layout users of face trainers keep their own data in, and what
folder2tfrecords.py, make_pairs.py and extract_features.py read:

    DIR/<identity>/<image>.jpg|.jpeg|.png

Identities are the sub-folders in sorted order (label i is the i-th name);
images within one are sorted by file name. Hidden entries are skipped.

`ImageChecker` decodes every image (a header is not enough: a JPEG with a
broken body has a good header) with the decoder training uses
(data.image_ops.decode_image), reports its size, and re-encodes it at
another size when asked. data/mx2tfrecords.py checks a .rec's payloads with
it too (`decoded_sizes`, CHECK_BATCH images per session call).

Typical use:
    identities = scan_identities('my_faces')            # [(name, [paths])]
    checker = ImageChecker(resize_to=(112, 112))
    payload, size = checker.check(path)                 # JPEG/PNG bytes, (h, w) read
"""
import contextlib
import os
import sys

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png')
RESIZED_JPEG_QUALITY = 95  # re-encoded images: what insightface's own .rec files use
# Images decoded per session call by decoded_sizes: a call costs ~0.3 ms, more than
# decoding a 112x112 JPEG, so batches cut the check of a .rec from ~0.4 to ~0.1 ms an image.
CHECK_BATCH = 256


def add_image_dir_flags(parser):
    """--image_dir, --image_size and --resize of the tools that read folders of faces."""
    from data.image_ops import parse_image_size
    parser.add_argument('--image_dir', required=True,
                        help='folder with one sub-folder of .jpg/.jpeg/.png images per person')
    parser.add_argument('--image_size', type=parse_image_size, default=None,
                        help='height,width every image must have (or is resized to, with '
                             '--resize); default: the first image\'s size')
    parser.add_argument('--resize', action='store_true',
                        help='re-encode images of another size at --image_size (bilinear, '
                             'JPEG quality %d) instead of refusing them' % RESIZED_JPEG_QUALITY)


class ImageFolderError(ValueError):
    """A folder or image that cannot be used; the message is one line naming it."""


def _visible(names):
    return sorted(name for name in names if not name.startswith('.'))


def is_image_file(name):
    return name.lower().endswith(IMAGE_EXTENSIONS)


def scan_identities(image_dir):
    """The identities of `image_dir` and their image files.

    Returns:
      [(identity name, [image paths, sorted])], sorted by name.
    Raises:
      ImageFolderError: no such folder, no identity folders, or an identity
        folder without a .jpg/.jpeg/.png image.
    """
    if not os.path.isdir(image_dir):
        raise ImageFolderError('--image_dir %s: no such folder; expected DIR/<identity>/'
                               '<image>.jpg' % image_dir)
    names = [name for name in _visible(os.listdir(image_dir))
             if os.path.isdir(os.path.join(image_dir, name))]
    if not names:
        raise ImageFolderError('--image_dir %s holds no identity folders; expected '
                               'DIR/<identity>/<image>.jpg, one folder per person' % image_dir)
    identities = []
    for name in names:
        folder = os.path.join(image_dir, name)
        files = [os.path.join(folder, f) for f in _visible(os.listdir(folder))
                 if is_image_file(f) and os.path.isfile(os.path.join(folder, f))]
        if not files:
            raise ImageFolderError('%s holds no image (%s); remove the folder or add its '
                                   'images' % (folder, ', '.join(IMAGE_EXTENSIONS)))
        identities.append((name, files))
    return identities


def list_images(image_dir):
    """Every image under `image_dir` (any depth), sorted; raises ImageFolderError if none."""
    if not os.path.isdir(image_dir):
        raise ImageFolderError('--image_dir %s: no such folder' % image_dir)
    found = []
    for root, dirs, files in os.walk(image_dir):
        dirs[:] = _visible(dirs)
        found.extend(os.path.join(root, f) for f in _visible(files) if is_image_file(f))
    if not found:
        raise ImageFolderError('--image_dir %s holds no image (%s)'
                               % (image_dir, ', '.join(IMAGE_EXTENSIONS)))
    return sorted(found)


@contextlib.contextmanager
def _libjpeg_silenced():
    """Sends file descriptor 2 to /dev/null: libjpeg prints its own line for a broken
    JPEG ("Input file read error") before TensorFlow raises; the caller reports it once."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, 'w') as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _decoded_sizes_graph(tf, encoded):
    """int32 [N, 2]: (height, width) of each image of a string [N] tensor, decoded in a loop.

    One decoder in the graph, however large the batch: 64 side by side took
    ~1 s to build and run once, a tenth of a small conversion. The decoder is
    the training one without its channel reversal (image_ops.decode_rgb).
    """
    from data import image_ops
    count = tf.shape(encoded)[0]

    def step(index, sizes):
        size = tf.shape(image_ops.decode_rgb(encoded[index]))[:2]
        return index + 1, sizes.write(index, size)

    _, sizes = tf.while_loop(lambda index, _: index < count, step,
                             [tf.constant(0), tf.TensorArray(tf.int32, size=count)],
                             back_prop=False)
    return tf.reshape(sizes.stack(), [-1, 2])  # [0, 2] for an empty batch


class ImageChecker(object):
    """Decodes images to check them, and re-encodes them at `resize_to` when they differ.

    One private graph and session (TensorFlow 1.15 and 2.x alike); one process
    may hold one checker. Decoding is data.image_ops.decode_image, the
    training decoder, so an image that passes here decodes in training.
    """

    def __init__(self, resize_to=None):
        import tensorflow.compat.v1 as tf  # a parent that only lists files never pays for it
        from data import image_ops
        self._tf = tf
        self._resize_to = tuple(resize_to) if resize_to else None
        self._graph = tf.Graph()
        with self._graph.as_default():
            self._encoded = tf.placeholder(tf.string, [])
            bgr = image_ops.decode_image(self._encoded)
            self._size = tf.shape(bgr)[:2]
            self._resized = None
            if self._resize_to:
                resized = tf.image.resize_images(tf.cast(bgr, tf.float32), self._resize_to,
                                                 method=tf.image.ResizeMethod.BILINEAR)
                rgb = tf.reverse(tf.cast(tf.round(tf.clip_by_value(resized, 0, 255)),
                                         tf.uint8), axis=[-1])
                self._resized = tf.image.encode_jpeg(rgb, quality=RESIZED_JPEG_QUALITY)
            self._batch = self._batch_sizes = None  # built on first use: decoded_sizes
        self._session = tf.Session(graph=self._graph)

    def _decoded_size(self, data):
        """(height, width) of one encoded image, or None if it does not decode."""
        try:
            with _libjpeg_silenced():
                return tuple(int(v) for v in self._session.run(self._size,
                                                               {self._encoded: data}))
        except self._tf.errors.OpError:
            return None

    def decoded_sizes(self, payloads):
        """(height, width) of each encoded image (bytes), None for one that does not decode.

        Decodes CHECK_BATCH images per session call; a batch holding a bad image
        is decoded again one by one to tell which.
        """
        if self._batch is None:
            with self._graph.as_default():
                self._batch = self._tf.placeholder(self._tf.string, [None])
                self._batch_sizes = _decoded_sizes_graph(self._tf, self._batch)
        sizes = []
        for start in range(0, len(payloads), CHECK_BATCH):
            chunk = list(payloads[start:start + CHECK_BATCH])
            try:
                with _libjpeg_silenced():
                    found = self._session.run(self._batch_sizes, {self._batch: chunk})
                sizes.extend((int(h), int(w)) for h, w in found)
            except self._tf.errors.OpError:
                sizes.extend(self._decoded_size(data) for data in chunk)
        return sizes

    def check(self, path, expected=None, expected_as='like the others'):
        """(payload bytes for the dataset, (height, width) as read) of one image file.

        Args:
          path: the image file.
          expected: (height, width) the image must have unless the checker
            resizes; None: any.
          expected_as: what `expected` is, for the message.
        Raises:
          ImageFolderError: unreadable file, not a decodable JPEG or PNG, or not
            of the expected size.
        """
        try:
            with open(path, 'rb') as image_file:
                data = image_file.read()
        except (IOError, OSError) as error:
            raise ImageFolderError('%s: cannot read (%s)' % (path, error.strerror or error))
        size = self._decoded_size(data)
        if size is None:
            raise ImageFolderError('%s: not a decodable JPEG or PNG image' % path)
        if self._resize_to and size != self._resize_to:
            data = self._session.run(self._resized, {self._encoded: data})
        elif expected is not None and size != tuple(expected):
            raise ImageFolderError('%s is %dx%d, expected %dx%d (height x width) %s; pass '
                                   '--resize to re-encode images of another size'
                                   % ((path,) + size + tuple(expected) + (expected_as,)))
        return data, size

    def close(self):
        self._session.close()
