"""The measurements behind `make bench`, one per process.

Each section runs in a fresh process (`bench.py` starts them), so its peak
resident memory is its own and one section's TensorFlow state cannot slow
another. Usage (bench.py does this):
    python test/benchmark/sections.py SECTION --work_dir DIR --json OUT [options]

Sections:
  data        generate the synthetic dataset, time mx2tfrecords against a plain
              read, the input pipeline alone, verification.evaluate on 6,000
              pairs, and the machine's matmul peak;
  train       train_nets.py's graph (train_graph.build_graph, input included):
              images/s after warm-up, achieved GFLOP/s, peak RSS of training;
              then the inference graph's images/s at the same batch size;
  eval_memory load a verification .bin and embed it with flips (what
              validation and eval_ckpt_file.py do): peak RSS against the size
              of the decoded uint8 images;
  export      export_model.py's frozen graph in TensorFlow and its ONNX model
              (--onnx, where tf2onnx is installed) in onnxruntime: images/s at
              batch 1 and 32, same random images, after one warm-up batch.
"""
import argparse
import json
import os
import resource
import shutil
import sys
import time

_HERE = os.path.dirname(os.path.abspath(__file__))
_ROOT = os.path.dirname(os.path.dirname(_HERE))
for _path in (_ROOT, _HERE):
    if _path not in sys.path:
        sys.path.insert(0, _path)

from data import quiet  # noqa: E402,F401  (first: TensorFlow's logs silenced)
import numpy as np  # noqa: E402

import machine  # noqa: E402  (test/benchmark)

IMAGE_SIZE = (112, 112)
MB = 1e6


