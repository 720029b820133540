"""Converts a folder of face images, one folder per person, to TFRecord shards for training.

    DIR/<identity>/<image>.jpg|.jpeg|.png  ->  train-*-of-*.tfrecord + manifest.json

The output is what data/mx2tfrecords.py writes for an insightface .rec (the
same records and manifest, read by the same training pipeline), plus the
identity names in the manifest (`identities`: label i is the i-th name, in
sorted folder order). Every image is decoded while converting, with the
training decoder; one that does not decode stops the conversion naming the
file. All images must have one size (`--image_size`, or the first image's);
`--resize` re-encodes those of another size (JPEG quality 95) instead of
refusing them; `--skip_bad` leaves out the images that do not decode or are of
another size, listing them (stderr, manifest.json "skipped"). Images of the
right size are stored byte for byte.

Usage, from the project root:
    python3 data/folder2tfrecords.py --image_dir my_faces \\
        --tfrecords_file_path datasets/my_faces_tfrecords [--image_size 112,112 --resize]

Parallel (--num_workers), atomic and interruptible like mx2tfrecords.py
(data/shard_writer.py). Exit status: 0 done; 2 bad input or output (one line
on stderr); 130 interrupted.
"""
import argparse
import collections
import os
import sys

if __name__ == '__main__' and not __package__:  # run as a file: see data/as_module.py
    import as_module
    as_module.rerun_as_module(__file__)

# First: silences TensorFlow's logs before anything below imports it.
from data import quiet  # noqa: E402
from data import manifest as manifest_lib  # noqa: E402
from data.image_files import (  # noqa: E402
    ImageChecker, ImageFolderError, add_image_dir_flags, scan_identities)
from data.shard_records import ConversionError, write_records  # noqa: E402
from data.shard_writer import (  # noqa: E402
    add_writer_flags, check_output, manifest_fields, run_converter, skipped_report,
    write_dataset)

IMAGES_PER_SHARD = 50000  # default shard size: a few GB of 112x112 JPEGs at most
PROG = 'folder2tfrecords'

# items: [(label, path)] of the shard, in label order.
_ShardTask = collections.namedtuple('_ShardTask', 'items image_size resize skip_bad path')


def _checked_images(task, checker, skipped, report):
    """(payload, label) of each good image of a shard, decoded and size-checked.

    A bad one raises ImageFolderError, or with task.skip_bad is appended to
    `skipped` (and counted as done for the progress line).
    """
    for label, path in task.items:
        try:
            payload = checker.check(path, task.image_size)[0]
        except ImageFolderError as error:
            if not task.skip_bad:
                raise
            message = str(error)  # "<path>: problem" or "<path> is 20x24, ..."
            skipped.append({'file': path, 'problem': message[len(path):].lstrip(': ')
                            if message.startswith(path) else message})
            report(1)
            continue
        yield payload, label


def _convert_shard(task, report):
    """Checks and writes the images of one shard (in a worker, or here)."""
    checker = ImageChecker(task.image_size if task.resize else None)
    skipped = []
    try:
        result = write_records(task.path, _checked_images(task, checker, skipped, report),
                               report)
    finally:
        checker.close()
    return result._replace(skipped=skipped)


def _first_size(items, skip_bad):
    """(height, width) of the first image; with skip_bad, of the first that decodes."""
    checker = ImageChecker()
    try:
        for _, path in items:
            try:
                return checker.check(path)[1]
            except ImageFolderError:
                if not skip_bad:
                    raise
        raise ImageFolderError('none of the %d images decodes' % len(items))
    finally:
        checker.close()


def convert(image_dir, out_dir, image_size=None, resize=False, num_shards=None,
            num_workers=1, overwrite=False, progress=True, skip_bad=False):
    """Converts DIR/<identity>/<image> to TFRecord shards plus a manifest.

    Args:
      image_dir: the folder of identity folders.
      out_dir: output folder (created if needed).
      image_size: (height, width) every image must have; None: the first
        image's. Required with resize.
      resize: re-encode images of another size at image_size.
      num_shards: None: one per IMAGES_PER_SHARD images, at least num_workers.
      num_workers, overwrite, progress: as data/mx2tfrecords.convert.
      skip_bad: leave out (and list in the manifest's `skipped`) images that do
        not decode or, without resize, are of another size.
    Returns:
      The manifest dict written to out_dir/manifest.json.
    Raises:
      ImageFolderError: a missing or empty folder; without skip_bad an
        unreadable image, or one of another size without resize.
      ConversionError: bad arguments or output folder.
    """
    out_dir = os.path.abspath(out_dir)
    if num_workers < 1 or (num_shards is not None and num_shards < 1):
        raise ConversionError('num_workers %r and num_shards %r: expected positive '
                              'integers' % (num_workers, num_shards))
    if resize and image_size is None:
        raise ConversionError('--resize needs --image_size (the size to resize to)')
    check_output(out_dir, overwrite)
    identities = scan_identities(image_dir)
    items = [(label, path) for label, (_, paths) in enumerate(identities) for path in paths]
    if image_size is None:
        image_size = _first_size(items, skip_bad)
    if num_shards is None:
        num_shards = max(num_workers, -(-len(items) // IMAGES_PER_SHARD))
    num_shards = min(num_shards, len(items))

    def make_tasks(temp_dir):
        return [_ShardTask(items[index * len(items) // num_shards:
                                 (index + 1) * len(items) // num_shards],
                           tuple(image_size), resize, skip_bad,
                           os.path.join(temp_dir, manifest_lib.shard_file_name(index,
                                                                               num_shards)))
                for index in range(num_shards)]

    def describe(results):
        manifest = manifest_fields(results, len(identities), image_size)
        manifest['identities'] = [name for name, _ in identities]
        manifest['source'] = {'image_dir': os.path.abspath(image_dir), 'resized': resize}
        return manifest

    return write_dataset(out_dir, make_tasks, _convert_shard, num_workers, len(items),
                         describe, progress=progress, name=PROG)


def get_parser():
    parser = argparse.ArgumentParser(
        prog=PROG, description='Convert a folder of face images (DIR/<identity>/<image>) to '
                               'TFRecord shards and a manifest.json for train_nets.py.')
    add_image_dir_flags(parser)
    add_writer_flags(parser, 'number of shards; default one per %d images' % IMAGES_PER_SHARD)
    quiet.add_flag(parser)
    return parser


def main(argv=None):
    """Runs the CLI; returns the exit status (0, 2 bad input/output, 130 interrupted)."""
    args = get_parser().parse_args(argv)

    def summary(manifest):
        return skipped_report(manifest, lambda entry: entry['file'],
                              args.tfrecords_file_path) + [
            'wrote %d images of %d identities (%dx%d) in %d shards to %s' % (
                manifest['num_images'], manifest['num_classes'], manifest['image_size'][0],
                manifest['image_size'][1], len(manifest['shards']),
                args.tfrecords_file_path)]

    return run_converter(
        PROG, args.tfrecords_file_path,
        lambda: convert(args.image_dir, args.tfrecords_file_path, args.image_size,
                        args.resize, num_shards=args.num_shards,
                        num_workers=args.num_workers, overwrite=args.overwrite,
                        progress=not args.no_progress, skip_bad=args.skip_bad),
        summary, input_errors=(ImageFolderError,))


if __name__ == '__main__':
    sys.exit(main())
