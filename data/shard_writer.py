"""Writing a dataset as TFRecord shards plus a manifest, atomically and in parallel.

What every converter shares (data/mx2tfrecords.py reads an MXNet .rec,
data/folder2tfrecords.py a folder of images): the tf.train.Example encoding,
the worker processes, the progress line, and the rule that a folder with a
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
import functools
import json
import multiprocessing
import os
import pickle
import queue
import shutil
import signal
import sys
import threading
import time

from data import manifest as manifest_lib
from data.cli import positive_int
from data.safe_files import OutputError, check_holds_only, write_atomically

# skipped: what --skip_bad left out of the shard, [{..., 'problem': text}] (manifest entries).
ShardResult = collections.namedtuple('ShardResult', 'path num_images max_label skipped',
                                     defaults=((),))
REPORT_EVERY = 256  # images between progress reports of a shard writer
SKIPPED_SHOWN = 20  # skipped images listed on stderr; manifest.json lists them all
# Lists every file of ours in an output folder while a replacement is under way (the
# manifest is gone then), so that an interrupted one can be finished by the next run.
PENDING_NAME = '.manifest.pending.json'
_NOT_OURS = 'no conversion wrote (its %s lists what one wrote)' % manifest_lib.MANIFEST_NAME
_IMAGE_KEY = b'\x0a\x09image_raw'  # map-entry key field: tag, length 9, name
_ONE_BYTE = [bytes([value]) for value in range(0x80)]  # varints of 0..127


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


def _varint(value):
    """Protobuf base-128 varint of a non-negative int."""
    if value < 0x80:
        return _ONE_BYTE[value]
    if value < 0x4000:  # most lengths: payloads of 128 B to 16 KB
        return bytes(((value & 0x7F) | 0x80, value >> 7))
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


@functools.lru_cache(maxsize=1 << 20)  # one entry per class
def _label_field(label):
    """Features map entry {'label': Int64List [label]}, as a length-prefixed field."""
    packed = _varint(label)
    int64_list = b'\x0a' + _varint(len(packed)) + packed
    feature = b'\x1a' + _varint(len(int64_list)) + int64_list  # Feature field 3
    entry = b'\x0a\x05label\x12' + _varint(len(feature)) + feature  # key 1, value 2
    return b'\x0a' + _varint(len(entry)) + entry


def encode_example(payload, label):
    """Serialized tf.train.Example {'image_raw': bytes payload, 'label': int64 label}.

    Written out by hand: building protobuf objects took ~15 us per image, a
    third of the whole .rec conversion; this takes ~3 us, copying the payload
    once (test_mx2tfrecords checks the bytes against protobuf's own).

    Args:
      payload: bytes, the encoded image.
      label: non-negative int.
    Returns:
      bytes, as tf.train.Example(...).SerializeToString(deterministic=True).
    """
    label_field = _label_field(label)
    # Nesting, inside out: BytesList.value (field 1) in Feature.bytes_list
    # (field 1) in a map entry (key field 1, value field 2) in Features.feature
    # (field 1) in Example.features (field 1); each is tag, length, body.
    size = _varint(len(payload))
    bytes_list = 1 + len(size) + len(payload)
    bytes_list_size = _varint(bytes_list)
    feature = 1 + len(bytes_list_size) + bytes_list
    feature_size = _varint(feature)
    entry = len(_IMAGE_KEY) + 1 + len(feature_size) + feature
    entry_size = _varint(entry)
    features = 1 + len(entry_size) + entry + len(label_field)
    return b''.join([b'\x0a', _varint(features), b'\x0a', entry_size, _IMAGE_KEY,
                     b'\x12', feature_size, b'\x0a', bytes_list_size, b'\x0a', size,
                     payload, label_field])


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


class Progress(object):
    """Progress on stderr: one updating line on a terminal, else a line per 5 s or 10%."""

    def __init__(self, total, stream=None, enabled=True, label='mx2tfrecords'):
        self._total = total
        self._stream = stream or sys.stderr
        self._enabled = enabled
        self._label = label
        self._tty = hasattr(self._stream, 'isatty') and self._stream.isatty()
        self._start = self._last = time.time()
        self._last_decile = 0
        self._shown = None  # last count printed

    def update(self, done, final=False):
        """Shows `done` of the total images, if enough time or progress has passed."""
        if not self._enabled:
            return
        now = time.time()
        decile = done * 10 // self._total
        if self._tty:
            due = now - self._last >= 0.25
        else:
            due = now - self._last >= 5.0 or decile > self._last_decile
        if not (due or final) or done == self._shown:
            return
        self._last, self._last_decile, self._shown = now, decile, done
        rate = done / max(now - self._start, 1e-9)
        eta = '%d:%02d' % divmod((self._total - done) / rate, 60) if rate else '?'
        line = '%s: %d/%d images (%.1f%%), %.0f images/s, ETA %s' % (
            self._label, done, self._total, 100.0 * done / self._total, rate, eta)
        if self._tty:
            self._stream.write('\r%-79s' % line + ('\n' if final else ''))
        else:
            self._stream.write(line + '\n')
        self._stream.flush()


def _run_here(tasks, write_shard, tracker):
    done = [0]

    def report(count):
        done[0] += count
        tracker.update(done[0])

    results = [write_shard(task, report) for task in tasks]
    tracker.update(done[0], final=True)
    return results


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
            tracker.update(counter.value)
    finally:
        for worker in workers:
            if worker.is_alive():
                worker.terminate()
            worker.join()
    tracker.update(counter.value, final=True)
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
      total: images in all, for the progress line.
      describe: fn(results) -> the manifest dict (manifest_fields + the
        converter's own fields); may raise ConversionError.
      progress: True for a progress line on stderr, False for none, or an
        object with update(done, final=False) (e.g. a benchmark's recorder).
      name: label of the progress line and the worker processes.
    Returns:
      The manifest dict written.
    """
    temp_dir = partial_dir_for(out_dir)
    shutil.rmtree(temp_dir, ignore_errors=True)  # left by an interrupted run
    os.makedirs(temp_dir)
    try:
        tasks = make_tasks(temp_dir)
        tracker = progress if hasattr(progress, 'update') else Progress(
            total, enabled=bool(progress), label=name)
        num_workers = min(num_workers, len(tasks))
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
                        help='do not print the progress line on stderr')


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
