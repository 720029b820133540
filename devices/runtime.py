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
    overflow = runtime.overflow_indicator(scaling)  # bool tensor or None
    sess = tf.Session(config=runtime.session_config(device, runtime.npu_options()))
    train_op = runtime.loop_train_op(sess, train_op, device, iterations_per_loop)
"""
import collections
import contextlib
import inspect
import json
import logging
import os
import re

# TensorFlow reads this once, when it is imported: set it before the import below.
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
import tensorflow.compat.v1 as tf  # noqa: E402
from tensorflow.core.protobuf.rewriter_config_pb2 import RewriterConfig  # noqa: E402

DEVICES = ('auto', 'npu', 'gpu', 'cpu')
PRECISION_MODES = ('allow_mix_precision', 'allow_fp32_to_fp16', 'force_fp16',
                   'must_keep_origin_dtype', 'force_fp32')
# The NPU precision modes that compute in float16 and so need loss scaling.
FP16_PRECISION_MODES = ('allow_mix_precision', 'allow_fp32_to_fp16', 'force_fp16')
MIXED_PRECISION = ('auto', 'on', 'off')
NPU_INIT_LOSS_SCALE = 2.0 ** 32  # Huawei's ModelZoo value for ExponentialUpdateLossScaleManager
GPU_INIT_LOSS_SCALE = 2.0 ** 15  # TensorFlow's DynamicLossScale default
# Huawei's NPULossScaleOptimizer names its "all gradients finite" flag so
# (True: no overflow); ModelZoo scripts fetch it by this name.
NPU_FINITE_TENSOR = 'overflow_status_reduce_all'
# What the training loop reads: the step's update was applied (both devices;
# named by _FiniteGradientsRecorder below).
FINITE_TENSOR = 'gradients_all_finite'

LossScaling = collections.namedtuple('LossScaling', [
    'fixed',                    # a constant loss scale, or None for dynamic scaling
    'init_loss_scale',          # dynamic: the starting scale
    'incr_every_n_steps',       # dynamic: raise the scale after this many finite steps
    'decr_every_n_nan_or_inf',  # dynamic, NPU only: lower it after this many overflows
    'decr_ratio',               # dynamic: factor applied when lowering (GPU: 1/multiplier)
])


def init(log_level=logging.INFO):
    """Puts TensorFlow in graph mode (TF 2 starts eager) and quietens its C++ logs.

    Returns:
      The `tensorflow.compat.v1` module, for the caller's convenience.
    """
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


def _check_precision_mode(precision_mode):
    if precision_mode not in PRECISION_MODES:
        raise ValueError('--precision_mode %r: expected one of %s'
                         % (precision_mode, ', '.join(PRECISION_MODES)))


NpuOptions = collections.namedtuple('NpuOptions', [
    'precision_mode',            # one of PRECISION_MODES
    'iterations_per_loop',       # device steps per sess.run (loop sinking); 1: none
    'graph_memory_max_size',     # bytes, or None for CANN's default
    'variable_memory_max_size',  # bytes, or None for CANN's default
])


def npu_options(precision_mode='allow_mix_precision', iterations_per_loop=1,
                graph_memory_max_size=None, variable_memory_max_size=None):
    """The one description of the NPU's options, checked.

    Both the sess.run session config (session_config) and the NPURunConfig
    for NPUEstimator (npu_run_config) are made from it, by the same table
    (_npu_parameters), so the two cannot drift apart.

    Raises:
      ValueError: one line naming the flag.
    """
    _check_precision_mode(precision_mode)
    if not isinstance(iterations_per_loop, int) or iterations_per_loop < 1:
        raise ValueError('--iterations_per_loop %r: expected a positive integer'
                         % (iterations_per_loop,))
    return NpuOptions(precision_mode, iterations_per_loop, graph_memory_max_size,
                      variable_memory_max_size)


def _npu_parameters(options):
    """{NpuOptimizer parameter (also NPURunConfig's keyword): value} of NpuOptions.

    Loop sinking needs GetNext on the device (enable_data_pre_proc) and
    mix_compile_mode off; CANN reads the memory sizes as strings of bytes.
    """
    params = collections.OrderedDict([
        ('precision_mode', options.precision_mode),
        ('mix_compile_mode', False),
        ('iterations_per_loop', options.iterations_per_loop),
        ('enable_data_pre_proc', options.iterations_per_loop > 1),
    ])
    for name in ('graph_memory_max_size', 'variable_memory_max_size'):
        if getattr(options, name):
            params[name] = str(getattr(options, name))
    return params


def session_config(device, npu=None, log_device_placement=False, num_threads=None):
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
      npu: NpuOptions (NPU only); None: npu_options()'s defaults.
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
    if device == 'cpu':
        config.device_count['GPU'] = 0  # --device cpu means CPU even where a GPU exists
    elif device == 'gpu':
        config.gpu_options.allow_growth = True
    elif device == 'npu':
        custom_op = config.graph_options.rewrite_options.custom_optimizers.add()
        custom_op.name = 'NpuOptimizer'
        custom_op.parameter_map['use_off_line'].b = True
        for name, value in _npu_parameters(npu or npu_options()).items():
            if isinstance(value, bool):
                custom_op.parameter_map[name].b = value
            elif isinstance(value, int):
                custom_op.parameter_map[name].i = value
            else:
                custom_op.parameter_map[name].s = tf.compat.as_bytes(value)
        config.graph_options.rewrite_options.remapping = RewriterConfig.OFF
        config.graph_options.rewrite_options.memory_optimization = RewriterConfig.NO_MEM_OPT
    return config


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
                        **_npu_parameters(npu))


def loop_train_op(sess, train_op, device, iterations_per_loop):
    """The op one sess.run of which trains iterations_per_loop steps (loop sinking).

    On the NPU, npu_bridge's util.set_iteration_per_loop: called once, after
    the session is created and every initialiser has run (it loads its own
    local variables), at the root name scope (CANN loops only a node named
    exactly IterationOp). With 1, or off the NPU, the train op itself.
    """
    if iterations_per_loop == 1:
        return train_op
    if device != 'npu':
        raise ValueError('--iterations_per_loop %d: loop sinking needs the NPU; on the %s use 1'
                         % (iterations_per_loop, device))
    from npu_bridge.estimator.npu import util
    return util.set_iteration_per_loop(sess, train_op, iterations_per_loop)


def float32_scope(device):
    """A context in which the NPU keeps the ops' own dtype (float32) under mixed precision.

    Under allow_mix_precision CANN picks each op's precision itself, and a
    tf.cast to float32 does not pin it; the adapter's keep_dtype_scope does
    (it tags the ops with _keep_dtype). Elsewhere the ops are float32 anyway.
    """
    if device == 'npu':
        from npu_bridge.estimator.npu import npu_scope
        return npu_scope.keep_dtype_scope()
    return contextlib.nullcontext()


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

    NPU: on when the precision mode computes in float16 (FP16_PRECISION_MODES)
    unless --mixed_precision off; force_fp32 and must_keep_origin_dtype keep
    float32 gradients and need none. GPU: 'auto' keeps float32 (the original's
    numerics, and checkpoints without loss-scale variables resume); 'on'
    enables TensorFlow's mixed-precision graph rewrite. CPU: float32 only.

    Args:
      device: 'npu', 'gpu' or 'cpu'.
      precision_mode: one of PRECISION_MODES (NPU).
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
        _check_precision_mode(precision_mode)
        fp16 = precision_mode in FP16_PRECISION_MODES
        if mixed_precision == 'on' and not fp16:
            raise ValueError('--mixed_precision on contradicts --precision_mode %s, which keeps '
                             'float32; use one of %s' % (precision_mode,
                                                         ', '.join(FP16_PRECISION_MODES)))
        enabled = fp16 and mixed_precision != 'off'
        default_init = NPU_INIT_LOSS_SCALE
    elif device == 'gpu':
        enabled = mixed_precision == 'on'
        default_init = GPU_INIT_LOSS_SCALE
    else:
        if mixed_precision == 'on':
            raise ValueError('--mixed_precision on needs a GPU or an NPU; on the %s training '
                             'stays float32' % device)
        enabled = False
    if not enabled:
        return None
    fixed = None if loss_scale == 'dynamic' else float(loss_scale)
    return LossScaling(fixed, float(init_loss_scale or default_init), incr_every_n_steps,
                       decr_every_n_nan_or_inf, decr_ratio)


def wrap_optimizer(optimizer, device, loss_scale=None, distributed=False):
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
    Returns:
      A tf.train.Optimizer.
    """
    if device == 'npu':
        if distributed:
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
        return _FiniteGradientsRecorder(
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
    return _FiniteGradientsRecorder(mixed)


def _npu_inf_nan_mode():
    """True on a device in INF/NaN mode (Ascend 910B's default; adapter >= r1.13).

    There the loss-scale optimizer checks the gradients for inf and NaN like
    TensorFlow's and builds no float-status flag.
    """
    from npu_bridge.estimator.npu import npu_plugin
    check = getattr(npu_plugin, 'is_inf_nan_enabled', None)  # adapters before r1.13: none
    return bool(check is not None and check())


def check_npu_adapter():
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


class _FiniteGradientsRecorder(tf.train.Optimizer):
    """Delegates to a loss-scale optimizer and names FINITE_TENSOR: its step was applied.

    Where the wrapped optimizer builds a flag of its own (`adapter_flag`, the
    NPU's float-status check in saturation mode, the only sound test there:
    float16 saturates instead of overflowing to inf), that flag is used.
    Otherwise (TensorFlow's loss-scale optimizer on a GPU, the NPU in INF/NaN
    mode) the decision is recomputed from the same unscaled gradients the
    optimizer tests, so the training loop can count skipped steps.
    """

    def __init__(self, optimizer, adapter_flag=None, inf_nan=True):
        super(_FiniteGradientsRecorder, self).__init__(False, optimizer.get_name())
        self._optimizer = optimizer
        self._adapter_flag = adapter_flag
        self._inf_nan = inf_nan

    def compute_gradients(self, *args, **kwargs):
        return self._optimizer.compute_gradients(*args, **kwargs)

    def apply_gradients(self, grads_and_vars, global_step=None, name=None):
        grads_and_vars = list(grads_and_vars)
        graph = tf.get_default_graph()
        known = len(graph.get_operations())
        train_op = self._optimizer.apply_gradients(grads_and_vars, global_step, name)
        flags = []
        if self._adapter_flag:
            pattern = re.compile(r'(^|/)%s(_\d+)?$' % re.escape(self._adapter_flag))
            flags = [op.outputs[0] for op in graph.get_operations()[known:]
                     if pattern.search(op.name)]
        if not flags:
            if not self._inf_nan:
                raise RuntimeError('no %r tensor after the loss-scale optimizer: the adapter '
                                   'is older than r1.5.0 (see check_npu_adapter)'
                                   % self._adapter_flag)
            flags = [tf.reduce_all(tf.math.is_finite(
                grad.values if isinstance(grad, tf.IndexedSlices) else grad))
                for grad, _ in grads_and_vars if grad is not None]
        tf.reduce_all(tf.stack(flags), name=FINITE_TENSOR)
        return train_op

    def get_slot(self, var, name):
        return self._optimizer.get_slot(var, name)

    def get_slot_names(self):
        return self._optimizer.get_slot_names()

    def variables(self):
        return self._optimizer.variables()


def overflow_indicator(loss_scale, graph=None):
    """A bool scalar: True when the step's gradients overflowed and its update was skipped.

    Call it after the train op is built from wrap_optimizer's optimizer,
    which names FINITE_TENSOR (True when finite; several train ops are and-ed).

    Returns:
      A bool tensor, or None without loss scaling.
    Raises:
      RuntimeError: loss scaling is on but the train op has not been built.
    """
    if loss_scale is None:
        return None
    graph = graph or tf.get_default_graph()
    finite = [op.outputs[0] for op in graph.get_operations()
              if op.name == FINITE_TENSOR or op.name.endswith('/' + FINITE_TENSOR)]
    if not finite:
        raise RuntimeError('no %r tensor in the graph: build the train op with the optimizer '
                           'from wrap_optimizer() first' % FINITE_TENSOR)
    with graph.as_default():
        return tf.logical_not(tf.reduce_all(tf.stack(finite)), name='overflow')


def hccl_ranks(environ=None):
    """(rank, world_size) of a process launched one per Ascend device with HCCL's variables.

    Called for the NPU only. RANK_SIZE above 1 also needs RANK_ID,
    ASCEND_DEVICE_ID (or the older DEVICE_ID), JOB_ID and RANK_TABLE_FILE, a
    rank table in Huawei's format 1.0 (`server_list[].device[]` with
    `device_id`, `device_ip`, `rank_id`; test/rank_table_8p.json is an
    example). CANN's adapter starts HCCL whenever RANK_TABLE_FILE is non-empty
    and RANK_SIZE (1 if unset) is positive, so with RANK_SIZE unset or 1 a
    RANK_TABLE_FILE is refused unless it lists exactly one device (a one-rank
    HCCL job, checked like any other). The table's device_id is physical; it
    is compared with the device of this process where that is known as a
    physical id too (see _check_rank_device). No HCCL call is made here, so
    npu_ops.initialize_system is not needed.

    Args:
      environ: the environment mapping; None: os.environ.
    Returns:
      (rank, world_size); (0, 1) when RANK_SIZE is unset or 1 and RANK_TABLE_FILE is not set.
    Raises:
      ValueError: one line naming the missing or inconsistent variable.
    """
    env = os.environ if environ is None else environ
    size = _env_int(env, 'RANK_SIZE', '1')
    if size < 1:
        raise ValueError('RANK_SIZE=%d: expected a positive integer' % size)
    table = env.get('RANK_TABLE_FILE')
    if size == 1:
        if not table:
            return 0, 1
        listed = len(_rank_table_devices(table))
        if listed != 1:
            raise ValueError('RANK_TABLE_FILE is set but RANK_SIZE=%s: CANN\'s adapter would '
                             'start HCCL against that table (%d devices); unset RANK_TABLE_FILE '
                             'for a one-device run' % (env.get('RANK_SIZE', '1 (unset)'), listed))
    if 'RANK_ID' not in env:
        raise ValueError('RANK_SIZE=%d but RANK_ID is not set: export the rank of this '
                         'process, 0..%d' % (size, size - 1))
    rank = _env_int(env, 'RANK_ID')
    if not 0 <= rank < size:
        raise ValueError('RANK_ID=%d is out of range for RANK_SIZE=%d: expected 0..%d'
                         % (rank, size, size - 1))
    if 'ASCEND_DEVICE_ID' not in env and 'DEVICE_ID' not in env:
        raise ValueError('RANK_SIZE=%d but neither ASCEND_DEVICE_ID nor DEVICE_ID is set: '
                         'export the Ascend device of this process' % size)
    if not env.get('JOB_ID'):
        raise ValueError('RANK_SIZE=%d but JOB_ID is not set: export the same JOB_ID in every '
                         'process of the job' % size)
    if not table:
        raise ValueError('RANK_SIZE=%d but RANK_TABLE_FILE is not set: export the path of the '
                         'rank table JSON (example: test/rank_table_8p.json)' % size)
    devices = _rank_table_devices(table)
    if len(devices) != size:
        raise ValueError('RANK_TABLE_FILE=%s lists %d devices but RANK_SIZE=%d'
                         % (table, len(devices), size))
    if rank not in devices:
        raise ValueError('RANK_TABLE_FILE=%s has no rank_id %d' % (table, rank))
    _check_rank_device(env, 'RANK_TABLE_FILE=%s puts RANK_ID=%d on device_id %d'
                       % (table, rank, devices[rank]), devices[rank])
    return rank, size


def _check_rank_device(env, placement, physical):
    """Compares the rank table's physical device of this rank with the environment's.

    The adapter takes ASCEND_DEVICE_ID first, a logical id, else DEVICE_ID, a
    physical one (npu_attrs.cc). With ASCEND_RT_VISIBLE_DEVICES (physical ids,
    comma separated) logical id i is its i-th entry; without it the logical
    id only equals the physical one on a bare host: a container numbers its
    devices from 0 and no variable says which physical ones they are, so a
    difference there is only logged.

    Args:
      env: the environment mapping.
      placement: the start of the messages, naming the table, rank and device.
      physical: the rank table's device_id of this rank.
    Raises:
      ValueError: one line, where the two ids are comparable and differ.
    """
    visible_text = env.get('ASCEND_RT_VISIBLE_DEVICES', '').strip()
    visible = _visible_devices(visible_text) if visible_text else None
    if 'ASCEND_DEVICE_ID' in env:
        logical = _env_int(env, 'ASCEND_DEVICE_ID')
        if visible is None:
            if logical != physical:
                logging.warning('%s, but ASCEND_DEVICE_ID=%d: that is a logical id and the '
                                'table\'s a physical one; fine in a container (export '
                                'ASCEND_RT_VISIBLE_DEVICES to have them compared)',
                                placement, logical)
            return
        if not 0 <= logical < len(visible):
            raise ValueError('ASCEND_DEVICE_ID=%d is out of range for ASCEND_RT_VISIBLE_DEVICES=%s:'
                             ' expected 0..%d' % (logical, visible_text, len(visible) - 1))
        if visible[logical] != physical:
            raise ValueError('%s, but ASCEND_DEVICE_ID=%d is physical device %d '
                             '(ASCEND_RT_VISIBLE_DEVICES=%s)'
                             % (placement, logical, visible[logical], visible_text))
        return
    device = _env_int(env, 'DEVICE_ID')
    if device != physical:
        raise ValueError('%s, but DEVICE_ID=%d' % (placement, device))
    if visible is not None and device not in visible:
        raise ValueError('DEVICE_ID=%d is not in ASCEND_RT_VISIBLE_DEVICES=%s'
                         % (device, visible_text))


def _visible_devices(text):
    """The physical device ids of ASCEND_RT_VISIBLE_DEVICES ('4,5,6,7'), in order."""
    try:
        return [int(item) for item in text.split(',')]
    except ValueError:
        raise ValueError('ASCEND_RT_VISIBLE_DEVICES=%r: expected physical device ids separated '
                         'by commas, e.g. 4,5,6,7' % text)


def _env_int(env, name, default=None):
    text = env.get(name, default)
    try:
        return int(text)
    except (TypeError, ValueError):
        raise ValueError('%s=%r: expected an integer' % (name, text))


def _rank_table_devices(path):
    """{rank_id: device_id} of a rank table file (format 1.0)."""
    if not os.path.isfile(path):
        raise ValueError('RANK_TABLE_FILE=%s: no such file' % path)
    try:
        with open(path) as table:
            servers = json.load(table)['server_list']
        return {int(device['rank_id']): int(device['device_id'])
                for server in servers for device in server['device']}
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError('RANK_TABLE_FILE=%s is not a rank table (%s: %s); expected Huawei\'s '
                         'format 1.0 with server_list[].device[] holding device_id and rank_id'
                         % (path, type(error).__name__, error))


def hccl_all_reduce_sum(tensor):
    """The element-wise sum of a float32 tensor over every HCCL rank (NPU only)."""
    from npu_bridge.hccl import hccl_ops
    return hccl_ops.allreduce(tensor, 'sum')


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
