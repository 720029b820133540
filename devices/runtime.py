"""The one place that decides the platform (Ascend NPU, GPU, CPU) and absorbs
the differences between TensorFlow 1.15 and 2.x.

Entry points call `init()` once, then ask this module for the device, the
session config, the dropout op, the optimizer wrappers (loss scaling,
Huawei's distributed optimizer), the overflow flag and the HCCL rank; nothing
else in the project branches on the platform or the framework version.
`npu_bridge` (Huawei CANN's TF 1.15 adapter) is imported here only, and only
when the NPU is used. Everything NPU-specific follows Huawei's documented
sess.run usage; it was checked against a stand-in (test/npu_standin), never on
an Ascend 910.

Typical use:
    tf = runtime.init()
    device = runtime.select_device('auto')
    scaling = runtime.loss_scaling(device, 'allow_mix_precision')
    optimizer = runtime.wrap_optimizer(tf.train.MomentumOptimizer(lr, 0.9), device, scaling)
    ... train_op = optimizer.minimize(loss) ...
    overflow = finite_flag.overflow_indicator(scaling)  # bool tensor or None
    sess = tf.Session(config=runtime.session_config(device, npu_options.make()))
    train_op = runtime.loop_train_op(sess, train_op, device, iterations_per_loop)
"""
import collections
import contextlib
import inspect
import logging

import tensorflow.compat.v1 as tf
from tensorflow.core.protobuf.rewriter_config_pb2 import RewriterConfig

from devices import finite_flag, npu_options, onednn_bfloat16

DEVICES = ('auto', 'npu', 'gpu', 'cpu')
MIXED_PRECISION = ('auto', 'on', 'off')
NPU_INIT_LOSS_SCALE = 2.0 ** 32  # Huawei's ModelZoo value for ExponentialUpdateLossScaleManager
GPU_INIT_LOSS_SCALE = 2.0 ** 15  # TensorFlow's DynamicLossScale default
# Huawei's NPULossScaleOptimizer names its "all gradients finite" flag so
# (True: no overflow); ModelZoo scripts fetch it by this name.
NPU_FINITE_TENSOR = 'overflow_status_reduce_all'

LossScaling = collections.namedtuple('LossScaling', [
    'fixed',                    # a constant loss scale, or None for dynamic scaling
    'init_loss_scale',          # dynamic: the starting scale
    'incr_every_n_steps',       # dynamic: raise the scale after this many finite steps
    'decr_every_n_nan_or_inf',  # dynamic, NPU only: lower it after this many overflows
    'decr_ratio',               # dynamic: factor applied when lowering (GPU: 1/multiplier)
])


def init(log_level=logging.INFO):
    """Puts TensorFlow in graph mode (TF 2 starts eager) and logs INFO lines to the console.

    TensorFlow's own log noise is silenced before it is imported, by data.quiet.

    Returns:
      The `tensorflow.compat.v1` module, for the caller's convenience.
    """
    tf.disable_v2_behavior()
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
                         'TensorFlow 1.15 adapter (see docs/ascend.md, "Install")')
    if requested == 'gpu' and not gpu_available():
        raise ValueError('--device gpu: TensorFlow sees no GPU on this machine')
    return requested


