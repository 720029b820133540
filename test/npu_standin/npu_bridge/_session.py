"""STAND-IN internals: what importing npu_bridge does to tf.Session.

Importing the real npu_bridge loads the adapter's C++ library, whose graph
passes and GE read the session config's `NpuOptimizer` custom optimizer. Here
a wrapper around tf.Session.__init__ and Session.run does the parts tests can
see, for sessions whose config carries `NpuOptimizer` (an "NPU session"):

at creation
  * parameter_map keys and value kinds are checked against the adapter's list
    (U/npu_attrs.cc); precision_mode / precision_mode_v2 against its lists
    (from r1.12, so not in the before-r1.5 mode). Stricter than the adapter:
    an unknown key or a value of the wrong kind is refused (the adapter ignores
    the first and reads the second as empty/0, silently losing the setting;
    for iterations_per_loop that is fatal "must >= 1").
  * HCCL starts when RANK_TABLE_FILE is non-empty and RANK_SIZE (1 if unset)
    > 0: the rank table must list exactly RANK_SIZE devices and RANK_ID (or
    POD_NAME) must be set, else tf.errors.InternalError. With RANK_SIZE > 1 this
    rank's gRPC server starts and the session runs on it (npu_bridge/_hccl.py).
at sess.run
  * a session whose iterations_per_loop is not 1 aborts the process when the
    fetched graph holds a OneShotIterator (the adapter's LOG(FATAL)).
  * fetching the op named exactly IterationOp after set_iteration_per_loop(N>1)
    runs the step N times (one device loop) and returns the last run's values;
    it needs iterations_per_loop.i == N, enable_data_pre_proc True,
    mix_compile_mode off and no feed_dict.
"""
import hashlib
import os
import sys

import numpy as np
import tensorflow.compat.v1 as tf
from tensorflow.python.client import session as session_lib

from npu_bridge import _hccl
from npu_bridge import standin

NPU_OPTIMIZER = 'NpuOptimizer'

# Keys the adapter reads from the NpuOptimizer parameter_map, with the AttrValue
# field it reads (master, U/npu_attrs.cc SetNpuOptimizerAttr).
_KEY_KINDS = {
    'variable_format_optimize': 'b', 'hcom_parallel': 'b', 'graph_memory_max_size': 's',
    'variable_memory_max_size': 's', 'enable_dump': 'b', 'enable_dump_debug': 'b',
    'dump_path': 's', 'dump_step': 's', 'dump_mode': 's', 'dump_debug_mode': 's',
    'stream_max_parallel_num': 's', 'ac_parallel_enable': 's', 'is_tailing_optimization': 'b',
    'profiling_mode': 'b', 'profiling_options': 's', 'auto_tune_mode': 's', 'graph_run_mode': 'i',
    'op_debug_level': 'i', 'enable_scope_fusion_passes': 's', 'aoe_mode': 's', 'work_path': 's',
    'distribute_config': 's', 'precision_mode': 's', 'precision_mode_v2': 's', 'soc_config': 's',
    'enable_data_pre_proc': 'b', 'use_off_line': 'b', 'mix_compile_mode': 'b',
    'iterations_per_loop': 'i', 'lower_functional_ops': 'b', 'job': 's', 'task_index': 'i',
    'dynamic_input': 'b', 'dynamic_graph_execute_mode': 's', 'dynamic_inputs_shape_range': 's',
    'local_rank_id': 'i', 'local_device_list': 's', 'in_out_pair_flag': 'b', 'in_out_pair': 's',
    'enable_exception_dump': 'i', 'op_select_implmode': 's', 'optypelist_for_implmode': 's',
    'input_shape': 's', 'dynamic_dims': 's', 'dynamic_node_type': 'i', 'buffer_optimize': 's',
    'enable_small_channel': 'i', 'deterministic': 'i', 'fusion_switch_file': 's',
    'enable_compress_weight': 'b', 'compress_weight_conf': 's', 'op_compiler_cache_mode': 's',
    'op_compiler_cache_dir': 's', 'debug_dir': 's', 'hcom_multi_mode': 'b',
    'session_device_id': 'i', 'modify_mixlist': 's', 'op_precision_mode': 's',
    'device_type': 's', 'hccl_timeout': 'i', 'op_wait_timeout': 'i', 'op_execute_timeout': 'i',
    'customize_dtypes': 's', 'HCCL_algorithm': 's', 'op_debug_config': 's',
    'graph_exec_timeout': 'i', 'static_memory_policy': 'i', 'atomic_clean_policy': 'i',
    'memory_optimization_policy': 's', 'experimental_logical_device_cluster_deploy_mode': 's',
    'experimental_logical_device_id': 's', 'experimental_accelerate_train_mode': 's',
    'experimental_model_deploy_mode': 's', 'experimental_model_deploy_devicelist': 's',
    'topo_sorting_mode': 'i', 'insert_op_file': 's', 'resource_config_path': 's',
    'graph_parallel_option_path': 's', 'enable_graph_parallel': 'b', 'dump_data': 's',
    'dump_layer': 's', 'aoe_config_file': 's', 'stream_sync_timeout': 'i',
    'event_sync_timeout': 'i', 'external_weight': 'b', 'es_cluster_config': 's',
    'frozen_variable': 'b', 'variable_placement': 's', 'jit_compile': 's',
    'graph_compiler_cache_dir': 's', 'graph_slice': 's',
    # Written by NPUEstimator but read by no C++ code: accepted, ignored.
    'min_group_size': 'b', 'enable_reduce_precision': 'b',
}
PRECISION_MODES = ('force_fp32', 'allow_fp32_to_fp16', 'force_fp16', 'must_keep_origin_dtype',
                   'allow_mix_precision', 'cube_fp16in_fp32out', 'allow_mix_precision_fp16',
                   'allow_mix_precision_bf16', 'allow_fp32_to_bf16')
