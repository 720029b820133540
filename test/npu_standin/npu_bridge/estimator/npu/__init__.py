"""STAND-IN: records calls, does not run on an NPU."""
