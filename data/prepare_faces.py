"""Turns downloaded face photos into the folder layout the other tools read, at 112x112.

    INPUT/<identity>/<image>.{pgm,jpg,jpeg,png}  ->  OUTPUT/<identity>/<image>.jpg

Each image is, in this order: cropped (--crop x0,y0,x1,y1, pixels, end
exclusive), padded with black to --pad_to (centred), area-resized to --size,
made grey if asked (--grey: three equal channels), and written as a JPEG of
quality 95. How the shared sets were made, for a user rebuilding them from
the official downloads (see docs/data.md):

    # AT&T / ORL: 92x112 PGMs, padded to 112x112
    python3 data/prepare_faces.py --input_dir att_faces --output_dir orl_112 --pad_to 112,112
    # LFW: an aligned 250x250 copy, centre crop, area-resized to 112x112, grey
    python3 data/prepare_faces.py --input_dir lfw --output_dir lfw_112 \\
        --crop 50,50,200,200 --size 112,112 --grey

Binary PGMs (P5, 8 bit: the ORL download) are read here; JPEG and PNG by
TensorFlow. Exit status: 0 done; 2 bad input (one line on stderr naming it).
"""
import argparse
import os
import shutil
import sys

if __name__ == '__main__' and not __package__:  # run as a file: see data/as_module.py
    import as_module
    as_module.rerun_as_module(__file__)

# First: silences TensorFlow's logs before anything below imports it.
from data import quiet  # noqa: E402
import numpy as np  # noqa: E402

from data.image_files import ImageFolderError  # noqa: E402
from data.image_ops import parse_image_size  # noqa: E402
from data.progress import ProgressBar  # noqa: E402
from data.shard_writer import partial_dir_for  # noqa: E402

PROG = 'prepare_faces'
INPUT_EXTENSIONS = ('.pgm', '.jpg', '.jpeg', '.png')
JPEG_QUALITY = 95  # insightface's .rec files and the shared sets use it


def read_pgm(data, path):
    """A binary 8-bit PGM (P5) as uint8 [H, W]; ImageFolderError otherwise."""
    fields, position = [], 2
    if not data.startswith(b'P5'):
        raise ImageFolderError('%s: not a binary PGM (P5)' % path)
    while len(fields) < 3:  # width, height, maxval, with comments and any white space
        while position < len(data) and data[position:position + 1].isspace():
            position += 1
        if data[position:position + 1] == b'#':
            position = data.index(b'\n', position) + 1
            continue
        start = position
        while position < len(data) and data[position:position + 1].isdigit():
            position += 1
        if start == position:
            raise ImageFolderError('%s: malformed PGM header' % path)
        fields.append(int(data[start:position]))
    width, height, maxval = fields
    pixels = data[position + 1:position + 1 + width * height]
    if maxval > 255 or len(pixels) != width * height:
        raise ImageFolderError('%s: expected %dx%d 8-bit pixels' % (path, width, height))
    return np.frombuffer(pixels, np.uint8).reshape(height, width)


class Preparer(object):
    """Decodes, crops, pads, resizes and encodes images in one private graph."""

    def __init__(self, crop=None, pad_to=None, size=None, grey=False):
        import tensorflow.compat.v1 as tf
        self._tf = tf
        self.crop, self.pad_to, self.size, self.grey = crop, pad_to, size, grey
        self._graph = tf.Graph()
        with self._graph.as_default():
            self._encoded = tf.placeholder(tf.string, [])
            self._decoded = tf.image.decode_image(self._encoded, channels=3,
                                                  expand_animations=False)
            self._pixels = tf.placeholder(tf.uint8, [None, None, 3])
            image = tf.cast(self._pixels, tf.float32)
            if size:
                image = tf.image.resize_area(image[tf.newaxis], size)[0]
            self._jpeg = tf.image.encode_jpeg(
                tf.cast(tf.round(tf.clip_by_value(image, 0, 255)), tf.uint8),
                quality=JPEG_QUALITY)
        self._session = tf.Session(graph=self._graph)

    def _decode(self, data, path):
        if path.lower().endswith('.pgm'):
            return np.repeat(read_pgm(data, path)[:, :, np.newaxis], 3, axis=2)
        try:
            return self._session.run(self._decoded, {self._encoded: data})
        except self._tf.errors.OpError:
            raise ImageFolderError('%s: not a decodable JPEG or PNG image' % path)

    def prepare(self, path):
        """The JPEG bytes of one prepared image."""
        with open(path, 'rb') as image_file:
            pixels = self._decode(image_file.read(), path)
        if self.crop:
            x0, y0, x1, y1 = self.crop
            if x1 > pixels.shape[1] or y1 > pixels.shape[0]:
                raise ImageFolderError('%s is %dx%d; --crop %d,%d,%d,%d reaches outside it'
                                       % ((path,) + pixels.shape[:2] + tuple(self.crop)))
            pixels = pixels[y0:y1, x0:x1]
        if self.pad_to:
            height, width = self.pad_to
            if pixels.shape[0] > height or pixels.shape[1] > width:
                raise ImageFolderError('%s is %dx%d, larger than --pad_to %d,%d'
                                       % ((path,) + pixels.shape[:2] + (height, width)))
            top, left = (height - pixels.shape[0]) // 2, (width - pixels.shape[1]) // 2
            padded = np.zeros((height, width, 3), np.uint8)
            padded[top:top + pixels.shape[0], left:left + pixels.shape[1]] = pixels
            pixels = padded
        if self.grey:  # ITU-R 601 luma, as OpenCV's and PIL's grey conversions
            luma = np.round(pixels.astype(np.float64).dot([0.299, 0.587, 0.114]))
            pixels = np.repeat(luma.astype(np.uint8)[:, :, np.newaxis], 3, axis=2)
        return self._session.run(self._jpeg, {self._pixels: pixels})

    def close(self):
        self._session.close()