def session_config(device, npu=None, log_device_placement=False, num_threads=None,
                   bfloat16=False):
    """A ConfigProto for the device.

    On the NPU this follows Huawei's documented set-up for sess.run training:
    the NpuOptimizer custom graph optimizer with offline execution and the
    parameters of `npu` (precision mode, loop sinking, memory sizes), and
    grappler's remapping and memory optimisation switched off
    (memory_optimization takes NO_MEM_OPT: its OFF value means MANUAL).
    With npu.iterations_per_loop > 1 the train op must be wrapped by
    loop_train_op() with the same session.

    Args:
      device: 'npu', 'gpu' or 'cpu' (resolved by select_device).
      npu: npu_options.NpuOptions (NPU only); None: npu_options.make()'s defaults.
      log_device_placement: log the device of every op.
      num_threads: intra- and inter-op threads; None lets TensorFlow choose.
      bfloat16: the CPU trains in bfloat16 (cpu_bfloat16()): oneDNN's rewrite
        on, with float32_scope's ops kept float32.
    Returns:
      tf.ConfigProto.
    """
    config = tf.ConfigProto(allow_soft_placement=True,
                            log_device_placement=log_device_placement)
    if num_threads:
        config.intra_op_parallelism_threads = num_threads
        config.inter_op_parallelism_threads = num_threads
    if device == 'cpu':
        config.device_count['GPU'] = 0  # --device cpu means CPU even where a GPU exists
        if bfloat16:
            onednn_bfloat16.enable(config)
    elif device == 'gpu':
        config.gpu_options.allow_growth = True
    elif device == 'npu':
        custom_op = config.graph_options.rewrite_options.custom_optimizers.add()
        custom_op.name = 'NpuOptimizer'
        custom_op.parameter_map['use_off_line'].b = True
        for name, value in npu_options.parameters(npu or npu_options.make()).items():
            if isinstance(value, bool):
                custom_op.parameter_map[name].b = value
            elif isinstance(value, int):
                custom_op.parameter_map[name].i = value
            else:
                custom_op.parameter_map[name].s = tf.compat.as_bytes(value)
        config.graph_options.rewrite_options.remapping = RewriterConfig.OFF
        config.graph_options.rewrite_options.memory_optimization = RewriterConfig.NO_MEM_OPT
    return config


def inference_session_config(device, npu=None, num_threads=None):
    """A ConfigProto for sessions that embed faces (validation, evaluation, extraction):
    float32 whatever the training uses.

    TensorFlow's mixed-precision rewrites work on a whole session: oneDNN's
    bfloat16 (CPU) converts every convolution and matrix product it runs, and
    after enable_mixed_precision_graph_rewrite (GPU, wrap_optimizer) every
    session made later gets the float16 rewrite unless its config says OFF.
    So an inference graph in the training session would embed in bfloat16 or
    float16 while eval_ckpt_file.py embeds in float32. Here every such
    rewrite is OFF explicitly. On the NPU the precision mode is a process-wide
    GE option (read once, when the first graph initialises GE), so the graph
    itself is built inside inference_scope(); the session takes the training's
    NpuOptions with no loop sinking.

    Returns:
      tf.ConfigProto.
    """
    if npu is not None:
        npu = npu._replace(iterations_per_loop=1)
    config = session_config(device, npu, num_threads=num_threads)
    rewrites = config.graph_options.rewrite_options
    for name in _MIXED_PRECISION_REWRITES:
        if name in RewriterConfig.DESCRIPTOR.fields_by_name:
            setattr(rewrites, name, RewriterConfig.OFF)
    return config


# Every mixed-precision rewrite a TensorFlow may have (1.15 has only the first).
_MIXED_PRECISION_REWRITES = ('auto_mixed_precision', 'auto_mixed_precision_mkl',
                             onednn_bfloat16.REWRITE, 'auto_mixed_precision_cpu')


@contextlib.contextmanager
def inference_scope(device):
    """A context for building an inference graph that computes in float32.

    On the NPU the adapter's keep_dtype_scope: under allow_mix_precision CANN
    would otherwise choose float16 for the convolutions (where the processor
    has no float32 for an op, CANN documents that it takes the highest
    precision the op has). Elsewhere inference_session_config() suffices.
    """
    with float32_scope(device, False):
        yield


def npu_run_config(npu, model_dir, save_checkpoints_steps):
    """An NPURunConfig for NPUEstimator users, from the same NpuOptions as session_config.

    NPUEstimator adds the NpuOptimizer itself from these keywords (the
    parameters have the same names), so the session config handed to it
    carries none.

    Returns:
      npu_bridge.estimator.npu.npu_config.NPURunConfig.
    """
    from npu_bridge.estimator.npu.npu_config import NPURunConfig
    return NPURunConfig(model_dir=model_dir, save_checkpoints_steps=save_checkpoints_steps,
                        session_config=tf.ConfigProto(allow_soft_placement=True),
                        **npu_options.parameters(npu))


def loop_train_op(sess, train_op, device, iterations_per_loop):
    """The op one sess.run of which trains iterations_per_loop steps (loop sinking).

    On the NPU, npu_bridge's util.set_iteration_per_loop: called once, after
    the session is created and every initialiser has run (it loads its own
    local variables), at the root name scope (CANN loops only a node named
    exactly IterationOp). With 1, the train op itself.

    Raises:
      ValueError: more than 1 off the NPU (see check_device_options).
    """
    if iterations_per_loop == 1:
        return train_op
    _check_loop_sinking(device, iterations_per_loop)
    from npu_bridge.estimator.npu import util
    return util.set_iteration_per_loop(sess, train_op, iterations_per_loop)