def peak_rss_mb():
    """This process's peak resident memory so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / MB


def current_rss_mb():
    kib = machine.proc_kib('/proc/self/status', 'VmRSS')
    return kib * 1024 / MB if kib else None


def _paths(work_dir):
    return {'source': os.path.join(work_dir, 'synthetic'),
            'records': os.path.join(work_dir, 'tfrecords')}


def _timed(function, *args, **kwargs):
    start = time.time()
    result = function(*args, **kwargs)
    return time.time() - start, result


def bench_conversion(source, work_dir, num_images):
    """mx2tfrecords.convert (one worker) next to merely reading the .rec.

    The .rec is the synthetic one cycled to `num_images` records (bench_data's
    way), so the timing is long enough to mean something at any dataset size.
    """
    import bench_data
    from data import mx2tfrecords
    rec, idx = os.path.join(work_dir, 'big.rec'), os.path.join(work_dir, 'big.idx')
    bench_data._repeat(os.path.join(source, 'train.rec'),  # pylint: disable=protected-access
                       os.path.join(source, 'train.idx'), num_images, rec, idx)
    records = os.path.join(work_dir, 'big_tfrecords')
    bench_data._read_images(rec, idx)  # page cache warm for both timings
    read_s, _ = _timed(bench_data._read_images, rec, idx)
    convert_s, manifest = _timed(mx2tfrecords.convert, rec, idx, records, num_workers=1,
                                 progress=False)
    for path in (rec, idx):
        os.remove(path)
    shutil.rmtree(records)
    images = manifest['num_images']
    return {'images': images, 'read_s': read_s, 'read_images_per_s': images / read_s,
            'convert_s': convert_s, 'convert_images_per_s': images / convert_s,
            'convert_x_read': convert_s / read_s}


def bench_pipeline(records, batch_size, warmup, batches):
    """Input pipeline alone: TFRecords to normalised, flipped batches; and with --augment."""
    import bench_input_pipeline
    from data.manifest import load_manifest
    import train_nets
    from training import setup
    files = load_manifest(records)['shard_paths']
    # train_nets.py's own --augment defaults, through its parser.
    augment_args = train_nets.get_parser().parse_args(
        ['--augment', 'True', '--image_size', '%d,%d' % IMAGE_SIZE])
    settings = {'flip': {}, 'flip+augment': setup.graph_spec(augment_args).augmentation}
    options = argparse.Namespace(batch_size=batch_size, image_size='%d,%d' % IMAGE_SIZE,
                                 buffer_size=10000, warmup_batches=warmup, batches=batches)
    return {name: bench_input_pipeline.time_setting(files, options, setting)
            for name, setting in sorted(settings.items())}


def bench_verification(pairs, repeats):
    import bench_verification
    import verification
    embeddings, issame = bench_verification.random_pair_set(pairs, 512, 0)
    verification.evaluate(embeddings, issame)
    seconds = []
    for _ in range(repeats):
        elapsed, _ = _timed(verification.evaluate, embeddings, issame)
        seconds.append(elapsed)
    return {'pairs': pairs, 'median_s': float(np.median(seconds)), 'min_s': float(min(seconds))}


def section_data(args):
    from data import make_synthetic_dataset
    paths = _paths(args.work_dir)
    if os.path.exists(paths['source']):
        shutil.rmtree(paths['source'])
    gen_s, _ = _timed(make_synthetic_dataset.make_dataset, paths['source'], args.num_identities,
                      args.images_per_identity, num_val_identities=20,
                      num_val_pairs=args.eval_pairs, image_size=IMAGE_SIZE,
                      num_workers=os.cpu_count() or 1)
    result = {'machine': machine.describe(),
              'generate': {'images': args.num_identities * args.images_per_identity
                           + 2 * args.eval_pairs, 'seconds': gen_s}}
    result['conversion'] = bench_conversion(paths['source'], args.work_dir,
                                            args.conversion_images)
    from data import mx2tfrecords
    mx2tfrecords.convert(os.path.join(paths['source'], 'train.rec'),
                         os.path.join(paths['source'], 'train.idx'), paths['records'],
                         num_workers=1, progress=False)
    result['pipeline'] = bench_pipeline(paths['records'], args.batch_size, args.warmup,
                                        args.pipeline_batches)
    result['verification'] = bench_verification(6000, args.repeats)
    result['matmul'] = machine.matmul_peak(args.matmul_sizes, args.matmul_seconds)
    try:  # a TensorFlow build without a bfloat16 MatMul kernel on this device
        result['matmul_bfloat16'] = machine.matmul_peak(args.matmul_sizes, args.matmul_seconds,
                                                        dtype='bfloat16')
    except Exception as error:  # pylint: disable=broad-except
        result['matmul_bfloat16'] = {'unavailable': str(error).split('\n')[0]}
    return result


def _train_args(args, paths):
    import train_nets
    argv = ['--tfrecords_file_path', paths['records'], '--eval_db_path', paths['source'],
            '--eval_datasets', 'lfw', '--net_depth', str(args.depth),
            '--batch_size', str(args.batch_size), '--seed', '0',
            '--ckpt_path', os.path.join(args.work_dir, 'unused_ckpt')]
    if args.device:
        argv += ['--device', args.device]
    # On the CPU the precision is the section's choice (float32 rows compare across
    # machines and frameworks); elsewhere train_nets.py's default.
    from devices import runtime
    if runtime.select_device(args.device or 'auto') == 'cpu':
        argv += ['--mixed_precision', 'auto' if args.cpu_bfloat16 else 'off']
    return train_nets.get_parser().parse_args(argv)


def section_train(args):
    """train_nets.py's graph, timed over wall time with its input pipeline."""
    import tensorflow.compat.v1 as tf
    import flops
    from devices import runtime
    from training import setup, train_graph
    train_args = _train_args(args, _paths(args.work_dir))
    plan = setup.prepare(train_args)
    if args.cpu_bfloat16 and not plan.cpu_bfloat16:
        return {'skipped': 'this CPU or TensorFlow trains without bfloat16'}
    with tf.Graph().as_default() as graph:
        tensors = train_graph.build_graph(plan.graph, plan)
        forward = flops.forward_flops(graph, 'resnet_v1_%d/' % args.depth)
        config = runtime.session_config(plan.device, plan.npu_options,
                                        num_threads=train_args.num_threads,
                                        bfloat16=plan.cpu_bfloat16)
        with tf.Session(config=config) as sess:
            sess.run(tf.global_variables_initializer())
            sess.run(tensors['init_local'])
            first_s, _ = _timed(sess.run, tensors['fetches'])  # graph optimisation, allocation
            for _ in range(args.warmup):
                sess.run(tensors['fetches'])
            start = time.time()
            for _ in range(args.steps):
                values = sess.run(tensors['fetches'])
            step_s = (time.time() - start) / args.steps
            train_rss = peak_rss_mb()
            if not np.isfinite(values['total_loss']):
                raise RuntimeError('non-finite loss %s in the benchmark' % values['total_loss'])
            inference = _time_validation(sess, plan, train_args.num_threads, args)
    training_flops = flops.TRAINING_TO_FORWARD * forward
    return {'depth': args.depth, 'batch_size': args.batch_size, 'device': plan.device,
            'precision': 'bfloat16' if plan.cpu_bfloat16 else 'float32',
            'warmup_steps': args.warmup + 1, 'timed_steps': args.steps,
            'first_step_s': first_s, 'step_s': step_s,
            'images_per_s': args.batch_size / step_s,
            'forward_gflop_per_image': forward / args.batch_size / 1e9,
            'achieved_gflops': training_flops / step_s / 1e9,
            'peak_rss_mb': train_rss, 'inference': inference}