def prepare_folder(input_dir, output_dir, preparer, progress=False):
    """Prepares every INPUT/<identity>/<image>; returns (identities, images) written.

    progress: show a progress bar over the identity folders on stderr.
    """
    if not os.path.isdir(input_dir):
        raise ImageFolderError('--input_dir %s: no such folder' % input_dir)
    folders = sorted(n for n in os.listdir(input_dir)
                     if not n.startswith('.') and os.path.isdir(os.path.join(input_dir, n)))
    identities = images = 0
    with ProgressBar(len(folders), PROG, unit='identities', enabled=progress) as bar:
        for identity in folders:
            folder = os.path.join(input_dir, identity)
            names = sorted(n for n in os.listdir(folder) if n.lower().endswith(INPUT_EXTENSIONS))
            if names:
                target = os.path.join(output_dir, identity)
                if not os.path.isdir(target):
                    os.makedirs(target)
                for name in names:
                    jpeg = preparer.prepare(os.path.join(folder, name))
                    with open(os.path.join(target, os.path.splitext(name)[0] + '.jpg'),
                              'wb') as out:
                        out.write(jpeg)
                    images += 1
                identities += 1
            bar.update(1)
    if not images:
        raise ImageFolderError('--input_dir %s holds no INPUT/<identity>/<image> with one of %s'
                               % (input_dir, ', '.join(INPUT_EXTENSIONS)))
    return identities, images


def _box(text):
    values = [int(v) for v in text.split(',')]
    if len(values) != 4 or values[0] < 0 or values[1] < 0 or values[2] <= values[0] \
            or values[3] <= values[1]:
        raise ValueError(text)
    return tuple(values)


def get_parser():
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split('\n')[0])
    parser.add_argument('--input_dir', required=True,
                        help='downloaded photos, one sub-folder per person')
    parser.add_argument('--output_dir', required=True,
                        help='new folder for <identity>/<image>.jpg (must not exist)')
    parser.add_argument('--crop', type=_box, default=None, help='x0,y0,x1,y1 to keep first')
    parser.add_argument('--pad_to', type=parse_image_size, default=None,
                        help='height,width to pad to with black, centred')
    parser.add_argument('--size', type=parse_image_size, default=None,
                        help='height,width to area-resize to last')
    parser.add_argument('--grey', action='store_true', help='three equal channels (luma)')
    parser.add_argument('--no_progress', action='store_true',
                        help='no progress bar on stderr (off a terminal: no progress lines)')
    quiet.add_flag(parser)
    return parser


def main(argv=None):
    args = get_parser().parse_args(argv)
    if os.path.exists(args.output_dir):
        sys.stderr.write('%s: error: --output_dir %s exists; give a new folder\n'
                         % (PROG, args.output_dir))
        return 2
    # Written beside it, renamed at the end: a failed run leaves no half-made folder.
    partial = partial_dir_for(args.output_dir)
    shutil.rmtree(partial, ignore_errors=True)
    preparer = Preparer(args.crop, args.pad_to, args.size, args.grey)
    try:
        identities, images = prepare_folder(args.input_dir, partial, preparer,
                                            progress=not args.no_progress)
        os.rename(partial, args.output_dir)
    except (ImageFolderError, OSError) as error:
        sys.stderr.write('%s: error: %s\n' % (PROG, error))
        return 2
    finally:
        preparer.close()
        shutil.rmtree(partial, ignore_errors=True)
    sys.stderr.write('%s: wrote %d images of %d identities to %s\n'
                     % (PROG, images, identities, args.output_dir))
    return 0


if __name__ == '__main__':
    sys.exit(main())
