"""STAND-IN of npu_bridge.hccl (tests only; see ../../README.md)."""
