"""STAND-IN of npu_bridge.estimator (tests only; see ../../README.md)."""