PRECISION_MODES_V2 = ('fp16', 'origin', 'cube_fp16in_fp32out', 'mixed_float16', 'mixed_bfloat16')
ONE_SHOT_FATAL = 'iterator_per_loop only support 1 when using OneShotIterator'

_APPLY_NPU_CONFIG_PROTO = [False]  # set by importing npu_init (r1.9+): every config gets it


def _invalid(message):
    return tf.errors.InvalidArgumentError(None, None, 'npu_bridge STAND-IN: ' + message)


def npu_optimizer_of(config):
    """The NpuOptimizer custom optimizer of a ConfigProto, or None."""
    if config is None:
        return None
    for custom in config.graph_options.rewrite_options.custom_optimizers:
        if custom.name == NPU_OPTIMIZER:
            return custom
    return None


def _known_kinds():
    kinds = dict(_KEY_KINDS)
    if not standin.models_master():
        del kinds['precision_mode_v2']  # r1.13+
    return kinds


def check_parameter_map(params):
    """Checks an NpuOptimizer parameter_map; returns {key: python value}.

    Raises:
      tf.errors.InvalidArgumentError: unknown key, wrong kind, iterations_per_loop < 1,
        or a precision mode outside the adapter's list (r1.12+).
    """
    kinds = _known_kinds()
    values = {}
    for key in sorted(params):
        if key not in kinds:
            raise _invalid('NpuOptimizer parameter_map has unknown key %r (the adapter reads '
                           'none of that name; known: %s)' % (key, ', '.join(sorted(kinds))))
        kind = params[key].WhichOneof('value')
        if key == 'iterations_per_loop' and (kind != 'i' or params[key].i < 1):
            raise _invalid('iterations_per_loop must >= 1 (the adapter reads parameter_map'
                           '["iterations_per_loop"].i, given %s)' % _describe(params[key]))
        if kind != kinds[key]:
            raise _invalid('NpuOptimizer parameter_map[%r] is given as .%s; the adapter reads '
                           '.%s and would see %s' % (key, kind, kinds[key],
                                                     {'b': 'false', 'i': '0', 's': "''"}[kinds[key]]))
        value = getattr(params[key], kind)
        values[key] = value.decode() if kind == 's' else value
    if standin.models_master():
        for key, allowed in (('precision_mode', PRECISION_MODES),
                             ('precision_mode_v2', PRECISION_MODES_V2)):
            if key in values and values[key] not in allowed:
                raise _invalid("'%s' is invalid, it should be one of the list:[%s]"
                               % (values[key], ', '.join(allowed)))
    return values


def _describe(attr):
    kind = attr.WhichOneof('value')
    return 'nothing' if kind is None else '.%s=%r' % (kind, getattr(attr, kind))


class _NpuSessionState(object):
    """What the stand-in keeps about one NPU session."""

    def __init__(self, params):
        self.params = params
        self.iterations_per_loop = params.get('iterations_per_loop', 1)
        self.enable_data_pre_proc = params.get('enable_data_pre_proc', False)
        self.mix_compile_mode = params.get('mix_compile_mode', False)
        self.checked_fetches = set()


def _wrapped_init(self, target='', graph=None, config=None):
    self._session = None  # BaseSession.__del__ reads it when a check below raises
    if _APPLY_NPU_CONFIG_PROTO[0]:
        from npu_bridge import npu_init
        config = npu_init.npu_config_proto(config if config is not None else tf.ConfigProto())
    state = None
    custom = npu_optimizer_of(config)
    if custom is not None:
        params = check_parameter_map(custom.parameter_map)
        target, config = _hccl.init_for_session(target, config)
        standin.record('Session', parameter_map=params, target=target,
                       hccl=_hccl.hccl_enabled(), rank_size=_hccl.rank_size()
                       if _hccl.hccl_enabled() else 1)
        state = _NpuSessionState(params)
    _ORIGINAL['init'](self, target, graph, config)
    self._npu_standin = state


