"""The one place that decides the platform (Ascend NPU, GPU, CPU) and absorbs
the differences between TensorFlow 1.15 and 2.x.

Entry points call `init()` once, then ask this module for the device, the
session config and the dropout op; nothing else in the project branches on
the platform or the framework version. `npu_bridge` (Huawei CANN's TF 1.15
adapter) is imported here only, and only when it is installed.

Typical use:
    tf = runtime.init()
    device = runtime.select_device('auto')
    sess = tf.Session(config=runtime.session_config(device))
"""
import logging
import os

import tensorflow.compat.v1 as tf
from tensorflow.core.protobuf.rewriter_config_pb2 import RewriterConfig

DEVICES = ('auto', 'npu', 'gpu', 'cpu')
PRECISION_MODES = ('allow_mix_precision', 'allow_fp32_to_fp16', 'force_fp16',
                   'must_keep_origin_dtype', 'force_fp32')


def init(log_level=logging.INFO):
    """Puts TensorFlow in graph mode (TF 2 starts eager) and quietens its C++ logs.

    Returns:
      The `tensorflow.compat.v1` module, for the caller's convenience.
    """
    os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
    tf.disable_v2_behavior()
    tf.get_logger().setLevel(logging.ERROR)
    logging.basicConfig(level=log_level, format='%(asctime)s %(message)s', datefmt='%H:%M:%S')
    return tf


def npu_bridge_available():
    """True when Huawei's npu_bridge (CANN TF adapter) imports."""
    try:
        import npu_bridge.estimator.npu_ops  # noqa: F401  (registers the NPU ops)
    except ImportError:
        return False
    return True


def gpu_available():
    """True when TensorFlow sees at least one GPU."""
    return bool(tf.config.experimental.list_physical_devices('GPU'))


def select_device(requested='auto'):
    """Resolves --device: 'auto' means NPU if npu_bridge imports, else GPU, else CPU.

    Raises:
      ValueError: unknown value, or an explicit device that is not there.
    """
    if requested not in DEVICES:
        raise ValueError('--device %r: expected one of %s' % (requested, ', '.join(DEVICES)))
    if requested == 'auto':
        if npu_bridge_available():
            return 'npu'
        return 'gpu' if gpu_available() else 'cpu'
    if requested == 'npu' and not npu_bridge_available():
        raise ValueError('--device npu: npu_bridge is not importable; install CANN and its '
                         'TensorFlow 1.15 adapter (see README, "Ascend 910")')
    if requested == 'gpu' and not gpu_available():
        raise ValueError('--device gpu: TensorFlow sees no GPU on this machine')
    return requested


def session_config(device, precision_mode='allow_mix_precision', iterations_per_loop=1,
                   graph_memory_max_size=None, variable_memory_max_size=None,
                   log_device_placement=False, num_threads=None):
    """A ConfigProto for the device.

    On the NPU this follows Huawei's documented set-up for sess.run training:
    the NpuOptimizer custom graph optimizer, offline execution, the precision
    mode, and grappler's remapping and memory optimisation switched off
    (memory_optimization takes NO_MEM_OPT: its OFF value means MANUAL).

    Args:
      device: 'npu', 'gpu' or 'cpu' (resolved by select_device).
      precision_mode: one of PRECISION_MODES (NPU only).
      iterations_per_loop: steps the NPU runs per sess.run (NPU only).
      graph_memory_max_size, variable_memory_max_size: bytes, NPU only; None
        leaves CANN's defaults.
      log_device_placement: log the device of every op.
      num_threads: intra- and inter-op threads; None lets TensorFlow choose.
    Returns:
      tf.ConfigProto.
    """
    config = tf.ConfigProto(allow_soft_placement=True,
                            log_device_placement=log_device_placement)
    if num_threads:
        config.intra_op_parallelism_threads = num_threads
        config.inter_op_parallelism_threads = num_threads
    if device == 'gpu':
        config.gpu_options.allow_growth = True
    elif device == 'npu':
        if precision_mode not in PRECISION_MODES:
            raise ValueError('--precision_mode %r: expected one of %s'
                             % (precision_mode, ', '.join(PRECISION_MODES)))
        custom_op = config.graph_options.rewrite_options.custom_optimizers.add()
        custom_op.name = 'NpuOptimizer'
        custom_op.parameter_map['use_off_line'].b = True
        custom_op.parameter_map['precision_mode'].s = tf.compat.as_bytes(precision_mode)
        custom_op.parameter_map['mix_compile_mode'].b = False
        if iterations_per_loop > 1:
            custom_op.parameter_map['iterations_per_loop'].i = iterations_per_loop
        if graph_memory_max_size:
            custom_op.parameter_map['graph_memory_max_size'].s = tf.compat.as_bytes(
                str(graph_memory_max_size))
        if variable_memory_max_size:
            custom_op.parameter_map['variable_memory_max_size'].s = tf.compat.as_bytes(
                str(variable_memory_max_size))
        config.graph_options.rewrite_options.remapping = RewriterConfig.OFF
        config.graph_options.rewrite_options.memory_optimization = RewriterConfig.NO_MEM_OPT
    return config


def dropout_fn(device):
    """fn(inputs, keep_prob): npu_ops.dropout on the NPU, tf.nn.dropout elsewhere."""
    if device == 'npu':
        from npu_bridge.estimator import npu_ops
        return lambda inputs, keep_prob: npu_ops.dropout(inputs, keep_prob)
    return lambda inputs, keep_prob: tf.nn.dropout(inputs, rate=1.0 - keep_prob)