def check_device_options(device, loss_scale, iterations_per_loop):
    """Refuses, before any graph is built, what the device cannot do with these options:
    loop sinking off the NPU, loss scaling on an adapter too old to report overflows.

    Raises:
      ValueError: one line naming the flag or the adapter version needed.
    """
    _check_loop_sinking(device, iterations_per_loop)
    if device == 'npu' and loss_scale is not None:
        _check_npu_adapter()


def _check_loop_sinking(device, iterations_per_loop):
    if iterations_per_loop > 1 and device != 'npu':
        raise ValueError('--iterations_per_loop %d: loop sinking runs on the NPU; on the %s '
                         'use 1' % (iterations_per_loop, device))


@contextlib.contextmanager
def float32_scope(device, bfloat16, *tensors):
    """A context, entered as `tensors`, whose ops stay float32 under mixed precision.

    Under allow_mix_precision CANN picks each op's precision itself, and a
    tf.cast to float32 does not pin it; the adapter's keep_dtype_scope does
    (it tags the ops with _keep_dtype). TensorFlow's oneDNN bfloat16 rewrite
    converts by op type, with no per-op opt-out, but never converts what is
    computed from an op of its deny list: the tensors pass through such an
    op (onednn_bfloat16.float32_marker). Elsewhere the ops are float32 anyway.

    Args:
      device: 'npu', 'gpu' or 'cpu'.
      bfloat16: the CPU trains in bfloat16 (cpu_bfloat16()).
      *tensors: the float32 tensors the scope's ops compute from.
    """
    if device == 'npu':
        from npu_bridge.estimator.npu import npu_scope
        with npu_scope.keep_dtype_scope():
            yield tensors
    elif bfloat16:
        yield tuple(onednn_bfloat16.float32_marker(tensor) for tensor in tensors)
    else:
        yield tensors


def cpu_bfloat16(device, mixed_precision):
    """Decides --mixed_precision on the CPU: True trains in bfloat16 (oneDNN's rewrite).

    'auto' uses bfloat16 where the CPU computes it natively (about twice its
    float32 rate), 'on' insists, 'off' keeps float32. bfloat16 has float32's
    exponent range: no loss scaling.

    Raises:
      ValueError: 'on' where bfloat16 is not available, saying why.
    """
    if device != 'cpu' or mixed_precision == 'off':
        return False
    refusal = onednn_bfloat16.refusal()
    if mixed_precision == 'on' and refusal:
        raise ValueError('--mixed_precision on: on the CPU it trains in bfloat16, but %s'
                         % refusal)
    return refusal is None


def dropout_fn(device):
    """fn(inputs, keep_prob): npu_ops.dropout on the NPU; None elsewhere (the network's own)."""
    if device == 'npu':
        from npu_bridge.estimator import npu_ops
        return lambda inputs, keep_prob: npu_ops.dropout(inputs, keep_prob)
    return None


