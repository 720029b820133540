"""Writing a dataset as TFRecord shards plus a manifest, atomically and in parallel.

What every converter shares (data/mx2tfrecords.py reads an MXNet .rec,
data/folder2tfrecords.py a folder of images): the tf.train.Example encoding,
the worker processes, the progress bar, and the rule that a folder with a
manifest.json is a complete conversion. A converter supplies the shard tasks
(picklable) and a module-level function that writes one shard.

Output is atomic: shards and manifest are written into the hidden sibling
folder `.<name>.partial`, then moved into the output folder, manifest last. An
interrupted run leaves at most the .partial folder, which the next run
deletes. A folder that already has a manifest is only replaced with overwrite.

Only what a conversion wrote is ever replaced or deleted: the files its
manifest lists (and, while a replacement is under way, those of the list
PENDING_NAME). An output folder holding anything else is refused, with or
without overwrite; an empty one is fine.

Typical use:
    def write_one(task, report):            # at module level: workers import it
        with tf.io.TFRecordWriter(task.path) as out:
            ...; out.write(encode_example(payload, label)); report(1)
        return ShardResult(task.path, count, max_label)
    manifest = write_dataset(out_dir, make_tasks, write_one, num_workers=4,
                             total=n, describe=lambda results: {...}, progress=True)
"""
import collections
import contextlib
import json
import multiprocessing
import os
import pickle
import queue
import shutil
import signal
import sys
import threading

from tqdm import tqdm

from data import manifest as manifest_lib
from data.cli import positive_int
from data.safe_files import OutputError, check_holds_only, write_atomically

# skipped: what --skip_bad left out of the shard, [{..., 'problem': text}] (manifest entries).
ShardResult = collections.namedtuple('ShardResult', 'path num_images max_label skipped',
                                     defaults=((),))
REPORT_EVERY = 256  # images between progress reports of a shard writer
# Off a terminal, ProgressBar prints plain lines, at most one per PLAIN_INTERVAL seconds.
PLAIN_INTERVAL = 5.0
PLAIN_FORMAT = '{desc}: {n}/{total}{unit} ({percentage:.1f}%), {rate_noinv_fmt}, ETA {remaining}'
SKIPPED_SHOWN = 20  # skipped images listed on stderr; manifest.json lists them all
# Lists every file of ours in an output folder while a replacement is under way (the
# manifest is gone then), so that an interrupted one can be finished by the next run.
PENDING_NAME = '.manifest.pending.json'
_NOT_OURS = 'no conversion wrote (its %s lists what one wrote)' % manifest_lib.MANIFEST_NAME


class ConversionError(ValueError):
    """Bad arguments, output folder or input; the message is one line."""


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
    pending = _read_json(os.path.join(out_dir, PENDING_NAME))
    if isinstance(pending, list):
        names.add(PENDING_NAME)
        names.update(name for name in pending if ours(name))
    return names


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


