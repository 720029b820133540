"""STAND-IN of npu_bridge.estimator.npu.npu_config.NPURunConfig (master's signature).

The real NPURunConfig subclasses tf.estimator's RunConfig. So does this one
where tf.estimator exists (TF 1.15); TensorFlow 2.16+ has no tf.estimator, and
there it subclasses a small stand-in (_RunConfigBase) holding the same
RunConfig attributes. NPUEstimator (npu_estimator.py) turns it into the
session config's NpuOptimizer. The sub-configs (dump_config, profiling_config,
memory_config, experimental_config, dynamic_input_config) are not modelled:
only None is accepted.
"""
import copy
import json
import os

import tensorflow.compat.v1 as tf

from npu_bridge import standin
from npu_bridge.estimator.npu import util

try:
    _RunConfig = tf.estimator.RunConfig
except AttributeError:  # TensorFlow 2.16+: tf.estimator is gone
    _RunConfig = None


class _RunConfigBase(object):
    """The RunConfig attributes NPURunConfig passes on, where tf.estimator is missing."""

    def __init__(self, model_dir=None, tf_random_seed=None, save_summary_steps=100,
                 save_checkpoints_steps=None, save_checkpoints_secs=None, session_config=None,
                 keep_checkpoint_max=5, keep_checkpoint_every_n_hours=10000,
                 log_step_count_steps=100, train_distribute=None, eval_distribute=None):
        if save_checkpoints_steps is not None and save_checkpoints_secs is not None:
            raise ValueError('Can not provide both save_checkpoints_steps and '
                             'save_checkpoints_secs.')
        if session_config is not None and not isinstance(session_config, tf.ConfigProto):
            raise ValueError('session_config must be instance of ConfigProto')
        self._model_dir = model_dir
        self._tf_random_seed = tf_random_seed
        self._save_summary_steps = save_summary_steps
        self._save_checkpoints_steps = save_checkpoints_steps
        self._save_checkpoints_secs = save_checkpoints_secs
        self._session_config = session_config
        self._keep_checkpoint_max = keep_checkpoint_max
        self._keep_checkpoint_every_n_hours = keep_checkpoint_every_n_hours
        self._log_step_count_steps = log_step_count_steps
        self._train_distribute = train_distribute
        self._eval_distribute = eval_distribute

    model_dir = property(lambda self: self._model_dir)
    tf_random_seed = property(lambda self: self._tf_random_seed)
    save_summary_steps = property(lambda self: self._save_summary_steps)
    save_checkpoints_steps = property(lambda self: self._save_checkpoints_steps)
    save_checkpoints_secs = property(lambda self: self._save_checkpoints_secs)
    session_config = property(lambda self: self._session_config)
    keep_checkpoint_max = property(lambda self: self._keep_checkpoint_max)
    keep_checkpoint_every_n_hours = property(lambda self: self._keep_checkpoint_every_n_hours)
    log_step_count_steps = property(lambda self: self._log_step_count_steps)

    def replace(self, session_config):
        """A copy with another session_config (the one replacement NPUEstimator makes)."""
        new = copy.copy(self)
        new._session_config = session_config
        return new


def _check_none(value, name):
    if value is not None:
        raise NotImplementedError('npu_bridge STAND-IN: NPURunConfig(%s=...) is not modelled; '
                                  'only None' % name)