def loss_scaling(device, precision_mode='allow_mix_precision', mixed_precision='auto',
                 loss_scale='dynamic', init_loss_scale=None, incr_every_n_steps=1000,
                 decr_every_n_nan_or_inf=2, decr_ratio=0.5):
    """Decides whether and how the loss is scaled (float16 gradients underflow otherwise).

    NPU: on when the precision mode computes in float16 (npu_options.FP16_PRECISION_MODES)
    unless --mixed_precision off; force_fp32 and must_keep_origin_dtype keep
    float32 gradients and need none. GPU: 'auto' keeps float32 (the original's
    numerics, and checkpoints without loss-scale variables resume); 'on'
    enables TensorFlow's mixed-precision graph rewrite. CPU: never (its mixed
    precision is bfloat16, cpu_bfloat16()).

    Args:
      device: 'npu', 'gpu' or 'cpu'.
      precision_mode: one of npu_options.PRECISION_MODES (NPU).
      mixed_precision: one of MIXED_PRECISION.
      loss_scale: 'dynamic', or a number for a fixed scale.
      init_loss_scale: the dynamic scale's start; None: NPU_INIT_LOSS_SCALE on
        the NPU, GPU_INIT_LOSS_SCALE on the GPU.
      incr_every_n_steps, decr_every_n_nan_or_inf, decr_ratio: see LossScaling.
    Returns:
      LossScaling, or None when gradients stay float32.
    Raises:
      ValueError: contradictory settings, e.g. mixed precision on a CPU.
    """
    if mixed_precision not in MIXED_PRECISION:
        raise ValueError('--mixed_precision %r: expected one of %s'
                         % (mixed_precision, ', '.join(MIXED_PRECISION)))
    if device == 'npu':
        npu_options.check_precision_mode(precision_mode)
        fp16 = precision_mode in npu_options.FP16_PRECISION_MODES
        if mixed_precision == 'on' and not fp16:
            raise ValueError('--mixed_precision on contradicts --precision_mode %s, which keeps '
                             'float32; use one of %s' % (precision_mode,
                                                         ', '.join(npu_options.FP16_PRECISION_MODES)))
        enabled = fp16 and mixed_precision != 'off'
        default_init = NPU_INIT_LOSS_SCALE
    elif device == 'gpu':
        enabled = mixed_precision == 'on'
        default_init = GPU_INIT_LOSS_SCALE
    else:  # the CPU's bfloat16 needs no scaling (cpu_bfloat16)
        enabled = False
    if not enabled:
        return None
    fixed = None if loss_scale == 'dynamic' else float(loss_scale)
    return LossScaling(fixed, float(init_loss_scale or default_init), incr_every_n_steps,
                       decr_every_n_nan_or_inf, decr_ratio)


def wrap_optimizer(optimizer, device, loss_scale=None, distributed=False,
                   all_reduce_gradients=True):
    """Wraps the optimizer for the device, as Huawei and TensorFlow document it.

    NPU: NPUDistributedOptimizer (HCCL all-reduce of the gradients) when
    distributed, then NPULossScaleOptimizer outermost with is_distributed
    set alike, so an overflow on any device skips the step on all of them.
    GPU: TensorFlow's mixed-precision graph rewrite with its loss-scale
    optimizer. Other devices' multi-worker all-reduce is parallel.py's job.
    Call it outside any control-dependency block: the loss-scale manager
    creates its variables here.

    Args:
      optimizer: a tf.train.Optimizer.
      device: 'npu', 'gpu' or 'cpu'.
      loss_scale: LossScaling from loss_scaling(), or None.
      distributed: True when several NPU processes train together (HCCL).
      all_reduce_gradients: False when the caller averages the gradients it chooses
        over the ranks itself (a head sharded over them: its blocks are not averaged);
        then only the overflow check spans the ranks.
    Returns:
      A tf.train.Optimizer.
    """
    if device == 'npu':
        if distributed and all_reduce_gradients:
            from npu_bridge.estimator.npu.npu_optimizer import NPUDistributedOptimizer
            optimizer = NPUDistributedOptimizer(optimizer)
        if loss_scale is None:
            return optimizer
        from npu_bridge.estimator.npu import npu_loss_scale_manager
        from npu_bridge.estimator.npu.npu_loss_scale_optimizer import NPULossScaleOptimizer
        if loss_scale.fixed is not None:
            manager = npu_loss_scale_manager.FixedLossScaleManager(loss_scale=loss_scale.fixed)
        else:
            manager = npu_loss_scale_manager.ExponentialUpdateLossScaleManager(
                init_loss_scale=loss_scale.init_loss_scale,
                incr_every_n_steps=loss_scale.incr_every_n_steps,
                decr_every_n_nan_or_inf=loss_scale.decr_every_n_nan_or_inf,
                decr_ratio=loss_scale.decr_ratio)
        return finite_flag.FiniteGradientsRecorder(
            NPULossScaleOptimizer(optimizer, manager, is_distributed=distributed),
            adapter_flag=NPU_FINITE_TENSOR, inf_nan=_npu_inf_nan_mode())
    if loss_scale is None:
        return optimizer
    if device != 'gpu':
        raise ValueError('loss scaling on the %s: expected the NPU or a GPU' % device)
    if loss_scale.fixed is not None:
        scale = loss_scale.fixed
    else:
        # TensorFlow lowers the scale at every overflow and raises it by the
        # same factor, so decr_every_n_nan_or_inf has no GPU equivalent.
        scale = tf.train.experimental.DynamicLossScale(
            initial_loss_scale=loss_scale.init_loss_scale,
            increment_period=loss_scale.incr_every_n_steps,
            multiplier=1.0 / loss_scale.decr_ratio)
    # Same spelling in TF 1.15 and in 2.x's compat.v1 (checked on 2.21).
    mixed = tf.train.experimental.enable_mixed_precision_graph_rewrite(optimizer, loss_scale=scale)
    return finite_flag.FiniteGradientsRecorder(mixed)


