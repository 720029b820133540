"""Benchmarks reading a .rec file and converting it with data/mx2tfrecords.py.

Not a test: pytest collects only test_*.py. For each dataset it measures
  read:       reading every image record through the index (the target: convert
              within 3x of this);
  read+write: reading them and writing their bytes to a plain file, the floor
              for any converter, since conversion writes as much as it reads;
  convert:    data/mx2tfrecords.convert wall time for each worker count, and
              its steady rate, from the first converted record to the last
              (worker pools are spawned processes that each import TensorFlow
              first: a fixed cost of seconds, excluded from the steady rate).

Run from the project root. The page cache is warm after the first read, so
read times are memory speed: a lower bound for a cold disk.
    .venv/bin/python test/benchmark/bench_data.py --num_images 20000 \\
        --output /tmp/bench_data.json
"""
import argparse
import json
import os
import shutil
import sys
import tempfile
import time

PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, PROJECT_ROOT)

from data import mx2tfrecords  # noqa: E402 (needs the path above)
from data import recordio, recordio_reader, recordio_writer  # noqa: E402

DEFAULT_REC = os.path.join(os.path.dirname(PROJECT_ROOT), 'shared', 'data', 'orl_faces',
                           'train.rec')


def _timed(function, *args, **kwargs):
    start = time.time()
    result = function(*args, **kwargs)
    return time.time() - start, result


def _stream_all(rec_path):
    return sum(1 for _ in recordio_reader.iter_records(rec_path))


def _read_images(rec_path, idx_path):
    with recordio_reader.IndexedRecordReader(rec_path, idx_path) as reader:
        return sum(len(record.data) for record in reader.iter_images())


def _repeat(rec_path, idx_path, num_images, out_rec, out_idx):
    """Writes an insightface-layout .rec of num_images by cycling the source images."""
    with recordio_reader.IndexedRecordReader(rec_path, idx_path) as reader:
        source = [record.data for record in reader.iter_images()]
    with recordio_writer.IndexedRecordWriter(out_rec, out_idx) as writer:
        writer.write(0, recordio.pack_insightface_header(num_images + 1, num_images + 1))
        for key in range(1, num_images + 1):
            writer.write(key, source[(key - 1) % len(source)])


def _read_write(rec_path, idx_path, out_path):
    with recordio_reader.IndexedRecordReader(rec_path, idx_path) as reader, \
            open(out_path, 'wb') as out:
        for record in reader.iter_images():
            out.write(record.data)
    os.remove(out_path)


class _Recorder(object):
    """Progress tracker that records (time, images done) instead of printing."""

    def __init__(self):
        self.samples = []
        self._done = 0

    def update(self, count):
        self._done += count
        self.samples.append((time.time(), self._done))


def _convert_timed(rec_path, idx_path, out, count):
    """(wall seconds, steady images/s) of one conversion."""
    recorder = _Recorder()
    seconds, _ = _timed(mx2tfrecords.convert, rec_path, idx_path, out,
                        num_shards=max(count, 2), num_workers=count, progress=recorder)
    shutil.rmtree(out)
    started = [(t, done) for t, done in recorder.samples if done > 0]
    (t0, done0), (t1, done1) = started[0], started[-1]
    return seconds, (done1 - done0) / (t1 - t0) if t1 > t0 and done1 > done0 else None


def _bench(name, rec_path, idx_path, workers, work_dir):
    with recordio_reader.IndexedRecordReader(rec_path, idx_path) as reader:
        num_images = reader.num_images
    row = {'dataset': name, 'rec_path': rec_path, 'images': num_images,
           'megabytes': os.path.getsize(rec_path) / 1e6}
    _stream_all(rec_path)  # warm the page cache, so each run sees the same
    row['read_stream_s'], _ = _timed(_stream_all, rec_path)
    row['read_s'], _ = _timed(_read_images, rec_path, idx_path)
    row['read_write_s'], _ = _timed(_read_write, rec_path, idx_path,
                                    os.path.join(work_dir, 'copy.bin'))
    for count in workers:
        seconds, steady = _convert_timed(rec_path, idx_path,
                                         os.path.join(work_dir, '%s_%dw' % (name, count)), count)
        row['convert_%dw_s' % count] = seconds
        row['convert_%dw_images_per_s' % count] = num_images / seconds
        row['convert_%dw_steady_images_per_s' % count] = steady
        row['convert_%dw_steady_x_read' % count] = (
            num_images / steady / row['read_s'] if steady else None)
    return row


def _print_table(rows, workers):
    header = ['dataset', 'images', 'MB', 'read s', 'read+write s']
    for count in workers:
        header += ['conv %dw s' % count, 'img/s', 'steady img/s', 'steady/read']
    print(' | '.join(header))
    for row in rows:
        cells = [row['dataset'], '%d' % row['images'], '%.1f' % row['megabytes'],
                 '%.3f' % row['read_s'], '%.3f' % row['read_write_s']]
        for count in workers:
            steady = row['convert_%dw_steady_images_per_s' % count]
            cells += ['%.2f' % row['convert_%dw_s' % count],
                      '%.0f' % row['convert_%dw_images_per_s' % count],
                      '%.0f' % steady if steady else 'n/a',
                      '%.1fx' % row['convert_%dw_steady_x_read' % count] if steady else 'n/a']
        print(' | '.join(cells))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--rec_path', type=str, default=DEFAULT_REC,
                        help='.rec to benchmark (default: shared ORL faces)')
    parser.add_argument('--idx_path', type=str, default=None,
                        help='its .idx (default: the .rec path with .idx)')
    parser.add_argument('--num_images', type=int, default=20000,
                        help='also benchmark a .rec of this many images made by repeating '
                        'the source records; 0 to skip')
    parser.add_argument('--workers', type=str, default='1,2',
                        help='comma-separated worker counts to time')
    parser.add_argument('--output', type=str, default=None,
                        help='write the results as JSON to this path')
    args = parser.parse_args(argv)
    idx_path = args.idx_path or os.path.splitext(args.rec_path)[0] + '.idx'
    workers = [int(w) for w in args.workers.split(',')]
    import tensorflow  # noqa: F401 (import once here, not inside the 1-worker timing)
    work_dir = tempfile.mkdtemp(prefix='bench_data_')
    try:
        rows = [_bench('source', args.rec_path, idx_path, workers, work_dir)]
        if args.num_images:
            big_rec = os.path.join(work_dir, 'big.rec')
            big_idx = os.path.join(work_dir, 'big.idx')
            _repeat(args.rec_path, idx_path, args.num_images, big_rec, big_idx)
            rows.append(_bench('repeated', big_rec, big_idx, workers, work_dir))
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
    _print_table(rows, workers)
    if args.output:
        with open(args.output, 'w') as out:
            json.dump({'python': sys.version.split()[0], 'tensorflow': tensorflow.__version__,
                       'rows': rows}, out, indent=2)
    return 0


if __name__ == '__main__':  # required: worker pools re-import this file
    sys.exit(main())
