"""Times the training step under alternative graph and runtime options.

The record behind docs/performance.md's optimisation figures: each variant is the same
model mathematics (forward pass, ArcFace loss, weight decay, momentum update,
BN moving averages) built or run differently, timed in its own process on
constant in-graph inputs so only the step is measured. Variants:

  current         what train_nets.py builds and runs (fused BN, NHWC)
  unfused_bn      batch norm as tf.nn.moments + tf.nn.batch_normalization
                  (the "straightforward" graph of TensorLayer's BatchNormLayer)
  prelu_minmax    PReLU as max(x, 0) + alpha * min(x, 0) (same values)
  inter_op_1      one inter-op thread (intra-op: all cores)
  threads_2x2     inter- and intra-op threads set to the core count
  xla_jit         XLA auto-clustering (global_jit_level ON_1, --tf_xla_cpu_global_jit)
  no_onednn       TF_ENABLE_ONEDNN_OPTS=0 (TensorFlow 2.x's Eigen kernels)
  bfloat16        train_nets.py's CPU bfloat16 (oneDNN rewrite, head kept float32)
  group_norm      --norm group (the original's L_Resnet_E_IR_GBN.py; not the same
                  mathematics: what group norm costs, having no fused kernel)
  batch_renorm    --norm batch_renorm (L_Resnet_E_IR_RBN.py; likewise)

    python test/benchmark/bench_step_options.py --depth 50 --batch_size 32 \\
        --output output/bench/step_options.json

--profile N adds, per variant, the N op types that took longest in one traced
step (RunMetadata step stats, summed over the op's nodes; with several threads
the sum exceeds the wall time).
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import time

_HERE = os.path.dirname(os.path.abspath(__file__))
_ROOT = os.path.dirname(os.path.dirname(_HERE))
for _path in (_ROOT, _HERE):
    if _path not in sys.path:
        sys.path.insert(0, _path)

from data import quiet  # noqa: E402,F401  (first: TensorFlow's logs silenced)

VARIANTS = ('current', 'unfused_bn', 'prelu_minmax', 'inter_op_1', 'threads_2x2', 'xla_jit',
            'no_onednn', 'bfloat16', 'group_norm', 'batch_renorm')
NORM_VARIANTS = {'group_norm': 'group', 'batch_renorm': 'batch_renorm'}
# XLA auto-clustering on CPU needs this flag besides the session's global_jit_level.
ENVIRONMENT = {'no_onednn': {'TF_ENABLE_ONEDNN_OPTS': '0'},
               'xla_jit': {'TF_XLA_FLAGS': '--tf_xla_cpu_global_jit'}}


def _unfused_batch_norm(tf, layers):
    original = layers.batch_norm

    def batch_norm(inputs, is_training, scope, gamma_trainable=True):
        if inputs.get_shape().ndims != 4:
            return original(inputs, is_training, scope, gamma_trainable)
        with tf.variable_scope(scope):
            beta, gamma, moving_mean, moving_variance = layers.batch_norm_variables(
                inputs.get_shape().as_list()[-1], gamma_trainable)
        if is_training:
            mean, variance = tf.nn.moments(inputs, [0, 1, 2])
            decay = 1.0 - layers.DEFAULTS.bn_decay
            tf.add_to_collection(tf.GraphKeys.UPDATE_OPS,
                                 tf.assign_sub(moving_mean, (moving_mean - mean) * decay))
            tf.add_to_collection(tf.GraphKeys.UPDATE_OPS,
                                 tf.assign_sub(moving_variance, (moving_variance - variance)
                                               * decay))
        else:
            mean, variance = moving_mean, moving_variance
        return tf.nn.batch_normalization(inputs, mean, variance, beta, gamma,
                                         layers.DEFAULTS.bn_epsilon)
    layers.batch_norm = batch_norm


def _prelu_minmax(tf, layers):
    def prelu(inputs, scope):
        channels = inputs.get_shape().as_list()[-1]
        with tf.variable_scope(scope):
            alphas = tf.get_variable('alphas', [channels], tf.float32, tf.zeros_initializer())
        tf.add_to_collection(layers.WEIGHT_DECAY, alphas)
        return tf.maximum(inputs, 0.0) + alphas * tf.minimum(inputs, 0.0)
    layers.prelu = prelu


def _op_type(node_stats):
    # timeline_label reads 'node_name = OpType(inputs)' (TF 1.15 and 2.x)
    label = node_stats.timeline_label
    if ' = ' in label:
        return label.split(' = ', 1)[1].split('(', 1)[0]
    return node_stats.node_name.split(':', 1)[0].rsplit('/', 1)[-1]


def top_op_types(run_metadata, count):
    """[(op type, milliseconds)] of the `count` op types with most summed node time."""
    totals = {}
    for device in run_metadata.step_stats.dev_stats:
        for node in device.node_stats:
            key = _op_type(node)
            totals[key] = totals.get(key, 0.0) + node.all_end_rel_micros / 1000.0
    return sorted(totals.items(), key=lambda item: -item[1])[:count]


def time_variant(variant, depth, batch_size, steps, warmup, image_size=112, profile=0,
                 net_width='standard'):
    """Seconds per training step of one variant, in this process."""
    import tensorflow.compat.v1 as tf
    tf.disable_v2_behavior()
    import functools
    from devices import runtime
    from losses import objective
    import flops
    from nets import layers
    if variant == 'unfused_bn':
        _unfused_batch_norm(tf, layers)
    elif variant == 'prelu_minmax':
        _prelu_minmax(tf, layers)
    config = runtime.session_config('cpu', bfloat16=variant == 'bfloat16')
    float32_scope = functools.partial(runtime.float32_scope, 'cpu', variant == 'bfloat16')
    cores = os.cpu_count() or 1
    if variant == 'inter_op_1':
        config.inter_op_parallelism_threads = 1
    elif variant == 'threads_2x2':
        config.inter_op_parallelism_threads = cores
        config.intra_op_parallelism_threads = cores
    elif variant == 'xla_jit':
        config.graph_options.optimizer_options.global_jit_level = tf.OptimizerOptions.ON_1
    with tf.Graph().as_default() as graph:
        tf.set_random_seed(0)
        images = tf.Variable(tf.random_uniform([batch_size, image_size, image_size, 3], -1.0, 1.0),
                             trainable=False)
        labels = tf.Variable(tf.random_uniform([batch_size], 0, 1000, tf.int32), trainable=False)
        global_step = tf.train.get_or_create_global_step()
        losses = objective.training_losses(images, labels, depth, 1000,
                                           float32_scope=float32_scope,
                                           norm=NORM_VARIANTS.get(variant, 'batch'),
                                           variant=net_width)
        forward = flops.forward_flops(graph, 'resnet_v1_%d/' % depth)
        with tf.control_dependencies(tf.get_collection(tf.GraphKeys.UPDATE_OPS)):
            train = tf.train.MomentumOptimizer(0.01, 0.9).minimize(losses.total, global_step)
        with tf.Session(config=config) as sess:
            sess.run(tf.global_variables_initializer())
            for _ in range(warmup):
                sess.run(train)
            start = time.time()
            for _ in range(steps):
                sess.run(train)
            step_s = (time.time() - start) / steps
            top = []
            if profile:
                metadata = tf.RunMetadata()
                sess.run(train, options=tf.RunOptions(trace_level=tf.RunOptions.FULL_TRACE),
                         run_metadata=metadata)
                top = top_op_types(metadata, profile)
    return {'variant': variant, 'top_ops_ms': top, 'tensorflow': tf.__version__, 'depth': depth,
            'net_width': net_width,
            'image_size': image_size,
            'batch_size': batch_size, 'step_s': step_s, 'images_per_s': batch_size / step_s,
            'achieved_gflops': flops.TRAINING_TO_FORWARD * forward / step_s / 1e9,
            'peak_rss_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--variants', default=','.join(VARIANTS),
                        help='comma-separated subset of: ' + ', '.join(VARIANTS))
    parser.add_argument('--depth', type=int, default=50)
    parser.add_argument('--net_width', default='standard', choices=('standard', 'wide'),
                        help='wide: the original\'s 4x-wide network (models A-C)')
    parser.add_argument('--batch_size', type=int, default=32)
    parser.add_argument('--image_size', type=int, default=112, help='square side in pixels')
    parser.add_argument('--steps', type=int, default=6, help='timed steps per variant')
    parser.add_argument('--warmup', type=int, default=2)
    parser.add_argument('--rounds', type=int, default=1,
                        help='run every variant this many times, interleaved (the best is '
                             'reported: other load only ever slows a run)')
    parser.add_argument('--profile', type=int, default=0, metavar='N',
                        help='also list the N op types taking longest in one traced step')
    parser.add_argument('--output', default=None, help='JSON file for the results')
    parser.add_argument('--one', default=None, help=argparse.SUPPRESS)  # child process
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(time_variant(args.one, args.depth, args.batch_size, args.steps,
                                      args.warmup, args.image_size, args.profile,
                                      args.net_width)))
        return 0
    import machine
    best = {}
    for _ in range(args.rounds):
        for variant in args.variants.split(','):
            env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2', **ENVIRONMENT.get(variant, {}))
            output = subprocess.check_output(
                [sys.executable, os.path.abspath(__file__), '--one', variant,
                 '--depth', str(args.depth), '--batch_size', str(args.batch_size),
                 '--steps', str(args.steps), '--warmup', str(args.warmup),
                 '--image_size', str(args.image_size), '--profile', str(args.profile),
                 '--net_width', args.net_width],
                env=env, universal_newlines=True)
            result = json.loads(output.strip().splitlines()[-1])
            print('%-14s %.3f s/step  %.2f images/s  %.0f GFLOP/s  peak RSS %.0f MB' % (
                variant, result['step_s'], result['images_per_s'], result['achieved_gflops'],
                result['peak_rss_mb']), flush=True)
            for op_type, milliseconds in result['top_ops_ms']:
                print('    %-32s %8.0f ms' % (op_type, milliseconds), flush=True)
            if variant not in best or result['step_s'] < best[variant]['step_s']:
                best[variant] = result
    peak = machine.matmul_peak((2048, 4096), 2.0)['gflops']
    print('matmul peak %.0f GFLOP/s; best of %d round(s):' % (peak, args.rounds))
    for variant, result in best.items():
        result['fraction_of_peak'] = result['achieved_gflops'] / peak
        print('%-14s %.3f s/step  %.0f%% of peak' % (variant, result['step_s'],
                                                     100 * result['fraction_of_peak']))
    if args.output:
        with open(args.output, 'w') as out:
            json.dump({'matmul_peak_gflops': peak, 'results': best}, out, indent=2)
    return 0


if __name__ == '__main__':
    sys.exit(main())
