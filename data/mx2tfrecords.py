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
min(4, CPUs)): spawned processes, since forking one that may already run
TensorFlow is unsafe; each worker imports TensorFlow once (a few seconds, in
parallel) and converts a contiguous run of shards (a contiguous key range).
With one worker everything runs in this process.
Progress goes to stderr: one updating line on a terminal, else a line every
5 s or 10%.

Output is atomic: shards and manifest are written into the hidden sibling
folder `.<name>.partial`, then moved into the output folder, manifest last. A
folder without manifest.json is never a complete conversion; an interrupted
run leaves at most the .partial folder, which the next run deletes. A folder
that already has a manifest is only replaced with --overwrite.

Exit status: 0 done; 2 bad input or output (one line on stderr naming file,
key and byte offset); 130 interrupted.
"""
import argparse
import collections
import functools
import math
import multiprocessing
import os
import queue
import shutil
import signal
import struct
import sys
import threading
import time

if __name__ in ('__main__', '__mp_main__'):
    # Run as `python3 data/mx2tfrecords.py`: make the `data` package importable.
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from data import manifest as manifest_lib  # noqa: E402 (needs the path above)
from data import recordio  # noqa: E402

JPEG_SIGNATURE = b'\xff\xd8\xff'
PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'
SHARD_BYTES = 1 << 30  # default shard size: large files, few open handles
PROPERTY_NAME = 'property'  # insightface's "num_classes,height,width" file
_REPORT_EVERY = 256  # records between progress reports of a worker
# JPEG start-of-frame markers (they carry the size); C4, C8, CC are not frames.
_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_IMAGE_KEY = b'\x0a\x09image_raw'  # map-entry key field: tag, length 9, name
_ONE_BYTE = [bytes([value]) for value in range(0x80)]  # varints of 0..127

_ShardTask = collections.namedtuple('_ShardTask', 'rec_path idx_path begin end path')
_ShardResult = collections.namedtuple('_ShardResult', 'path num_images max_label')


class ConversionError(ValueError):
    """Bad arguments, output folder or property file; the message is one line."""


def partial_dir_for(out_dir):
    """The hidden temporary folder a conversion into `out_dir` writes to."""
    out_dir = os.path.abspath(out_dir)
    return os.path.join(os.path.dirname(out_dir), '.%s.partial' % os.path.basename(out_dir))


def convert(rec_path, idx_path, out_dir, num_shards=None, num_workers=1,
            overwrite=False, progress=True):
    """Converts the images of an indexed .rec file to TFRecord shards plus a manifest.

    Args:
      rec_path, idx_path: the MXNet RecordIO files.
      out_dir: output folder (created if needed).
      num_shards: number of shards; None picks one per GiB of .rec, at least
        `num_workers`. Capped by the number of images.
      num_workers: processes converting shards in parallel; 1 converts here.
      overwrite: replace a complete conversion already in `out_dir`.
      progress: print a progress line on stderr.
    Returns:
      The manifest dict written to out_dir/manifest.json.
    Raises:
      RecordIOError: missing file, bad record, payload not JPEG/PNG, no images.
      ConversionError: bad arguments, output exists, bad property file.
    """
    out_dir = os.path.abspath(out_dir)
    if num_workers < 1 or (num_shards is not None and num_shards < 1):
        raise ConversionError('num_workers %r and num_shards %r: expected positive '
                              'integers' % (num_workers, num_shards))
    _check_output(out_dir, overwrite)
    with recordio.IndexedRecordReader(rec_path, idx_path) as reader:
        num_images = reader.num_images
        if not num_images:
            raise recordio.RecordIOError(rec_path, 'no image records to convert')
        prop = _read_property(rec_path)
        image_size = prop['image_size'] if prop else _first_image_size(reader)
        if num_shards is None:
            num_shards = max(num_workers, int(math.ceil(os.path.getsize(rec_path)
                                                        / float(SHARD_BYTES))))
        num_shards = min(num_shards, num_images)
        num_workers = min(num_workers, num_shards)
        temp_dir = partial_dir_for(out_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)  # left by an interrupted run
        os.makedirs(temp_dir)
        try:
            tasks = [_ShardTask(rec_path, idx_path, index * num_images // num_shards,
                                (index + 1) * num_images // num_shards,
                                os.path.join(temp_dir, manifest_lib.shard_file_name(
                                    index, num_shards)))
                     for index in range(num_shards)]
            tracker = _Progress(num_images, enabled=progress)
            if num_workers == 1:
                results = _run_here(tasks, reader, tracker)
            else:
                results = _run_workers(tasks, num_workers, tracker)
            manifest = _manifest(rec_path, idx_path, prop, image_size, results)
            manifest_lib.write_manifest(temp_dir, manifest)
            _commit(temp_dir, out_dir, [os.path.basename(r.path) for r in results])
        finally:
            shutil.rmtree(temp_dir, ignore_errors=True)
    return manifest


def _check_output(out_dir, overwrite):
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise ConversionError('output %s exists and is not a folder' % out_dir)
    if os.path.exists(os.path.join(out_dir, manifest_lib.MANIFEST_NAME)) and not overwrite:
        raise ConversionError('%s already holds a complete conversion (%s); pass '
                              '--overwrite to replace it' % (out_dir, manifest_lib.MANIFEST_NAME))


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
    size = _image_size(_checked_parts(first, reader.rec_path)[1])
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


def _checked_parts(record, rec_path):
    """Returns (label int, payload bytes) of an image record, validated."""
    header, payload = recordio.unpack(record.data, rec_path, record.key, record.offset)
    if not (payload.startswith(JPEG_SIGNATURE) or payload.startswith(PNG_SIGNATURE)):
        raise recordio.RecordIOError(
            rec_path, 'payload is not a JPEG or PNG: starts with %r, expected ff d8 ff '
            'or 89 50 4e 47 0d 0a 1a 0a' % (payload[:8],), record.key, record.offset)
    label = header.label if header.flag == 0 else header.label[0]
    if not (math.isfinite(label) and label >= 0 and label == int(label)):
        raise recordio.RecordIOError(rec_path, 'label %r is not a non-negative integer'
                                     % (float(label),), record.key, record.offset)
    return int(label), payload


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
    third of the whole conversion; this takes ~3 us, copying the payload once
    (test_mx2tfrecords checks the bytes against protobuf's own).

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


def _convert_shard(task, reader, report):
    """Writes the images at positions [task.begin, task.end) to task.path."""
    # Imported here: a parent that only coordinates workers never pays for it.
    import tensorflow.compat.v1 as tf
    count, max_label, unreported = 0, -1, 0
    with tf.io.TFRecordWriter(task.path) as writer:
        for record in reader.iter_images(task.begin, task.end):
            label, payload = _checked_parts(record, task.rec_path)
            writer.write(encode_example(payload, label))
            count += 1
            max_label = max(max_label, label)
            unreported += 1
            if unreported == _REPORT_EVERY:
                report(unreported)
                unreported = 0
    report(unreported)
    return _ShardResult(task.path, count, max_label)


def _run_here(tasks, reader, tracker):
    done = [0]

    def report(count):
        done[0] += count
        tracker.update(done[0])

    results = [_convert_shard(task, reader, report) for task in tasks]
    tracker.update(done[0], final=True)
    return results


_worker = {}  # state of a worker process: its progress counter


def _report_to_counter(count):
    with _worker['counter'].get_lock():
        _worker['counter'].value += count


def _worker_main(tasks, counter, messages):
    """Converts `tasks` (consecutive shards) in a worker process.

    Sends ('done', _ShardResult) per shard, or ('error', exception) and stops.
    """
    # Ctrl-C reaches the whole process group; the parent alone handles it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _worker['counter'] = counter
    try:
        with recordio.IndexedRecordReader(tasks[0].rec_path, tasks[0].idx_path) as reader:
            for task in tasks:
                messages.put(('done', _convert_shard(task, reader, _report_to_counter)))
    except (recordio.RecordIOError, ConversionError) as error:
        messages.put(('error', error))
    except Exception as error:  # pylint: disable=broad-except
        # Not every exception pickles (TensorFlow's do not): send its text.
        messages.put(('error', ConversionError('%s: %s' % (type(error).__name__, error))))


def _run_workers(tasks, num_workers, tracker):
    """Runs the tasks in `num_workers` spawned processes, each on consecutive shards."""
    context = multiprocessing.get_context('spawn')
    counter = context.Value('q', 0)
    messages = context.Queue()
    workers = []
    for index in range(num_workers):
        share = tasks[index * len(tasks) // num_workers:(index + 1) * len(tasks) // num_workers]
        workers.append(context.Process(target=_worker_main, args=(share, counter, messages),
                                       name='mx2tfrecords-%d' % index, daemon=True))
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


def _manifest(rec_path, idx_path, prop, image_size, results):
    max_label = max(r.max_label for r in results)
    if prop is None:
        num_classes = max_label + 1
    elif max_label >= prop['num_classes']:
        raise ConversionError('%s says %d classes but labels go up to %d'
                              % (prop['path'], prop['num_classes'], max_label))
    else:
        num_classes = prop['num_classes']
    return {
        'format': manifest_lib.FORMAT,
        'version': manifest_lib.VERSION,
        'num_images': sum(r.num_images for r in results),
        'num_classes': num_classes,
        'image_size': list(image_size),
        'features': manifest_lib.FEATURES,
        'shards': [{'file': os.path.basename(r.path), 'num_images': r.num_images,
                    'size_bytes': os.path.getsize(r.path)} for r in results],
        'source': {'rec_path': os.path.abspath(rec_path),
                   'idx_path': os.path.abspath(idx_path),
                   'property_path': prop and prop['path']},
    }


def _commit(temp_dir, out_dir, shard_files):
    """Moves finished shards from temp_dir into out_dir, manifest last."""
    if not os.path.exists(out_dir):
        os.rename(temp_dir, out_dir)  # a single atomic step
        return
    manifest_path = os.path.join(out_dir, manifest_lib.MANIFEST_NAME)
    if os.path.exists(manifest_path):  # --overwrite: stop claiming completeness first
        os.remove(manifest_path)
    for name in os.listdir(out_dir):  # shards of an older or interrupted run
        if manifest_lib.is_shard_file_name(name) and name not in shard_files:
            os.remove(os.path.join(out_dir, name))
    for name in shard_files:
        os.replace(os.path.join(temp_dir, name), os.path.join(out_dir, name))
    os.replace(os.path.join(temp_dir, manifest_lib.MANIFEST_NAME), manifest_path)


class _Progress(object):
    """Progress on stderr: one updating line on a terminal, else a line per 5 s or 10%."""

    def __init__(self, total, stream=None, enabled=True):
        self._total = total
        self._stream = stream or sys.stderr
        self._enabled = enabled
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
        line = 'mx2tfrecords: %d/%d images (%.1f%%), %.0f images/s, ETA %s' % (
            done, self._total, 100.0 * done / self._total, rate, eta)
        if self._tty:
            self._stream.write('\r%-79s' % line + ('\n' if final else ''))
        else:
            self._stream.write(line + '\n')
        self._stream.flush()


def _positive_int(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError('%r is not a positive integer' % text)
    return value


def _parse_args(argv):
    parser = argparse.ArgumentParser(
        prog='mx2tfrecords', description='Convert an MXNet RecordIO face dataset '
        '(insightface train.rec + train.idx) to TFRecord shards and a manifest.json.')
    # Input
    parser.add_argument('--bin_path', type=str, required=True,
                        help='MXNet .rec file, e.g. datasets/faces_emore/train.rec; a '
                        '"property" file beside it gives num_classes,height,width')
    parser.add_argument('--idx_path', type=str, required=True,
                        help='its .idx file, e.g. datasets/faces_emore/train.idx')
    # Output
    parser.add_argument('--tfrecords_file_path', type=str, required=True,
                        help='output FOLDER for train-*-of-*.tfrecord and manifest.json')
    parser.add_argument('--num_shards', type=_positive_int, default=None,
                        help='number of shards; default one per GiB of .rec, at least '
                        '--num_workers, at most one per image')
    parser.add_argument('--overwrite', action='store_true',
                        help='replace a complete conversion already in the folder')
    # Execution
    parser.add_argument('--num_workers', type=_positive_int,
                        default=min(4, multiprocessing.cpu_count()),
                        help='parallel worker processes (default: min(4, CPUs) = %(default)s)')
    parser.add_argument('--no_progress', action='store_true',
                        help='do not print the progress line on stderr')
    return parser.parse_args(argv)


def _interrupt(unused_signum, unused_frame):
    raise KeyboardInterrupt()


def main(argv=None):
    """Runs the CLI; returns the exit status (0, 2 bad input/output, 130 interrupted)."""
    args = _parse_args(argv)
    # A plain `kill` should clean up like Ctrl-C does (handlers: main thread only).
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _interrupt) if in_main_thread else None
    try:
        manifest = convert(args.bin_path, args.idx_path, args.tfrecords_file_path,
                           num_shards=args.num_shards, num_workers=args.num_workers,
                           overwrite=args.overwrite, progress=not args.no_progress)
    except (recordio.RecordIOError, ConversionError, OSError) as error:
        sys.stderr.write('mx2tfrecords: error: %s\n' % error)
        return 2
    except KeyboardInterrupt:
        sys.stderr.write('mx2tfrecords: interrupted; partial output removed, %s holds no '
                         'new conversion\n' % args.tfrecords_file_path)
        return 130
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)
    sys.stderr.write('mx2tfrecords: wrote %d images of %d classes in %d shards to %s\n'
                     % (manifest['num_images'], manifest['num_classes'],
                        len(manifest['shards']), args.tfrecords_file_path))
    return 0


if __name__ == '__main__':
    sys.exit(main())