class NPURunConfig(_RunConfig or _RunConfigBase):
    """RunConfig with NPU options (master's 76 parameters, in the real order)."""

    def __init__(self,
                 iterations_per_loop=1,
                 profiling_config=None,
                 model_dir=None,
                 tf_random_seed=None,
                 save_summary_steps=0,
                 save_checkpoints_steps=None,
                 save_checkpoints_secs=None,
                 session_config=None,
                 keep_checkpoint_max=5,
                 keep_checkpoint_every_n_hours=10000,
                 log_step_count_steps=100,
                 distribute=None,
                 enable_data_pre_proc=True,
                 precision_mode=None,
                 enable_reduce_precision=False,
                 variable_format_optimize=None,
                 mix_compile_mode=False,
                 hcom_parallel=standin.models_master(),  # True from r1.10
                 graph_memory_max_size=None,
                 variable_memory_max_size=None,
                 dump_config=None,
                 stream_max_parallel_num=None,
                 is_tailing_optimization=False,
                 horovod_mode=False,
                 graph_run_mode=1,
                 op_debug_level=None,
                 enable_scope_fusion_passes=None,
                 enable_exception_dump=2,
                 op_select_implmode=None,
                 optypelist_for_implmode=None,
                 dynamic_input_config=None,
                 aoe_mode=None,
                 work_path=None,
                 buffer_optimize='l2_optimize',
                 enable_small_channel=0,
                 fusion_switch_file=None,
                 enable_compress_weight=False,
                 compress_weight_conf=None,
                 op_compiler_cache_mode=None,
                 op_compiler_cache_dir=None,
                 debug_dir=None,
                 hcom_multi_mode=False,
                 dynamic_input=None,
                 dynamic_graph_execute_mode='dynamic_execute',
                 dynamic_inputs_shape_range=None,
                 train_distribute=None,
                 eval_distribute=None,
                 local_rank_id=None,
                 local_device_list=None,
                 session_device_id=None,
                 distribute_config=None,
                 modify_mixlist=None,
                 op_precision_mode=None,
                 device_type='default_device_type',
                 soc_config=None,
                 hccl_timeout=None,
                 op_wait_timeout=None,
                 op_execute_timeout=None,
                 HCCL_algorithm=None,
                 customize_dtypes=None,
                 op_debug_config=None,
                 memory_config=None,
                 experimental_config=None,
                 topo_sorting_mode=None,
                 aoe_config_file=None,
                 insert_op_file=None,
                 stream_sync_timeout=-1,
                 event_sync_timeout=-1,
                 external_weight=False,
                 es_cluster_config=None,
                 deterministic=0,
                 frozen_variable=False,
                 variable_placement='Device',
                 jit_compile='auto',
                 precision_mode_v2=None,
                 ac_parallel_enable=None):
        options = dict(locals())
        del options['self']
        for name in ('profiling_config', 'dump_config', 'dynamic_input_config', 'memory_config',
                     'experimental_config', 'distribute'):
            _check_none(options[name], name)
        util.check_positive_integer(iterations_per_loop, 'iterations_per_loop')
        if not isinstance(mix_compile_mode, bool):
            if standin.models_master():
                raise TypeError('"mix_compile_mode" type must be bool')
            raise ValueError('"mix_compile_mode" type must be bool')
        if mix_compile_mode is True and iterations_per_loop != 1:
            raise ValueError('"iterations_per_loop" must be 1 with "mix_compile_mode" is True')
        if not isinstance(jit_compile, str):
            raise TypeError('Expected str, got ' + type(jit_compile).__name__)
        if json.loads(os.environ.get('TF_CONFIG') or '{}').get('cluster'):
            # A cluster needs a ParameterServerStrategy (not modelled): the adapter refuses.
            raise ValueError('"cluster" and "distribute" must all be set in ps mode')
        if not isinstance(horovod_mode, bool):
            raise ValueError('"horovod_mode" type must be bool')
        util.check_nonnegative_integer(graph_run_mode, 'graph_run_mode')
        if graph_run_mode > 1:
            raise ValueError('"graph_run_mode" value must be 0 or 1')
        util.check_nonnegative_integer(enable_exception_dump, 'enable_exception_dump')
        if save_checkpoints_secs is None and save_checkpoints_steps is None:
            save_checkpoints_steps = 100
        standin.record('NPURunConfig', **{k: str(v) for k, v in sorted(options.items())})
        self.npu_options = options  # STAND-IN: every argument, for NPUEstimator
        self.iterations_per_loop = iterations_per_loop
        self.mix_compile_mode = mix_compile_mode
        self.enable_data_pre_proc = enable_data_pre_proc
        self.is_tailing_optimization = is_tailing_optimization
        self.variable_format_optimize = variable_format_optimize
        self.graph_run_mode = graph_run_mode
        self.horovod_mode = horovod_mode
        self._precision_mode = precision_mode
        self._precision_mode_v2 = precision_mode_v2
        self._hcom_parallel = hcom_parallel
        self._graph_memory_max_size = graph_memory_max_size
        self._variable_memory_max_size = variable_memory_max_size
        super(NPURunConfig, self).__init__(
            model_dir=model_dir, tf_random_seed=tf_random_seed,
            save_summary_steps=save_summary_steps, save_checkpoints_steps=save_checkpoints_steps,
            save_checkpoints_secs=save_checkpoints_secs, session_config=session_config,
            keep_checkpoint_max=keep_checkpoint_max,
            keep_checkpoint_every_n_hours=keep_checkpoint_every_n_hours,
            log_step_count_steps=log_step_count_steps, train_distribute=train_distribute,
            eval_distribute=eval_distribute)
