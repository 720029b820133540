"""STAND-IN: records calls, does not run on an NPU."""
from npu_bridge import standin


class NPURunConfig(object):
    """Keeps its keyword arguments (the real one is a tf.estimator.RunConfig)."""

    def __init__(self, **kwargs):
        self.kwargs = kwargs
        standin.record('NPURunConfig', **{k: str(v) for k, v in kwargs.items()})
