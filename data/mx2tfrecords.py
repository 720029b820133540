"""Converts an MXNet RecordIO face dataset (insightface's train.rec/.idx) to TFRecord shards.

Each tf.train.Example holds
    image_raw: bytes, the record's JPEG/PNG payload unchanged (never re-encoded)
    label:     int64, the IRHeader label (its first element for a label array)
Shards `train-00000-of-00008.tfrecord` hold contiguous ranges of image keys in
key order; `manifest.json` describes them (see data/manifest.py, which also
reads it back for the training input pipeline).

Usage, from the project root:
    python3 data/mx2tfrecords.py --bin_path datasets/faces_emore/train.rec \\
        --idx_path datasets/faces_emore/train.idx \\
        --tfrecords_file_path datasets/faces_emore_tfrecords --num_workers 4

Shards (--num_shards): by default one per GiB of .rec (faces_emore: ~60), never
fewer than workers, never more than images. Workers (--num_workers, default
min(4, CPUs)) each convert a contiguous run of shards (a contiguous key range);
with one worker everything runs in this process. Progress goes to stderr.
Output is atomic, and a folder that already has a manifest is only replaced
with --overwrite (data/shard_writer.py, shared with folder2tfrecords.py).

Every image is decoded in the workers (data.image_files.ImageChecker, the
training decoder; a JPEG header alone says nothing of its body) and its size
compared with the `property` file's (or, without one, the first image's). A bad
image stops the conversion naming key and byte offset; --skip_bad leaves it
out instead and lists it (stderr, manifest.json "skipped").

Exit status: 0 done; 2 bad input or output (one line on stderr naming file,
key and byte offset); 130 interrupted.
"""
import argparse
import collections
import itertools
import math
import os
import struct
import sys

if __name__ == '__main__' and not __package__:  # run as a file: see data/as_module.py
    import as_module
    as_module.rerun_as_module(__file__)

# First: silences TensorFlow's logs before anything below imports it.
from data import quiet  # noqa: E402
from data import manifest as manifest_lib  # noqa: E402
from data import recordio, recordio_reader  # noqa: E402
from data.image_files import CHECK_BATCH, ImageChecker  # noqa: E402
from data.shard_records import ConversionError, write_records  # noqa: E402
from data.shard_writer import (  # noqa: E402
    add_writer_flags, check_output, manifest_fields, partial_dir_for, run_converter,
    skipped_report, write_dataset)

JPEG_SIGNATURE = b'\xff\xd8\xff'
PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'
SHARD_BYTES = 1 << 30  # default shard size: large files, few open handles
PROPERTY_NAME = 'property'  # insightface's "num_classes,height,width" file
# JPEG start-of-frame markers (they carry the size); C4, C8, CC are not frames.
_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}

# image_size: what every image must decode to; size_source: who says so, for messages.
_ShardTask = collections.namedtuple(
    '_ShardTask', 'rec_path idx_path begin end path image_size size_source skip_bad')
_SKIP_HINT = '; pass --skip_bad to leave such images out'
__all__ = ['convert', 'main', 'ConversionError', 'partial_dir_for']


