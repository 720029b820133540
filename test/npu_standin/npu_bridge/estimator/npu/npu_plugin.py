"""STAND-IN of npu_bridge.estimator.npu.npu_plugin.

is_inf_nan_enabled() exists from r1.13 on (so not when NPU_STANDIN_ADAPTER is
before-r1.5): True in the inf-nan mode (a 910B in INF_NAN mode), else False
(an Ascend 910, saturation mode only).
"""
from npu_bridge import standin

if standin.models_master():
    def is_inf_nan_enabled():
        """Whether the device runs in INF_NAN mode (ACL device saturation mode 1)."""
        return standin.inf_nan_mode()
