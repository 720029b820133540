"""STAND-IN of npu_bridge.estimator.npu (tests only; see ../../../README.md)."""
