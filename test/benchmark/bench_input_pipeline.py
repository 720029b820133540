"""Benchmarks data/input_pipeline.py: images/s of training batches on this machine.

Generates a synthetic dataset (data/make_synthetic_dataset.py), converts it to
TFRecord shards (data/mx2tfrecords.py; or, if that module is missing, writes
the same Examples directly), then times batches after a warm-up for a few
pipeline settings. Prints a table and writes JSON to --output.

Not a test (pytest does not collect it). Usage, from the project root:
    python3 test/benchmark/bench_input_pipeline.py --output output/bench_input_pipeline.json
"""
import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time

_PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if _PROJECT_ROOT not in sys.path:
    sys.path.insert(0, _PROJECT_ROOT)

from data import quiet  # noqa: E402,F401  (first: TensorFlow's logs silenced)
import tensorflow.compat.v1 as tf  # noqa: E402

from data import (  # noqa: E402
    image_ops, input_pipeline, make_synthetic_dataset, recordio, recordio_reader)

# name -> build_dataset options; 'num_parallel_calls' None means AUTOTUNE.
SETTINGS = (
    ('flip (default)', {}),
    ('flip, 1 map thread', {'num_parallel_calls': 1}),
    # train_nets.py's input: each record decoded on its own so that a bad one is named.
    ('flip, bad records named', {'on_bad_record': lambda *bad: None}),
    ('flip + augmentation', {'max_translation': 4, 'crop_scale': (0.85, 1.0),
                             'brightness_delta': 0.1, 'contrast_range': (0.8, 1.2)}),
)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    # Data #
    parser.add_argument('--num_identities', type=int, default=100,
                        help='synthetic identities; default %(default)s')
    parser.add_argument('--images_per_identity', type=int, default=40,
                        help='images per identity; default %(default)s')
    parser.add_argument('--image_size', type=str, default='112,112',
                        help='height,width; default %(default)s')
    parser.add_argument('--num_shards', type=int, default=4,
                        help='TFRecord shards; default %(default)s')
    # Timing #
    parser.add_argument('--batch_size', type=int, default=128, help='default %(default)s')
    parser.add_argument('--warmup_batches', type=int, default=10,
                        help='batches run before timing (fills the shuffle buffer); '
                             'default %(default)s')
    parser.add_argument('--batches', type=int, default=60,
                        help='timed batches per setting; default %(default)s')
    parser.add_argument('--buffer_size', type=int, default=10000,
                        help='shuffle buffer in records; default %(default)s')
    # Output #
    parser.add_argument('--work_dir', type=str, default=None,
                        help='keep the generated data here; default a temporary folder, '
                             'removed at the end')
    parser.add_argument('--output', type=str, default=None,
                        help='JSON results file; not written if not given')
    return parser.parse_args(argv)


def make_tfrecords(work_dir, args):
    """Generates the synthetic set and converts it; returns the shard paths."""
    source = os.path.join(work_dir, 'synthetic')
    tfrecords = os.path.join(work_dir, 'tfrecords')
    if not os.path.exists(source):
        make_synthetic_dataset.make_dataset(
            source, args.num_identities, args.images_per_identity, num_val_identities=2,
            num_val_pairs=20, image_size=image_ops.parse_image_size(args.image_size),
            num_workers=os.cpu_count() or 1, log=lambda line: print(line, file=sys.stderr))
    rec, idx = os.path.join(source, 'train.rec'), os.path.join(source, 'train.idx')
    try:
        from data import mx2tfrecords
    except ImportError:
        mx2tfrecords = None
    if os.path.exists(tfrecords):
        shutil.rmtree(tfrecords)
    if mx2tfrecords is not None:
        manifest = mx2tfrecords.convert(rec, idx, tfrecords, num_shards=args.num_shards,
                                        progress=False)
        return [os.path.join(tfrecords, s['file']) for s in manifest['shards']]
    return _write_tfrecords(rec, idx, tfrecords, args.num_shards)


def _write_tfrecords(rec, idx, folder, num_shards):
    """Fallback converter: the same tf.train.Example format as data/mx2tfrecords.py."""
    os.makedirs(folder)
    paths = [os.path.join(folder, 'train-%05d-of-%05d.tfrecord' % (i, num_shards))
             for i in range(num_shards)]
    writers = [tf.io.TFRecordWriter(p) for p in paths]
    with recordio_reader.IndexedRecordReader(rec, idx) as reader:
        for n, record in enumerate(reader.iter_images()):
            header, payload = recordio.unpack(record.data)
            example = tf.train.Example(features=tf.train.Features(feature={
                'image_raw': tf.train.Feature(bytes_list=tf.train.BytesList(value=[payload])),
                'label': tf.train.Feature(int64_list=tf.train.Int64List(
                    value=[int(header.label)]))}))
            writers[n * num_shards // reader.num_images].write(example.SerializeToString())
    for writer in writers:
        writer.close()
    return paths


def time_setting(files, args, options):
    """Images/s of one pipeline setting, after warm-up."""
    with tf.Graph().as_default():
        images, labels = input_pipeline.make_input(
            files, args.batch_size, image_ops.parse_image_size(args.image_size),
            buffer_size=args.buffer_size, seed=0, **options)
        # Fetch a scalar so the timing is the pipeline's, not the copy to numpy.
        step = tf.group(tf.reduce_sum(images), tf.reduce_sum(labels))
        with tf.Session() as session:
            for _ in range(args.warmup_batches):
                session.run(step)
            start = time.time()
            for _ in range(args.batches):
                session.run(step)
            seconds = time.time() - start
    return {'images_per_second': args.batches * args.batch_size / seconds,
            'batches_per_second': args.batches / seconds, 'seconds': seconds}


def main(argv=None):
    args = parse_args(argv)
    work_dir = args.work_dir or tempfile.mkdtemp(prefix='bench_input_pipeline_')
    try:
        files = make_tfrecords(work_dir, args)
        results = []
        for name, options in SETTINGS:
            result = time_setting(files, args, options)
            result.update(setting=name, options={k: v for k, v in options.items()})
            results.append(result)
    finally:
        if args.work_dir is None:
            shutil.rmtree(work_dir, ignore_errors=True)
    print('%-24s %12s %12s' % ('setting', 'images/s', 'batches/s'))
    for r in results:
        print('%-24s %12.0f %12.2f' % (r['setting'], r['images_per_second'],
                                       r['batches_per_second']))
    report = {
        'tensorflow': tf.__version__, 'python': platform.python_version(),
        'cpus': os.cpu_count(), 'num_images': args.num_identities * args.images_per_identity,
        'image_size': args.image_size, 'batch_size': args.batch_size,
        'num_shards': len(files), 'batches': args.batches, 'results': results,
    }
    if args.output:
        with open(args.output, 'w') as out:
            json.dump(report, out, indent=2)
            out.write('\n')
    return 0


if __name__ == '__main__':
    sys.exit(main())