def _fetch_ops(graph, fetches):
    ops = []
    try:
        flat = tf.nest.flatten(fetches)
    except (TypeError, ValueError):
        flat = [fetches]
    for item in flat:
        if isinstance(item, str):
            try:
                item = graph.as_graph_element(item)
            except (KeyError, ValueError, TypeError):
                continue
        op = item if isinstance(item, tf.Operation) else getattr(item, 'op', None)
        if isinstance(op, tf.Operation):
            ops.append(op)
    return ops


def _reaches(ops, op_type):
    seen, stack = set(), list(ops)
    while stack:
        op = stack.pop()
        if op.name in seen:
            continue
        seen.add(op.name)
        if op.type == op_type:
            return True
        stack.extend(t.op for t in op.inputs)
        stack.extend(op.control_inputs)
    return False


def _abort(message):
    sys.stderr.write('F npu_bridge STAND-IN om_partition_subgraphs_pass.cc] %s\n' % message)
    sys.stderr.flush()
    standin.dump()
    os.abort()


def _loaded_iterations(sess):
    loop_vars = sess.graph.get_collection('npu_runconfig_iterations_per_loop')
    if len(loop_vars) != 1:
        return 1
    return int(_ORIGINAL['run'](sess, loop_vars[0])) + 1


def _wrapped_run(self, fetches, feed_dict=None, options=None, run_metadata=None):
    state = getattr(self, '_npu_standin', None)
    if state is None:
        return _ORIGINAL['run'](self, fetches, feed_dict, options, run_metadata)
    ops = _fetch_ops(self.graph, fetches)
    if state.iterations_per_loop != 1:
        signature = tuple(sorted(op.name for op in ops))
        if signature not in state.checked_fetches:
            if _reaches(ops, 'OneShotIterator'):
                _abort(ONE_SHOT_FATAL)
            state.checked_fetches.add(signature)
    if not any(op.name == 'IterationOp' for op in ops):
        return _ORIGINAL['run'](self, fetches, feed_dict, options, run_metadata)
    loaded = _loaded_iterations(self)
    if loaded == 1:
        return _ORIGINAL['run'](self, fetches, feed_dict, options, run_metadata)
    if state.iterations_per_loop != loaded:
        raise _invalid('set_iteration_per_loop loaded %d iterations but the session config '
                       'has iterations_per_loop=%d; both must be the same N'
                       % (loaded, state.iterations_per_loop))
    if not state.enable_data_pre_proc:
        raise _invalid('loop sinking (iterations_per_loop=%d) needs enable_data_pre_proc=True '
                       'in the session config' % loaded)
    if state.mix_compile_mode:
        raise _invalid('loop sinking (iterations_per_loop=%d) needs mix_compile_mode off'
                       % loaded)
    if feed_dict:
        raise _invalid('No feed_dict data with iterations_per_loop=%d: the device loop takes '
                       'its input from the dataset (GetNext), not from feeds' % loaded)
    result = None
    for _ in range(loaded):
        result = _ORIGINAL['run'](self, fetches, None, options, run_metadata)
    standin.record('IterationOp.run', iterations=loaded)
    return result


def _wrapped_close(self):
    """Records a digest of every global variable before an NPU session closes, so tests
    can compare ranks (which write no checkpoints) with each other."""
    state = getattr(self, '_npu_standin', None)
    if state is not None and not getattr(self, '_closed', False):
        with self.graph.as_default():
            variables = tf.global_variables()
        try:
            values = _ORIGINAL['run'](self, variables) if variables else []
        except (tf.errors.OpError, RuntimeError):
            values = None  # a session that no longer runs: nothing to record
        if values is not None:
            standin.record('Session.close', variables={
                var.op.name: hashlib.sha1(np.ascontiguousarray(value).tobytes()).hexdigest()
                for var, value in zip(variables, values)})
    _ORIGINAL['close'](self)


_ORIGINAL = {}


def install():
    """Wraps Session.__init__ and Session.run (idempotent; replaces an older wrapper)."""
    cls = session_lib.Session
    init = getattr(cls.__init__, '_npu_standin_original', cls.__init__)
    run = getattr(cls.run, '_npu_standin_original', cls.run)
    close = getattr(cls.close, '_npu_standin_original', cls.close)
    _ORIGINAL['init'], _ORIGINAL['run'], _ORIGINAL['close'] = init, run, close
    _wrapped_init._npu_standin_original = init
    _wrapped_run._npu_standin_original = run
    _wrapped_close._npu_standin_original = close
    cls.__init__ = _wrapped_init
    cls.run = _wrapped_run
    cls.close = _wrapped_close


def uninstall():
    """Restores tf.Session as it was before any stand-in import."""
    _APPLY_NPU_CONFIG_PROTO[0] = False
    cls = session_lib.Session
    init = getattr(cls.__init__, '_npu_standin_original', None)
    if init is not None:
        cls.__init__ = init
    for name in ('run', 'close'):
        original = getattr(getattr(cls, name), '_npu_standin_original', None)
        if original is not None:
            if original is getattr(session_lib.BaseSession, name):
                delattr(cls, name)
            else:
                setattr(cls, name, original)
