"""The NPU's session options, described once.

NpuOptions (precision mode, loop sinking, memory sizes) is checked here and
turned into the NpuOptimizer parameters by one table (`parameters`), from
which runtime builds both the sess.run session config and the NPURunConfig
NPUEstimator users need, so the two cannot drift apart. Plain values only:
no TensorFlow, no npu_bridge.
"""
import collections

PRECISION_MODES = ('allow_mix_precision', 'allow_fp32_to_fp16', 'force_fp16',
                   'must_keep_origin_dtype', 'force_fp32')
# The NPU precision modes that compute in float16 and so need loss scaling.
FP16_PRECISION_MODES = ('allow_mix_precision', 'allow_fp32_to_fp16', 'force_fp16')


def check_precision_mode(precision_mode):
    """Raises ValueError (one line) unless precision_mode is one of PRECISION_MODES."""
    if precision_mode not in PRECISION_MODES:
        raise ValueError('--precision_mode %r: expected one of %s'
                         % (precision_mode, ', '.join(PRECISION_MODES)))


NpuOptions = collections.namedtuple('NpuOptions', [
    'precision_mode',            # one of PRECISION_MODES
    'iterations_per_loop',       # device steps per sess.run (loop sinking); 1: none
    'graph_memory_max_size',     # bytes, or None for CANN's default
    'variable_memory_max_size',  # bytes, or None for CANN's default
])


def make(precision_mode='allow_mix_precision', iterations_per_loop=1,
         graph_memory_max_size=None, variable_memory_max_size=None):
    """The one description of the NPU's options, checked.

    Both the sess.run session config (session_config) and the NPURunConfig
    for NPUEstimator (npu_run_config) are made from it, by the same table
    (parameters), so the two cannot drift apart.

    Raises:
      ValueError: one line naming the flag.
    """
    check_precision_mode(precision_mode)
    if not isinstance(iterations_per_loop, int) or iterations_per_loop < 1:
        raise ValueError('--iterations_per_loop %r: expected a positive integer'
                         % (iterations_per_loop,))
    return NpuOptions(precision_mode, iterations_per_loop, graph_memory_max_size,
                      variable_memory_max_size)


def parameters(options):
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