def _time_validation(sess, plan, num_threads, args):
    """Validation's cost: loading the training weights into its float32 graph, and
    embedding there (trainer.py's validation_graph)."""
    import tensorflow.compat.v1 as tf
    from training import validation_graph
    spec = plan.graph
    validation = validation_graph.ValidationGraph(
        spec.net_depth, spec.net_width, spec.norm, spec.image_size, spec.net_input_size,
        spec.eval_batch_size, plan.device, plan.npu_options, num_threads=num_threads)
    try:
        batch = validation.batch_size
        with validation.session.graph.as_default():  # the copy validation keeps
            weights_mb = sum(var.shape.num_elements() * var.dtype.base_dtype.size
                             for var in tf.global_variables()) / 1e6
        images = np.random.RandomState(0).randint(
            0, 256, (batch,) + IMAGE_SIZE + (3,)).astype(np.uint8)
        feed = {validation.images: images}
        validation.load(sess)
        validation.session.run(validation.embedding, feed)
        loads = []
        for _ in range(3):
            validation.load(sess)
            loads.append(validation.load_seconds)
        start = time.time()
        for _ in range(args.inference_batches):
            validation.session.run(validation.embedding, feed)
        seconds = (time.time() - start) / args.inference_batches
    finally:
        validation.close()
    return {'batch_size': batch, 'batch_s': seconds, 'images_per_s': batch / seconds,
            'load_weights_s': min(loads), 'weights_mb': weights_mb}


def section_eval_memory(args):
    """Peak memory of verifying a .bin: decoded uint8 images, embedded batch by batch."""
    import tensorflow.compat.v1 as tf
    from nets import inference
    import verification
    from data import eval_data_reader
    bin_path = os.path.join(_paths(args.work_dir)['source'], 'lfw.bin')
    with tf.Graph().as_default():
        images_ph, embedding = inference.inference_graph(args.depth, IMAGE_SIZE, args.batch_size)
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            sess.run(embedding, {images_ph: np.zeros(images_ph.get_shape().as_list(), np.uint8)})
            baseline = current_rss_mb()
            peak_before = peak_rss_mb()  # graph building and the first run may peak higher
            load_s, (images, issame) = _timed(eval_data_reader.load_bin, bin_path, IMAGE_SIZE)
            after_load = current_rss_mb()
            run_s, result = _timed(verification.run_verification, sess, images_ph, embedding,
                                   images, issame, args.batch_size)
    count = images.shape[0]
    return {'depth': args.depth, 'batch_size': args.batch_size, 'images': count,
            'uint8_images_mb': images.nbytes / MB,
            'bin_file_mb': os.path.getsize(bin_path) / MB,
            # insightface's loader kept float64 NCHW copies of the images and their flips
            'original_float64_mb': 2 * images.size * 8 / MB,
            'baseline_rss_mb': baseline, 'after_load_rss_mb': after_load,
            'peak_before_load_rss_mb': peak_before,
            'peak_rss_mb': peak_rss_mb(), 'load_s': load_s, 'embed_and_evaluate_s': run_s,
            'images_per_s': 2 * count / run_s, 'accuracy_untrained': result.accuracy}


def _images_per_s(run_batch, batch, batches):
    """images/s of run_batch(images) on a random uint8 batch, after one warm-up call."""
    images = np.random.RandomState(0).randint(0, 256, (batch,) + IMAGE_SIZE + (3,)).astype(
        np.uint8)
    run_batch(images)
    start = time.time()
    for _ in range(batches):
        run_batch(images)
    return batch * batches / (time.time() - start)


