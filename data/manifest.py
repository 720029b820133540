"""The manifest of a TFRecord conversion: shard names, counts, and how to read it back.

`data/mx2tfrecords.py` writes `manifest.json` last, after every shard is in
place, so a folder with a manifest is a complete conversion and a folder
without one is not. The training input pipeline calls `load_manifest` to get
the shard paths, the number of images and classes, and the image size.

manifest.json fields:
    format: 'insightface-tfrecords'; version: 1
    num_images: int; num_classes: int; image_size: [height, width]
    features: {'image_raw': 'bytes', 'label': 'int64'} (tf.train.Example keys)
    shards: [{'file': 'train-00000-of-00008.tfrecord', 'num_images': int,
              'size_bytes': int}, ...] in key order
    source: {'rec_path', 'idx_path', 'property_path' (or null)}
    skipped: what --skip_bad left out, [{'key', 'byte_offset', 'problem'}] (a .rec)
             or [{'file', 'problem'}] (a folder); [] when nothing was

Typical use:
    manifest = load_manifest('datasets/faces_emore_tfrecords')
    dataset = tf.data.TFRecordDataset(manifest['shard_paths'])
"""
import json
import os
import re

MANIFEST_NAME = 'manifest.json'
FORMAT = 'insightface-tfrecords'
VERSION = 1
FEATURES = {'image_raw': 'bytes', 'label': 'int64'}
_SHARD_NAME = 'train-%05d-of-%05d.tfrecord'
_SHARD_RE = re.compile(r'^train-\d{5}-of-\d{5}\.tfrecord$')
_HOW_TO = ('make one with: python3 data/mx2tfrecords.py --bin_path .../train.rec '
           '--idx_path .../train.idx --tfrecords_file_path %s')
ORIGINAL_FILE_NAME = 'tran.tfrecords'  # the original InsightFace_TF's one file, no manifest


class ManifestError(ValueError):
    """A missing, incomplete or inconsistent TFRecord folder; one-line message."""


def shard_file_name(index, num_shards):
    """'train-00003-of-00008.tfrecord' for index 3 of 8 shards."""
    return _SHARD_NAME % (index, num_shards)


def is_shard_file_name(name):
    """True for names made by `shard_file_name` (used to clear stale shards)."""
    return bool(_SHARD_RE.match(name))


def write_manifest(directory, manifest):
    """Writes `manifest` (a JSON-able dict) as directory/manifest.json; returns the path."""
    path = os.path.join(directory, MANIFEST_NAME)
    with open(path, 'w') as out:
        json.dump(manifest, out, indent=2, sort_keys=True)
        out.write('\n')
    return path


def load_manifest(tfrecords_dir):
    """Reads and checks the manifest of a converted dataset.

    Args:
      tfrecords_dir: folder written by data/mx2tfrecords.py.
    Returns:
      The manifest dict (fields in the module docstring) plus 'shard_paths': the
      absolute shard paths in key order.
    Raises:
      ManifestError: folder missing or empty, no/invalid manifest, or a shard
        missing or of the wrong size. The message says how to make the folder.
    """
    how_to = _HOW_TO % tfrecords_dir
    if not os.path.isdir(tfrecords_dir):
        raise ManifestError('TFRecord folder %s does not exist; %s' % (tfrecords_dir, how_to))
    path = os.path.join(tfrecords_dir, MANIFEST_NAME)
    if not os.listdir(tfrecords_dir):
        raise ManifestError('TFRecord folder %s is empty; %s' % (tfrecords_dir, how_to))
    if not os.path.isfile(path):
        if os.path.isfile(os.path.join(tfrecords_dir, ORIGINAL_FILE_NAME)):
            raise ManifestError('TFRecord folder %s holds %s, the original InsightFace_TF\'s '
                                'single file; this trainer reads shards with a %s (image '
                                'count, identities, size); %s'
                                % (tfrecords_dir, ORIGINAL_FILE_NAME, MANIFEST_NAME, how_to))
        raise ManifestError('TFRecord folder %s has no %s (no conversion, or an '
                            'interrupted one); %s' % (tfrecords_dir, MANIFEST_NAME, how_to))
    try:
        with open(path) as manifest_file:
            manifest = json.load(manifest_file)
    except ValueError as error:
        raise ManifestError('%s is not valid JSON (%s); %s' % (path, error, how_to))
    _check_fields(path, manifest, how_to)
    shard_paths = []
    for shard in manifest['shards']:
        shard_path = os.path.join(os.path.abspath(tfrecords_dir), shard['file'])
        if not os.path.isfile(shard_path):
            raise ManifestError('%s lists shard %s, which is missing; %s'
                                % (path, shard['file'], how_to))
        size = os.path.getsize(shard_path)
        if size != shard['size_bytes']:
            raise ManifestError('%s: shard %s has %d bytes, the manifest says %d; %s'
                                % (path, shard['file'], size, shard['size_bytes'], how_to))
        shard_paths.append(shard_path)
    manifest['shard_paths'] = shard_paths
    return manifest


def _check_fields(path, manifest, how_to):
    """Raises ManifestError unless the manifest has the fields and counts we write."""
    problem = None
    if not isinstance(manifest, dict) or manifest.get('format') != FORMAT:
        problem = 'format is not %r' % FORMAT
    elif manifest.get('version') != VERSION:
        problem = 'version %r, expected %d' % (manifest.get('version'), VERSION)
    else:
        for field in ('num_images', 'num_classes', 'image_size', 'shards'):
            if field not in manifest:
                problem = 'field %r is missing' % field
                break
    if problem is None:
        shards = manifest['shards']
        if not shards or not all(isinstance(s, dict) and is_shard_file_name(
                str(s.get('file'))) and 'num_images' in s and 'size_bytes' in s
                                  for s in shards):
            problem = 'shards must be a non-empty list of {file, num_images, size_bytes}'
        elif sum(s['num_images'] for s in shards) != manifest['num_images']:
            problem = 'shard counts add up to %d, num_images is %d' % (
                sum(s['num_images'] for s in shards), manifest['num_images'])
    if problem is not None:
        raise ManifestError('%s: %s; %s' % (path, problem, how_to))
