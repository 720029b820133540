"""STAND-IN: records calls, does not run on an NPU.

Scales the loss, unscales the gradients and skips the update when they are not
finite, like Huawei's NPULossScaleOptimizer; the NPU's float-status registers
are replaced by an is_finite check. Its "all finite" flag carries Huawei's name
`overflow_status_reduce_all` (True: no overflow). NPU_STANDIN_OVERFLOW_CALLS
(e.g. '2,3', or 'all') forces overflows on those runs of the update.
"""
import os

import numpy as np
import tensorflow.compat.v1 as tf

from npu_bridge import standin


class _SimulatedOverflow(object):
    def __init__(self, spec):
        self.always = spec.strip() == 'all'
        self.calls = set() if self.always else {int(c) for c in spec.split(',') if c.strip()}
        self.count = 0

    def __call__(self):
        self.count += 1
        return np.bool_(self.always or self.count in self.calls)


class NPULossScaleOptimizer(tf.train.Optimizer):
    def __init__(self, opt, loss_scale_manager, is_distributed=False):
        super(NPULossScaleOptimizer, self).__init__(False, 'NPULossScaleOptimizer')
        standin.record('NPULossScaleOptimizer', inner=type(opt).__name__,
                       manager=type(loss_scale_manager).__name__, is_distributed=is_distributed)
        self._optimizer = opt
        self._loss_scale_manager = loss_scale_manager
        self._is_distributed = is_distributed

    def compute_gradients(self, loss, var_list=None, **kwargs):
        scale = tf.cast(self._loss_scale_manager.get_loss_scale(), loss.dtype.base_dtype)
        grads_and_vars = self._optimizer.compute_gradients(loss * scale, var_list, **kwargs)
        return [(None if g is None else g / tf.cast(scale, g.dtype.base_dtype), v)
                for g, v in grads_and_vars]

    def apply_gradients(self, grads_and_vars, global_step=None, name=None):
        grads_and_vars = list(grads_and_vars)
        finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(g))
                                for g, _ in grads_and_vars if g is not None])
        spec = os.environ.get('NPU_STANDIN_OVERFLOW_CALLS')
        if spec:
            forced = tf.reshape(tf.py_func(_SimulatedOverflow(spec), [], tf.bool), [])
            finite = tf.logical_and(finite, tf.logical_not(forced))
        finite = tf.identity(finite, name='overflow_status_reduce_all')
        update = tf.cond(finite,
                         lambda: self._optimizer.apply_gradients(grads_and_vars, global_step, name),
                         tf.no_op)
        return tf.group(update, self._loss_scale_manager.update_loss_scale(finite))

    def get_slot(self, var, name):
        return self._optimizer.get_slot(var, name)

    def get_slot_names(self):
        return self._optimizer.get_slot_names()