def section_export(args):
    """The exported frozen graph in TensorFlow against its ONNX model in onnxruntime."""
    import tensorflow.compat.v1 as tf
    import export_model
    from nets import inference
    prefix = os.path.join(args.work_dir, 'export_ckpt_d%d' % args.depth, 'model.ckpt')
    with tf.Graph().as_default():
        inference.inference_graph(args.depth, IMAGE_SIZE)
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            tf.train.Saver().save(sess, prefix, write_meta_graph=False)
    out = os.path.join(args.work_dir, 'export_d%d' % args.depth)
    has_onnx = export_model.onnx_converter() is not None
    flags = ['--ckpt_file', prefix, '--format', 'pb', '--output_dir', out, '--overwrite']
    export_s, code = _timed(export_model.main, flags + (['--onnx'] if has_onnx else []))
    if code != 0:
        raise RuntimeError('export_model.py failed with exit code %d' % code)
    result = {'depth': args.depth, 'export_s': export_s, 'frozen': {}, 'onnx': {}}
    graph_def = tf.GraphDef()
    with open(os.path.join(out, export_model.FROZEN_GRAPH), 'rb') as frozen:
        graph_def.ParseFromString(frozen.read())
    with tf.Graph().as_default(), tf.Session() as sess:
        tf.import_graph_def(graph_def, name='')
        for batch in (1, 32):
            result['frozen'][str(batch)] = _images_per_s(
                lambda images: sess.run('embeddings:0', {'input_images:0': images}), batch,
                args.inference_batches)
    if has_onnx:
        import onnxruntime
        session = onnxruntime.InferenceSession(os.path.join(out, export_model.ONNX_MODEL),
                                               providers=['CPUExecutionProvider'])
        result['onnxruntime_version'] = onnxruntime.__version__
        for batch in (1, 32):
            result['onnx'][str(batch)] = _images_per_s(
                lambda images: session.run(['embeddings'], {'input_images': images}), batch,
                args.inference_batches)
    shutil.rmtree(out)
    return result


SECTIONS = {'data': section_data, 'train': section_train, 'eval_memory': section_eval_memory,
            'export': section_export}


def get_parser():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('section', choices=sorted(SECTIONS))
    parser.add_argument('--work_dir', required=True, help='holds the generated data')
    parser.add_argument('--json', required=True, help='where to write the result')
    parser.add_argument('--num_identities', type=int, default=100)
    parser.add_argument('--images_per_identity', type=int, default=8)
    parser.add_argument('--eval_pairs', type=int, default=200,
                        help='pairs of the generated lfw.bin (a multiple of 20)')
    parser.add_argument('--conversion_images', type=int, default=20000,
                        help='records in the .rec that mx2tfrecords converts')
    parser.add_argument('--batch_size', type=int, default=32)
    parser.add_argument('--warmup', type=int, default=2, help='untimed steps/batches')
    parser.add_argument('--steps', type=int, default=5, help='timed training steps')
    parser.add_argument('--inference_batches', type=int, default=5)
    parser.add_argument('--pipeline_batches', type=int, default=40)
    parser.add_argument('--repeats', type=int, default=5, help='verification.evaluate runs')
    parser.add_argument('--matmul_sizes', type=lambda s: [int(v) for v in s.split(',')],
                        default=[1024, 2048, 4096])
    parser.add_argument('--matmul_seconds', type=float, default=2.0)
    parser.add_argument('--depth', type=int, default=50)
    parser.add_argument('--device', default=None, help="train_nets.py's --device")
    parser.add_argument('--cpu_bfloat16', action='store_true',
                        help='train in bfloat16 on a CPU that computes it, and skip the '
                             'section elsewhere (default: float32 on the CPU)')
    return parser


def main(argv=None):
    args = get_parser().parse_args(argv)
    import tensorflow.compat.v1 as tf
    tf.disable_v2_behavior()
    result = SECTIONS[args.section](args)
    result['process_peak_rss_mb'] = peak_rss_mb()
    with open(args.json, 'w') as out:
        json.dump(result, out, indent=2, sort_keys=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