def convert(rec_path, idx_path, out_dir, num_shards=None, num_workers=1,
            overwrite=False, progress=True, skip_bad=False):
    """Converts the images of an indexed .rec file to TFRecord shards plus a manifest.

    Args:
      rec_path, idx_path: the MXNet RecordIO files.
      out_dir: output folder (created if needed).
      num_shards: number of shards; None picks one per GiB of .rec, at least
        `num_workers`. Capped by the number of images.
      num_workers: processes converting shards in parallel; 1 converts here.
      overwrite: replace a complete conversion already in `out_dir`.
      progress: True: a progress line on stderr; False: none; or an object with
        update(done, final=False) (see data.shard_writer.write_dataset).
      skip_bad: leave out (and list in the manifest's `skipped`) images that are
        not JPEG/PNG, do not decode or are not of the dataset's size.
    Returns:
      The manifest dict written to out_dir/manifest.json.
    Raises:
      RecordIOError: missing file, bad record, no images; without skip_bad an
        image that is not JPEG/PNG, does not decode or has another size.
      ConversionError: bad arguments, output exists, bad property file.
    """
    out_dir = os.path.abspath(out_dir)
    if num_workers < 1 or (num_shards is not None and num_shards < 1):
        raise ConversionError('num_workers %r and num_shards %r: expected positive '
                              'integers' % (num_workers, num_shards))
    check_output(out_dir, overwrite)
    with recordio_reader.IndexedRecordReader(rec_path, idx_path) as reader:
        num_images = reader.num_images
        if not num_images:
            raise recordio.RecordIOError(rec_path, 'no image records to convert')
        prop = _read_property(rec_path)
        image_size = prop['image_size'] if prop else _first_image_size(reader)
    size_source = '%s says' % prop['path'] if prop else 'the first image is'
    if num_shards is None:
        num_shards = max(num_workers, int(math.ceil(os.path.getsize(rec_path)
                                                    / float(SHARD_BYTES))))
    num_shards = min(num_shards, num_images)

    def make_tasks(temp_dir):
        return [_ShardTask(rec_path, idx_path, index * num_images // num_shards,
                           (index + 1) * num_images // num_shards,
                           os.path.join(temp_dir, manifest_lib.shard_file_name(index,
                                                                               num_shards)),
                           tuple(image_size), size_source, skip_bad)
                for index in range(num_shards)]

    def describe(results):
        return _manifest(rec_path, idx_path, prop, image_size, results)

    return write_dataset(out_dir, make_tasks, _convert_shard, num_workers, num_images,
                         describe, progress=progress)


def _read_property(rec_path):
    """Reads insightface's `property` file beside the .rec; None if there is none."""
    path = os.path.join(os.path.dirname(os.path.abspath(rec_path)), PROPERTY_NAME)
    if not os.path.isfile(path):
        return None
    with open(path) as prop_file:
        text = prop_file.read().strip()
    try:
        values = [int(v) for v in text.split(',')]
    except ValueError:
        values = []
    if len(values) != 3 or min(values) <= 0:
        raise ConversionError('%s: %r is not "num_classes,height,width" (three positive '
                              'integers)' % (path, text))
    return {'path': path, 'num_classes': values[0], 'image_size': values[1:]}


def _first_image_size(reader):
    """[height, width] of the first image, read from its JPEG/PNG header."""
    first = next(reader.iter_images(0, 1))
    payload = _checked_parts(first, reader.rec_path)[1]
    problem = _payload_problem(payload)
    if problem:
        raise recordio.RecordIOError(reader.rec_path, problem, first.key, first.offset)
    size = _image_size(payload)
    if size is None:
        raise ConversionError('%s: cannot read the image size of key %d; add a property '
                              'file "num_classes,height,width" beside it'
                              % (reader.rec_path, first.key))
    return size


def _image_size(payload):
    """[height, width] from a JPEG's frame header or a PNG's IHDR; None if not found."""
    if payload.startswith(PNG_SIGNATURE) and len(payload) >= 24:
        width, height = struct.unpack('>II', payload[16:24])
        return [height, width]
    position = 2  # after the SOI marker
    while position + 9 <= len(payload) and payload[position] == 0xFF:
        marker = payload[position + 1]
        if marker == 0xFF:  # fill byte
            position += 1
            continue
        if marker in _SOF_MARKERS:
            height, width = struct.unpack('>HH', payload[position + 5:position + 9])
            return [height, width]
        position += 2 + struct.unpack('>H', payload[position + 2:position + 4])[0]
    return None


def _payload_problem(payload):
    """What is wrong with a payload that is not a JPEG or PNG; None if it is one."""
    if payload.startswith(JPEG_SIGNATURE) or payload.startswith(PNG_SIGNATURE):
        return None
    return ('payload is not a JPEG or PNG: starts with %r, expected ff d8 ff or 89 50 4e 47 '
            '0d 0a 1a 0a' % (payload[:8],))


def _checked_parts(record, rec_path):
    """Returns (label int, payload bytes) of an image record, its header and label validated."""
    header, payload = recordio.unpack(record.data, rec_path, record.key, record.offset)
    label = header.label if header.flag == 0 else header.label[0]
    if not (math.isfinite(label) and label >= 0 and label == int(label)):
        raise recordio.RecordIOError(rec_path, 'label %r is not a non-negative integer'
                                     % (float(label),), record.key, record.offset)
    return int(label), payload


