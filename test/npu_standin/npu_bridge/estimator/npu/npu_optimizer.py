"""STAND-IN: records calls, does not run on an NPU. One process: the all-reduce is the identity."""
import tensorflow.compat.v1 as tf

from npu_bridge import standin


class NPUDistributedOptimizer(tf.train.Optimizer):
    """Delegates to the wrapped optimizer (the real one all-reduces the gradients over HCCL)."""

    def __init__(self, optimizer, name=None):
        super(NPUDistributedOptimizer, self).__init__(False, name or 'NPUDistributedOptimizer')
        self._optimizer = optimizer
        standin.record('NPUDistributedOptimizer', inner=type(optimizer).__name__)

    def compute_gradients(self, *args, **kwargs):
        return self._optimizer.compute_gradients(*args, **kwargs)

    def apply_gradients(self, grads_and_vars, global_step=None, name=None):
        return self._optimizer.apply_gradients(grads_and_vars, global_step, name)

    def get_slot(self, var, name):
        return self._optimizer.get_slot(var, name)

    def get_slot_names(self):
        return self._optimizer.get_slot_names()