def _npu_inf_nan_mode():
    """True on a device in INF/NaN mode (Ascend 910B's default; adapter >= r1.13).

    There the loss-scale optimizer checks the gradients for inf and NaN like
    TensorFlow's and builds no float-status flag.
    """
    from npu_bridge.estimator.npu import npu_plugin
    check = getattr(npu_plugin, 'is_inf_nan_enabled', None)  # adapters before r1.13: none
    return bool(check is not None and check())


def _check_npu_adapter():
    """Refuses adapters older than r1.5.0 (CANN 5.0.x), the oldest this code supports.

    Before r1.5.0 the loss-scale optimizer's "gradients finite" flag has no
    name the training loop can find; r1.5.0 named it NPU_FINITE_TENSOR and
    gave FixedLossScaleManager its enable_overflow_check argument, which
    tells the versions apart without importing anything with side effects.

    Raises:
      ValueError: one line naming the minimum version.
    """
    from npu_bridge.estimator.npu import npu_loss_scale_manager
    parameters = inspect.signature(npu_loss_scale_manager.FixedLossScaleManager).parameters
    if 'enable_overflow_check' not in parameters:
        raise ValueError('--device npu: the installed npu_bridge is older than TF adapter '
                         'r1.5.0 (CANN 5.0.x), the oldest this code supports (it names no '
                         'overflow flag); install CANN 5.0.x or later')


def hccl_all_reduce_sum(tensor):
    """The element-wise sum of a float32 tensor over every HCCL rank (NPU only)."""
    return hccl_all_reduce(tensor, 'sum')


def hccl_all_reduce(tensor, reduction):
    """The element-wise 'sum', 'max', 'min' or 'prod' of a tensor over every HCCL rank.

    HcomAllReduce takes int8/16/32, float16 and float32 on every adapter (bfloat16 from
    r1.12.0, int64 from r1.15.0). The gradient the adapter registers for it is another
    all-reduce sum; devices.head_exchange replaces it where that is not the gradient.
    """
    from npu_bridge.hccl import hccl_ops
    return hccl_ops.allreduce(tensor, reduction)


def hccl_all_gather(tensor, rank_size):
    """Every HCCL rank's tensor [n, ...] concatenated in rank order: [rank_size * n, ...].

    HcomAllGather takes int8/16/32, float16 and float32 (later adapters also int64 and
    uint64), no scalars, and has no registered gradient.
    """
    from npu_bridge.hccl import hccl_ops
    return hccl_ops.allgather(tensor, rank_size)


def hccl_all_reduce_mean(tensors, rank_size):
    """Each tensor averaged over the HCCL ranks, as NPUDistributedOptimizer averages
    gradients (sum, then / rank_size); for the gradients of a head sharded over the
    ranks, whose blocks must not be averaged and so cannot go through that optimizer."""
    with tf.name_scope('hccl_all_reduce_mean'):
        return [hccl_all_reduce(tensor, 'sum') / float(rank_size) for tensor in tensors]


def broadcast_variables_op(device, variables=None):
    """One op that copies every variable from rank 0 to this process (HCCL broadcast).

    Run it on every rank right after initialisation or restore, so all
    devices start from rank 0's weights, optimizer slots, batch-norm moving
    statistics, loss scale and global step (ModelZoo's pattern).

    Args:
      device: must be 'npu' (other platforms synchronise in parallel.py).
      variables: default tf.global_variables().
    Returns:
      A grouped op.
    """
    if device != 'npu':
        raise ValueError('broadcast_variables_op: HCCL broadcast needs the NPU, not %r' % device)
    from npu_bridge.hccl import hccl_ops
    assigns = []
    for var in tf.global_variables() if variables is None else variables:
        outputs = hccl_ops.broadcast(tensor=[var], root_rank=0)
        assigns.append(tf.assign(var, outputs[0]))
    return tf.group(assigns, name='broadcast_from_rank_0')
