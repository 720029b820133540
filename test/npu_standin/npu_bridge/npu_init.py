"""STAND-IN of npu_bridge.npu_init: the names `from npu_bridge.npu_init import *` gives.

npu_config_proto exists from r1.5 (not in the before-r1.5 mode). In the r1.5+
and inf-nan modes (master, r1.9+) importing this module also makes every
tf.Session apply npu_config_proto to its config, in place, as the adapter does.
The real module also imports CANN's hccl.manage.api (create_group, ...); those
are not modelled.
"""
from tensorflow.core.protobuf import config_pb2
from tensorflow.core.protobuf.rewriter_config_pb2 import RewriterConfig

from npu_bridge import _session
from npu_bridge import standin
from npu_bridge.estimator import npu_ops  # noqa: F401
from npu_bridge.estimator.npu import npu_scope  # noqa: F401
from npu_bridge.estimator.npu import util  # noqa: F401
from npu_bridge.estimator.npu.npu_config import NPURunConfig  # noqa: F401
from npu_bridge.estimator.npu.npu_estimator import NPUEstimator  # noqa: F401
from npu_bridge.estimator.npu.npu_loss_scale_manager import (  # noqa: F401
    ExponentialUpdateLossScaleManager, FixedLossScaleManager)
from npu_bridge.estimator.npu.npu_loss_scale_optimizer import NPULossScaleOptimizer  # noqa
from npu_bridge.estimator.npu.npu_optimizer import NPUDistributedOptimizer  # noqa: F401
from npu_bridge.hccl import hccl_ops  # noqa: F401

if standin.models_master():
    from npu_bridge.estimator.npu import npu_plugin  # noqa: F401

if standin.at_least_r1_5():
    def npu_config_proto(config_proto=None):
        """config_proto (a new one if None or not a ConfigProto) set up for the NPU, in place.

        Finds or adds the NpuOptimizer custom optimizer (memory_optimization OFF only
        when it adds it), allow_soft_placement on, device-placement logging off,
        remapping OFF, XLA JIT off.
        """
        if not isinstance(config_proto, config_pb2.ConfigProto):
            config_proto = config_pb2.ConfigProto()
        rewrite = config_proto.graph_options.rewrite_options
        if _session.npu_optimizer_of(config_proto) is None:
            rewrite.custom_optimizers.add().name = _session.NPU_OPTIMIZER
            rewrite.memory_optimization = RewriterConfig.OFF
        config_proto.allow_soft_placement = True
        config_proto.log_device_placement = False
        rewrite.remapping = RewriterConfig.OFF
        config_proto.graph_options.optimizer_options.global_jit_level = \
            config_pb2.OptimizerOptions.OFF
        return config_proto

if standin.models_master():
    _session._APPLY_NPU_CONFIG_PROTO[0] = True
    standin.record('npu_init', applies_npu_config_proto_to_every_session=True)
