"""Writing a dataset as TFRecord shards plus a manifest, atomically and in parallel.

What every converter shares (data/mx2tfrecords.py reads an MXNet .rec,
data/folder2tfrecords.py a folder of images): running the shard tasks, here or
in worker processes (data/shard_workers.py), under a progress bar
(data/progress.py); the manifest; the output folder, where a manifest.json
marks a complete conversion; the flags and exit statuses of the command. A
converter supplies the shard tasks (picklable) and a module-level function that
writes one shard (data/shard_records.py).

Output is atomic: shards and manifest are written into the hidden sibling
folder `.<name>.partial`, then moved into the output folder, manifest last. An
interrupted run leaves at most the .partial folder, which the next run
deletes. A folder that already has a manifest is only replaced with overwrite.

Only what a conversion wrote is ever replaced or deleted: the files its
manifest lists (and, while a replacement is under way, those of the journal
safe_files.PENDING_NAME). An output folder holding anything else is refused, with or
without overwrite; an empty one is fine.

Typical use:
    def write_one(task, report):            # at module level: workers import it
        with tf.io.TFRecordWriter(task.path) as out:
            ...; out.write(encode_example(payload, label)); report(1)
        return ShardResult(task.path, count, max_label)
    manifest = write_dataset(out_dir, make_tasks, write_one, num_workers=4,
                             total=n, describe=lambda results: {...}, progress=True)
"""
import contextlib
import json
import multiprocessing
import os
import shutil
import signal
import sys
import threading

from data import manifest as manifest_lib
from data.cli import positive_int
from data.progress import ProgressBar
from data.safe_files import (PENDING_NAME, OutputError, check_holds_only, move_into_place,
                             pending_names)
from data.shard_records import ConversionError
from data.shard_workers import run_here, run_workers

SKIPPED_SHOWN = 20  # skipped images listed on stderr; manifest.json lists them all
_NOT_OURS = 'no conversion wrote (its %s lists what one wrote)' % manifest_lib.MANIFEST_NAME


def partial_dir_for(out_dir):
    """The hidden temporary folder a conversion into `out_dir` writes to."""
    out_dir = os.path.abspath(out_dir)
    return os.path.join(os.path.dirname(out_dir), '.%s.partial' % os.path.basename(out_dir))


def _read_json(path):
    """The JSON value in `path`; None if it is missing or not JSON."""
    try:
        with open(path) as json_file:
            return json.load(json_file)
    except (IOError, OSError, ValueError):
        return None


def recorded_names(out_dir):
    """The names in out_dir a conversion wrote: its manifest's, and a pending list's.

    Only manifest.json and shard names count, whatever a (possibly foreign)
    manifest lists: nothing outside that pattern is ever ours to delete.
    """
    def ours(name):
        return name == manifest_lib.MANIFEST_NAME or manifest_lib.is_shard_file_name(str(name))

    names = set()
    manifest = _read_json(os.path.join(out_dir, manifest_lib.MANIFEST_NAME))
    if isinstance(manifest, dict) and manifest.get('format') == manifest_lib.FORMAT:
        names.add(manifest_lib.MANIFEST_NAME)
        names.update(shard.get('file') for shard in manifest.get('shards') or []
                     if isinstance(shard, dict) and ours(shard.get('file')))
    pending = pending_names(out_dir)
    return names | {name for name in pending if name == PENDING_NAME or ours(name)}


def check_output(out_dir, overwrite):
    """Refuses a file in place of the folder, a folder holding anything a conversion did
    not write, or a complete conversion without overwrite."""
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise ConversionError('output %s exists and is not a folder' % out_dir)
    if not os.path.isdir(out_dir):
        return
    check_holds_only(out_dir, recorded_names(out_dir), '--tfrecords_file_path', _NOT_OURS)
    if os.path.exists(os.path.join(out_dir, manifest_lib.MANIFEST_NAME)) and not overwrite:
        raise ConversionError('%s already holds a complete conversion (%s); pass '
                              '--overwrite to replace it' % (out_dir, manifest_lib.MANIFEST_NAME))



def _commit(temp_dir, out_dir, shard_files):
    """Moves finished shards from temp_dir into out_dir, manifest last.

    Into an existing folder, only the files an earlier conversion recorded are
    replaced or deleted; the folder is checked again first, as it may have
    changed during a long conversion.
    """
    old = set()
    if os.path.exists(out_dir):
        old = recorded_names(out_dir)
        check_holds_only(out_dir, old, '--tfrecords_file_path', _NOT_OURS)
    new = set(shard_files) | {manifest_lib.MANIFEST_NAME}
    move_into_place(temp_dir, out_dir, sorted(new), stale=old - new - {PENDING_NAME},
                    last=manifest_lib.MANIFEST_NAME)


def manifest_fields(results, num_classes, image_size):
    """The manifest fields every conversion has, from its ShardResults in order.

    Raises:
      ConversionError: --skip_bad left no image.
    """
    skipped = [entry for r in results for entry in r.skipped]
    if not any(r.num_images for r in results):
        raise ConversionError('all %d images were bad (--skip_bad left none); nothing written'
                              % len(skipped))
    return {
        'format': manifest_lib.FORMAT,
        'version': manifest_lib.VERSION,
        'num_images': sum(r.num_images for r in results),
        'num_classes': num_classes,
        'image_size': list(image_size),
        'features': manifest_lib.FEATURES,
        'shards': [{'file': os.path.basename(r.path), 'num_images': r.num_images,
                    'size_bytes': os.path.getsize(r.path)} for r in results],
        'skipped': skipped,
    }


