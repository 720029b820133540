"""STAND-IN: records calls, does not run on an NPU (tests only; see ../README.md)."""
