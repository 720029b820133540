"""STAND-IN of npu_bridge.estimator.npu.npu_estimator.NPUEstimator: construction only.

Like master's NPUEstimator.__init__: refuses a config that is not an
NPURunConfig, then derives the session config (grappler optimizer list +
GradFusionOptimizer, and a NEW NpuOptimizer custom optimizer from the
NPURunConfig's options; a new ConfigProto on a copy of the config when it had
none), then needs JOB_ID (r1.5+). Training is not modelled: model_fn may be None,
and train/evaluate/predict are absent.
"""
import json
import os

import tensorflow.compat.v1 as tf

from npu_bridge import standin
from npu_bridge.estimator.npu.npu_config import NPURunConfig

GRAPPLER_OPTIMIZERS = ['pruning', 'function', 'constfold', 'shape', 'arithmetic', 'loop',
                       'dependency', 'layout', 'GradFusionOptimizer']

# NPURunConfig argument -> (parameter_map key, kind), written when the argument is not
# None, in master's order (E/npu_estimator.py __load_graph_optimizers and helpers).
_IF_SET = [
    ('graph_memory_max_size', 'str'), ('variable_memory_max_size', 'str'),
    ('op_debug_level', 'i'), ('enable_scope_fusion_passes', 's'), ('buffer_optimize', 's'),
    ('fusion_switch_file', 's'), ('compress_weight_conf', 's'), ('op_compiler_cache_mode', 's'),
    ('op_compiler_cache_dir', 's'), ('debug_dir', 's'), ('dynamic_input', 'b'),
    ('dynamic_graph_execute_mode', 's'), ('dynamic_inputs_shape_range', 's'),
    ('local_rank_id', 'i'), ('local_device_list', 's'), ('soc_config', 's'),
    ('hccl_timeout', 'i'), ('op_wait_timeout', 'i'), ('op_execute_timeout', 'i'),
    ('HCCL_algorithm', 's'), ('customize_dtypes', 's'), ('op_debug_config', 's'),
    ('topo_sorting_mode', 'i'), ('insert_op_file', 's'), ('es_cluster_config', 's'),
]
_ALWAYS = [
    ('enable_data_pre_proc', 'b'), ('mix_compile_mode', 'b'), ('iterations_per_loop', 'i'),
    ('is_tailing_optimization', 'b'), ('hcom_parallel', 'b'), ('graph_run_mode', 'i'),
    ('enable_exception_dump', 'i'), ('enable_small_channel', 'i'), ('deterministic', 'i'),
    ('enable_compress_weight', 'b'), ('hcom_multi_mode', 'b'), ('device_type', 's'),
    ('jit_compile', 's'), ('stream_sync_timeout', 'i'), ('event_sync_timeout', 'i'),
    ('external_weight', 'b'), ('frozen_variable', 'b'), ('variable_placement', 's'),
]
_LATE_IF_SET = [
    ('session_device_id', 'i'), ('modify_mixlist', 's'), ('op_precision_mode', 's'),
    ('precision_mode', 's'), ('precision_mode_v2', 's'),
]


def _put(parameter_map, key, kind, value):
    if kind == 'str':
        parameter_map[key].s = tf.compat.as_bytes(str(value))
    elif kind == 's':
        parameter_map[key].s = tf.compat.as_bytes(value)
    else:
        setattr(parameter_map[key], kind, value)


def npu_session_config(config):
    """The config NPUEstimator runs with: config.session_config gains the NPU entries.

    Returns:
      the NPURunConfig whose session_config was changed (a copy when it had none).
    """
    if config.session_config is None:
        config = config.replace(session_config=tf.ConfigProto())
    options = config.npu_options
    rewrite = config.session_config.graph_options.rewrite_options
    rewrite.optimizers.extend(GRAPPLER_OPTIMIZERS)
    custom = rewrite.custom_optimizers.add()
    custom.name = 'NpuOptimizer'
    params = custom.parameter_map
    _put(params, 'use_off_line', 'b', True)
    params['min_group_size'].b = True
    for key, kind in _ALWAYS:
        _put(params, key, kind, options[key])
    for key, kind in _IF_SET + _LATE_IF_SET:
        if options[key] is not None:
            _put(params, key, kind, options[key])
    _put(params, 'enable_reduce_precision', 'b', options['enable_reduce_precision'])
    if options['variable_format_optimize'] is not None:
        _put(params, 'variable_format_optimize', 'b', options['variable_format_optimize'])
    params['enable_dump'].b = False          # no dump_config
    params['enable_dump_debug'].b = False
    for key in ('stream_max_parallel_num', 'ac_parallel_enable', 'op_select_implmode',
                'optypelist_for_implmode', 'aoe_config_file'):
        if options[key] is not None:
            _put(params, key, 's', options[key])
    task = json.loads(os.environ.get('TF_CONFIG') or '{}').get('task', {})
    if task.get('type'):
        params['job'].s = tf.compat.as_bytes(task['type'])
        params['task_index'].i = int(task.get('index', 0))
    else:
        params['job'].s = b'localhost'
        params['task_index'].i = 0
    if options['aoe_mode'] is not None:
        _put(params, 'aoe_mode', 's', options['aoe_mode'])
        _put(params, 'work_path', 's', options['work_path'] or './')
        if options['distribute_config'] is not None:
            _put(params, 'distribute_config', 's', options['distribute_config'])
    params['experimental_logical_device_cluster_deploy_mode'].s = b'LB'  # no experimental_config
    return config


class NPUEstimator(object):
    """Builds the NPU session config from an NPURunConfig (no training in the stand-in)."""

    def __init__(self, model_fn=None, model_dir=None, config=None, params=None,
                 job_start_file='', warm_start_from=None):
        if config is None or not isinstance(config, NPURunConfig):
            raise ValueError('`config` must be provided with type `NPUConfigs`')
        config = npu_session_config(config)
        if standin.at_least_r1_5() and not job_start_file and not os.environ.get('JOB_ID'):
            raise ValueError('Load job info failed, please check whether `JOB_ID` is set in '
                             'environment variable')
        if model_dir is not None and config.model_dir is not None and \
                model_dir != config.model_dir:
            raise ValueError('model_dir are set both in constructor and RunConfig, but with '
                             'different values. In constructor: %r, in RunConfig: %r'
                             % (model_dir, config.model_dir))
        self._model_fn = model_fn
        self._model_dir = model_dir or config.model_dir
        self._config = config
        self._params = dict(params or {})
        self._warm_start_from = warm_start_from
        standin.record('NPUEstimator', model_dir=self._model_dir,
                       job_start_file=job_start_file)

    @property
    def config(self):
        return self._config

    @property
    def model_dir(self):
        return self._model_dir

    @property
    def params(self):
        return dict(self._params)