def skipped_report(manifest, where, out_dir):
    """Lines on what --skip_bad left out: the first SKIPPED_SHOWN, then the count.

    where(entry) names one skipped image (file, or .rec key and offset).
    """
    skipped = manifest.get('skipped') or []
    lines = ['skipped %s: %s' % (where(entry), entry['problem'])
             for entry in skipped[:SKIPPED_SHOWN]]
    if len(skipped) > SKIPPED_SHOWN:
        lines.append('... and %d more' % (len(skipped) - SKIPPED_SHOWN))
    if skipped:
        lines.append('skipped %d bad images (--skip_bad); all are listed in %s under '
                     '"skipped"' % (len(skipped),
                                    os.path.join(out_dir, manifest_lib.MANIFEST_NAME)))
    return lines


def write_dataset(out_dir, make_tasks, write_shard, num_workers, total, describe,
                  progress=True, name='mx2tfrecords'):
    """Writes a dataset's shards and manifest into `out_dir`, atomically.

    Args:
      out_dir: the output folder (created, or updated in place with overwrite;
        the caller checks it first with check_output).
      make_tasks: fn(temp_dir) -> tasks, each a picklable tuple with a `path`
        field (a shard file in temp_dir, named by manifest.shard_file_name).
      write_shard: module-level fn(task, report) -> ShardResult; report(n)
        counts n more images done.
      num_workers: processes; 1 writes in this process.
      total: images in all, for the progress bar.
      describe: fn(results) -> the manifest dict (manifest_fields + the
        converter's own fields); may raise ConversionError.
      progress: True for a progress bar on stderr (ProgressBar), False for
        none, or an object with update(n), n more images done (e.g. a
        benchmark's recorder).
      name: label of the progress bar and the worker processes.
    Returns:
      The manifest dict written.
    """
    temp_dir = partial_dir_for(out_dir)
    shutil.rmtree(temp_dir, ignore_errors=True)  # left by an interrupted run
    os.makedirs(temp_dir)
    try:
        tasks = make_tasks(temp_dir)
        num_workers = min(num_workers, len(tasks))
        with (contextlib.nullcontext(progress) if hasattr(progress, 'update') else
              ProgressBar(total, name, enabled=bool(progress))) as tracker:
            if num_workers == 1:
                results = run_here(tasks, write_shard, tracker)
            else:
                results = run_workers(tasks, write_shard, num_workers, tracker, name)
        manifest = describe(results)
        manifest_lib.write_manifest(temp_dir, manifest)
        _commit(temp_dir, out_dir, [os.path.basename(r.path) for r in results])
    finally:
        shutil.rmtree(temp_dir, ignore_errors=True)
    return manifest


def add_writer_flags(parser, num_shards_help):
    """The output and execution flags of every converter."""
    parser.add_argument('--tfrecords_file_path', type=str, required=True,
                        help='output FOLDER for train-*-of-*.tfrecord and manifest.json')
    parser.add_argument('--num_shards', type=positive_int, default=None, help=num_shards_help)
    parser.add_argument('--overwrite', action='store_true',
                        help='replace a complete conversion already in the folder')
    parser.add_argument('--skip_bad', action='store_true',
                        help='leave out images that do not decode or are not of the dataset\'s '
                             'size, listing them (stderr, manifest.json "skipped"); default: '
                             'stop at the first, writing nothing')
    parser.add_argument('--num_workers', type=positive_int,
                        default=min(4, multiprocessing.cpu_count()),
                        help='parallel worker processes (default: min(4, CPUs) = %(default)s)')
    parser.add_argument('--no_progress', action='store_true',
                        help='no progress bar on stderr (off a terminal: no progress lines)')


def _interrupt(unused_signum, unused_frame):
    raise KeyboardInterrupt()


def run_converter(prog, output, convert, summary, input_errors=()):
    """Runs a converter's `convert()` as a command; returns the exit status.

    A plain `kill` cleans up like Ctrl-C (SIGTERM becomes KeyboardInterrupt,
    which removes the partial output). 0: done, `summary(manifest)` (a line or
    a list of lines) printed; 2: bad input or output (one line); 130: interrupted.
    """
    # Signal handlers can only be set from the main thread (tests call main() in others).
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _interrupt) if in_main_thread else None
    try:
        manifest = convert()
    except tuple(input_errors) + (ConversionError, OutputError, OSError) as error:
        sys.stderr.write('%s: error: %s\n' % (prog, error))
        return 2
    except KeyboardInterrupt:
        sys.stderr.write('%s: interrupted; partial output removed, %s holds no new '
                         'conversion\n' % (prog, output))
        return 130
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)
    lines = summary(manifest)
    for line in [lines] if isinstance(lines, str) else lines:
        sys.stderr.write('%s: %s\n' % (prog, line))
    return 0