def encode_example(payload, label):
    """Serialized tf.train.Example {'image_raw': bytes payload, 'label': int64 label}.

    Args:
      payload: bytes, the encoded image.
      label: non-negative int.
    Returns:
      bytes; deterministic (map keys sorted), so the same images give the same shards.
    """
    import tensorflow.compat.v1 as tf  # already loaded by write_records: a lookup
    feature = {
        'image_raw': tf.train.Feature(bytes_list=tf.train.BytesList(value=[payload])),
        'label': tf.train.Feature(int64_list=tf.train.Int64List(value=[label])),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString(
        deterministic=True)


def write_records(path, examples, report):
    """Writes one TFRecord shard of (payload bytes, label) pairs; returns its ShardResult.

    report(n) is called every REPORT_EVERY records and at the end.
    """
    # Imported here: a parent that only coordinates workers never pays for it.
    import tensorflow.compat.v1 as tf
    count, max_label, unreported = 0, -1, 0
    with tf.io.TFRecordWriter(path) as writer:
        for payload, label in examples:
            writer.write(encode_example(payload, label))
            count += 1
            max_label = max(max_label, label)
            unreported += 1
            if unreported == REPORT_EVERY:
                report(unreported)
                unreported = 0
    report(unreported)
    return ShardResult(path, count, max_label)


class _PlainLines(object):
    """A file for tqdm off a terminal: each redraw becomes one line, blank ones are dropped.

    tqdm redraws in place with carriage returns, which a log file or a pipe shows as
    one ever-growing line; grep and tests want whole lines.
    """

    def __init__(self, stream):
        self._stream = stream

    def write(self, text):
        line = text.replace('\r', '').rstrip()  # tqdm pads a shorter redraw with spaces
        if line:
            self._stream.write(line + '\n')

    def flush(self):
        self._stream.flush()


class ProgressBar(object):
    """A tqdm progress bar on stderr; a context manager that closes it.

    On a terminal, tqdm's bar. Elsewhere (a log file, a pipe) a plain line at most
    every PLAIN_INTERVAL seconds and one at the end, e.g.
        mx2tfrecords: 6/6 images (100.0%), 1523.51 images/s, ETA 00:00
    Leaving the `with` block by an exception adds nothing (a terminal's bar is
    cleared), so the error message stays the tool's last line.
    """

    def __init__(self, total, label, unit='images', enabled=True, stream=None):
        stream = stream or sys.stderr
        self._plain = not (hasattr(stream, 'isatty') and stream.isatty())
        if self._plain:
            # delay: no "0/N" line at the start, which a run failing at once would print;
            # miniters=1: lines come from the clock alone, never from tqdm's monitor thread.
            options = dict(file=_PlainLines(stream), bar_format=PLAIN_FORMAT, leave=False,
                           mininterval=PLAIN_INTERVAL, delay=PLAIN_INTERVAL, miniters=1,
                           smoothing=0)  # the average rate: what a log reader compares
        else:
            options = dict(file=stream, dynamic_ncols=True)
        self._bar = tqdm(total=total, desc=label, unit=' ' + unit, disable=not enabled,
                         **options)

    def update(self, count):
        """Counts `count` more items done."""
        self._bar.update(count)

    def close(self, completed=True):
        """Shows the final count if completed (else clears a terminal's bar), then closes."""
        bar = self._bar
        if not bar.disable:
            if not completed:
                bar.leave = False
            elif self._plain and bar.last_print_n != bar.n:  # the final line, once
                bar.refresh()
        bar.close()

    def __enter__(self):
        return self

    def __exit__(self, error_type, unused_error, unused_traceback):
        self.close(completed=error_type is None)


def _run_here(tasks, write_shard, tracker):
    return [write_shard(task, tracker.update) for task in tasks]


_worker = {}  # state of a worker process: its progress counter


def _report_to_counter(count):
    with _worker['counter'].get_lock():
        _worker['counter'].value += count


def _picklable(error):
    """`error` if it survives the queue to the parent, else a ConversionError with its text."""
    try:
        pickle.loads(pickle.dumps(error))
        return error
    except Exception:  # pylint: disable=broad-except
        return ConversionError('%s: %s' % (type(error).__name__, error))


def _worker_main(write_shard, tasks, counter, messages):
    """Writes `tasks` (consecutive shards) in a worker process.

    Sends ('done', ShardResult) per shard, or ('error', exception) and stops.
    """
    # Ctrl-C reaches the whole process group; the parent alone handles it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _worker['counter'] = counter
    try:
        for task in tasks:
            messages.put(('done', write_shard(task, _report_to_counter)))
    except Exception as error:  # pylint: disable=broad-except
        messages.put(('error', _picklable(error)))


def _run_workers(tasks, write_shard, num_workers, tracker, name):
    """Runs the tasks in `num_workers` spawned processes, each on consecutive shards.

    Spawned, not forked: forking a process that may already run TensorFlow is
    unsafe. Each worker imports TensorFlow once (a few seconds, in parallel).
    """
    context = multiprocessing.get_context('spawn')
    counter = context.Value('q', 0)
    messages = context.Queue()
    workers = []
    for index in range(num_workers):
        share = tasks[index * len(tasks) // num_workers:(index + 1) * len(tasks) // num_workers]
        workers.append(context.Process(target=_worker_main,
                                       args=(write_shard, share, counter, messages),
                                       name='%s-%d' % (name, index), daemon=True))
    results = {}
    shown = [0]  # the tracker counts increments; the shared counter holds the total

    def catch_up():
        done = counter.value
        tracker.update(done - shown[0])
        shown[0] = done

    try:
        for worker in workers:
            worker.start()
        while len(results) < len(tasks):
            try:
                kind, value = messages.get(timeout=0.2)
            except queue.Empty:
                # A worker killed from outside (e.g. out of memory) sends nothing.
                for worker in workers:
                    if worker.exitcode not in (None, 0):
                        raise ConversionError('worker process %s died with exit code %d'
                                              % (worker.name, worker.exitcode))
            else:
                if kind == 'error':
                    raise value
                results[value.path] = value
            catch_up()
    finally:
        for worker in workers:
            if worker.is_alive():
                worker.terminate()
            worker.join()
    catch_up()  # a worker counts its last images before it reports its shard done
    return [results[task.path] for task in tasks]


def _commit(temp_dir, out_dir, shard_files):
    """Moves finished shards from temp_dir into out_dir, manifest last.

    Into an existing folder, only the files an earlier conversion recorded are
    replaced or deleted; the folder is checked again first, as it may have
    changed during a long conversion.
    """
    if not os.path.exists(out_dir):
        os.rename(temp_dir, out_dir)  # a single atomic step
        return
    old = recorded_names(out_dir)
    check_holds_only(out_dir, old, '--tfrecords_file_path', _NOT_OURS)
    new = set(shard_files) | {manifest_lib.MANIFEST_NAME}
    pending = os.path.join(out_dir, PENDING_NAME)
    write_atomically(pending, json.dumps(sorted((old | new) - {PENDING_NAME})).encode('utf-8'))
    manifest_path = os.path.join(out_dir, manifest_lib.MANIFEST_NAME)
    if os.path.exists(manifest_path):  # --overwrite: stop claiming completeness first
        os.remove(manifest_path)
    for name in sorted(old - new - {PENDING_NAME}):  # shards of the older run
        if os.path.lexists(os.path.join(out_dir, name)):
            os.remove(os.path.join(out_dir, name))
    for name in shard_files:
        os.replace(os.path.join(temp_dir, name), os.path.join(out_dir, name))
    os.replace(os.path.join(temp_dir, manifest_lib.MANIFEST_NAME), manifest_path)
    os.remove(pending)


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
                results = _run_here(tasks, write_shard, tracker)
            else:
                results = _run_workers(tasks, write_shard, num_workers, tracker, name)
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
