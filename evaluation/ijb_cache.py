"""The features cache of eval_ijb.py: the raw embeddings of every image of a release and
of its mirror, with what they belong to, so that a second evaluation skips the network.

An .npz (uncompressed) holding

    embeddings, flipped_embeddings   float32 [N, D], in the 5pts file's order
    model, model_kind, model_sha256  the checkpoint prefix (or .pb / .onnx file), its kind,
                                     the SHA-256 of its .index file (or of the file)
    target, ijb_root                 'IJBC' or 'IJBB', and the release folder
    images_sha256, num_images        the SHA-256 of the image list (names and landmarks)
    net_input_size                   'H,W' the network ran at ('' for a model file)
    format                           FORMAT

A cache is reused when model_sha256, target, images_sha256 and net_input_size equal this
run's; the path of the checkpoint and of the release may differ (a copied folder).
The protocol's flags (--flip, --norm_score, --detector_score) are applied to the cached
embeddings, so they never invalidate it. Another checkpoint's or image list's cache is
refused (--overwrite replaces it, if eval_ijb.py wrote it). It is written atomically:
a staging folder beside it, then data.safe_files.move_into_place, then the writer's record.

Typical use:
    identity = Identity(...)
    if check(path, identity, overwrite) == REUSE:
        embeddings, flipped = load(path, identity)
"""
import collections
import hashlib
import os
import shutil
import tempfile
import zipfile

import numpy as np

from data.cli import UsageError
from data.safe_files import check_output, move_into_place, write_record

FORMAT = 'eval_ijb.py features cache 1'
WRITER = 'eval_ijb.py'  # the writer safe_files records
REUSE, WRITE = 'reuse', 'write'
EMBEDDINGS, FLIPPED = 'embeddings', 'flipped_embeddings'
_IDENTITY_KEYS = ('model_sha256', 'target', 'images_sha256', 'net_input_size')

Identity = collections.namedtuple('Identity', [
    'model', 'model_kind', 'model_sha256', 'target', 'ijb_root', 'images_sha256',
    'num_images', 'net_input_size'])


def images_sha256(meta):
    """SHA-256 of the image list the embeddings follow: each name and its landmarks."""
    digest = hashlib.sha256()
    for name, landmarks in zip(meta.image_names, meta.landmarks):
        digest.update(name.encode('utf-8') + b'\0')
        digest.update(np.asarray(landmarks, '<f4').tobytes())
    return digest.hexdigest()


def _short(sha):
    return sha[:12]


def _read_identity(path):
    """The Identity a cache file records, and the shapes of its two arrays."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            if str(npz['format']) != FORMAT:
                raise ValueError('format %r' % str(npz['format']))
            identity = Identity(*[str(npz[key]) if key != 'num_images' else int(npz[key])
                                  for key in Identity._fields])
        shapes = _array_shapes(path, (EMBEDDINGS, FLIPPED))
    except (IOError, OSError, ValueError, KeyError, zipfile.BadZipFile) as error:
        raise UsageError('--features_cache %s is not a features cache of eval_ijb.py (%s); '
                         'move it away or choose another file' % (path, error))
    return identity, shapes


def _array_shapes(path, names):
    """{name: shape} of arrays of an .npz, read from their headers (no data loaded)."""
    shapes = {}
    with zipfile.ZipFile(path) as archive:
        for name in names:
            with archive.open(name + '.npy') as member:
                version = np.lib.format.read_magic(member)
                read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                        else np.lib.format.read_array_header_2_0)
                shapes[name] = read(member)[0]
    return shapes


def _mismatch(path, cached, identity):
    """The one-line refusal of a cache made by another model or of other images."""
    if cached.model_sha256 != identity.model_sha256:
        what = ('the %s %s (sha256 %s...)' % (cached.model_kind, cached.model,
                                            _short(cached.model_sha256)),
                'the %s %s (sha256 %s...)' % (identity.model_kind, identity.model,
                                            _short(identity.model_sha256)))
    elif (cached.target, cached.images_sha256) != (identity.target, identity.images_sha256):
        what = ('the %s image list of %s (%d images, sha256 %s...)'
                % (cached.target, cached.ijb_root, cached.num_images,
                   _short(cached.images_sha256)),
                'the %s image list of %s (%d images, sha256 %s...)'
                % (identity.target, identity.ijb_root, identity.num_images,
                   _short(identity.images_sha256)))
    else:
        what = ('network input %s' % cached.net_input_size,
                'network input %s' % identity.net_input_size)
    return ('--features_cache %s holds the embeddings of %s, not of %s; choose another file, '
            'or pass --overwrite to replace it' % (path, what[0], what[1]))


def check(path, identity, overwrite):
    """REUSE if `path` is this identity's cache, WRITE if it is to be (re)written.

    Raises:
      UsageError: not a cache, or the cache of another model or image list (without
        overwrite); a cache whose arrays do not match its image count.
      OutputError: with overwrite, a file eval_ijb.py did not write or that changed.
    """
    if not os.path.lexists(path):
        return WRITE
    cached, shapes = _read_identity(path)
    if all(getattr(cached, key) == getattr(identity, key) for key in _IDENTITY_KEYS):
        first = shapes[EMBEDDINGS]
        if (len(first) != 2 or first[0] != identity.num_images
                or shapes[FLIPPED] != first):
            raise UsageError('--features_cache %s holds arrays of shapes %s and %s for %d '
                             'images; move it away or choose another file'
                             % (path, first, shapes[FLIPPED], identity.num_images))
        return REUSE
    if not overwrite:
        raise UsageError(_mismatch(path, cached, identity))
    check_output(path, WRITER, '--features_cache', overwrite)
    return WRITE


def load(path):
    """(embeddings, flipped_embeddings) float32 [N, D] of a cache check() accepted."""
    with np.load(path, allow_pickle=False) as npz:
        return npz[EMBEDDINGS], npz[FLIPPED]



def write(path, identity, embeddings, flipped, overwrite):
    """Writes the cache atomically and records eval_ijb.py as its writer."""
    check_output(path, WRITER, '--features_cache', overwrite)
    folder = os.path.dirname(os.path.abspath(path))
    name = os.path.basename(path)
    staging = tempfile.mkdtemp(prefix='.features-', dir=folder)
    try:
        with open(os.path.join(staging, name), 'wb') as out:
            fields = dict((key, np.array(value)) for key, value in identity._asdict().items())
            np.savez(out, format=np.array(FORMAT), **dict(fields, **{
                EMBEDDINGS: np.asarray(embeddings, np.float32),
                FLIPPED: np.asarray(flipped, np.float32)}))
        move_into_place(staging, folder, [name])
        write_record(path, WRITER)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