def _image_problem(payload, size, task):
    """Why an image cannot go into the dataset (`size` decoded, None if it did not); or None."""
    problem = _payload_problem(payload)
    if problem is None and size is None:
        problem = 'image does not decode (JPEG/PNG, as training decodes it)'
    elif problem is None and tuple(size) != task.image_size:
        problem = 'image is %dx%d (height x width), %s %dx%d' % (
            size + (task.size_source,) + task.image_size)
    return problem


def _good_images(reader, task, checker, skipped, report):
    """(payload, label) of the shard's good images, decoded CHECK_BATCH at a time.

    A bad one raises RecordIOError, or with task.skip_bad is appended to
    `skipped` (and counted as done for the progress line).
    """
    records = reader.iter_images(task.begin, task.end)
    while True:
        chunk = [(record,) + _checked_parts(record, task.rec_path)
                 for record in itertools.islice(records, CHECK_BATCH)]
        if not chunk:
            return
        sizes = checker.decoded_sizes([payload for _, _, payload in chunk])
        for (record, label, payload), size in zip(chunk, sizes):
            problem = _image_problem(payload, size, task)
            if problem is None:
                yield payload, label
            elif task.skip_bad:
                skipped.append({'key': record.key, 'byte_offset': record.offset,
                                'problem': problem})
                report(1)
            else:
                raise recordio.RecordIOError(task.rec_path, problem + _SKIP_HINT, record.key,
                                             record.offset)


def _convert_shard(task, report):
    """Writes the good images at positions [task.begin, task.end) to task.path."""
    checker = ImageChecker()
    skipped = []
    try:
        with recordio_reader.IndexedRecordReader(task.rec_path, task.idx_path) as reader:
            result = write_records(task.path, _good_images(reader, task, checker, skipped,
                                                           report), report)
    finally:
        checker.close()
    return result._replace(skipped=skipped)


def _manifest(rec_path, idx_path, prop, image_size, results):
    max_label = max(r.max_label for r in results)
    if prop is None:
        num_classes = max_label + 1
    elif max_label >= prop['num_classes']:
        raise ConversionError('%s says %d classes but labels go up to %d'
                              % (prop['path'], prop['num_classes'], max_label))
    else:
        num_classes = prop['num_classes']
    manifest = manifest_fields(results, num_classes, image_size)
    manifest['source'] = {'rec_path': os.path.abspath(rec_path),
                          'idx_path': os.path.abspath(idx_path),
                          'property_path': prop and prop['path']}
    return manifest


def get_parser():
    parser = argparse.ArgumentParser(
        prog='mx2tfrecords', description='Convert an MXNet RecordIO face dataset '
        '(insightface train.rec + train.idx) to TFRecord shards and a manifest.json.')
    # Input
    parser.add_argument('--bin_path', type=str, required=True,
                        help='MXNet .rec file, e.g. datasets/faces_emore/train.rec; a '
                        '"property" file beside it gives num_classes,height,width')
    parser.add_argument('--idx_path', type=str, required=True,
                        help='its .idx file, e.g. datasets/faces_emore/train.idx')
    add_writer_flags(parser, 'number of shards; default one per GiB of .rec, at least '
                             '--num_workers, at most one per image')
    quiet.add_flag(parser)
    return parser


def main(argv=None):
    """Runs the CLI; returns the exit status (0, 2 bad input/output, 130 interrupted)."""
    args = get_parser().parse_args(argv)

    def summary(manifest):
        rec_path = manifest['source']['rec_path']
        return skipped_report(
            manifest, lambda entry: '%s, key %d, byte offset %d' % (
                rec_path, entry['key'], entry['byte_offset']),
            args.tfrecords_file_path) + [
                'wrote %d images of %d classes in %d shards to %s' % (
                    manifest['num_images'], manifest['num_classes'], len(manifest['shards']),
                    args.tfrecords_file_path)]

    return run_converter(
        'mx2tfrecords', args.tfrecords_file_path,
        lambda: convert(args.bin_path, args.idx_path, args.tfrecords_file_path,
                        num_shards=args.num_shards, num_workers=args.num_workers,
                        overwrite=args.overwrite, progress=not args.no_progress,
                        skip_bad=args.skip_bad),
        summary, input_errors=(recordio.RecordIOError,))


if __name__ == '__main__':
    sys.exit(main())
