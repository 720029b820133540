"""The "this step's update was applied" flag of a loss-scaling optimizer.

Loss-scaling optimizers skip a step whose gradients overflowed but do not all
expose the decision under one name. FiniteGradientsRecorder wraps one and
names the flag FINITE_TENSOR for the training loop (overflow_indicator).
runtime.wrap_optimizer decides, per platform, what it is given.
"""
import re

import tensorflow.compat.v1 as tf

# What the training loop reads: the step's update was applied (True) or skipped.
FINITE_TENSOR = 'gradients_all_finite'


class FiniteGradientsRecorder(tf.train.Optimizer):
    """Delegates to a loss-scale optimizer and names FINITE_TENSOR: its step was applied.

    Where the wrapped optimizer builds a flag of its own (`adapter_flag`, the
    NPU's float-status check in saturation mode, the only sound test there:
    float16 saturates instead of overflowing to inf), that flag is used.
    Otherwise (TensorFlow's loss-scale optimizer on a GPU, the NPU in INF/NaN
    mode) the decision is recomputed from the same unscaled gradients the
    optimizer tests, so the training loop can count skipped steps.
    """

    def __init__(self, optimizer, adapter_flag=None, inf_nan=True):
        super(FiniteGradientsRecorder, self).__init__(False, optimizer.get_name())
        self._optimizer = optimizer
        self._adapter_flag = adapter_flag
        self._inf_nan = inf_nan

    def compute_gradients(self, *args, **kwargs):
        return self._optimizer.compute_gradients(*args, **kwargs)

    def apply_gradients(self, grads_and_vars, global_step=None, name=None):
        grads_and_vars = list(grads_and_vars)
        graph = tf.get_default_graph()
        known = len(graph.get_operations())
        train_op = self._optimizer.apply_gradients(grads_and_vars, global_step, name)
        flags = []
        if self._adapter_flag:
            pattern = re.compile(r'(^|/)%s(_\d+)?$' % re.escape(self._adapter_flag))
            flags = [op.outputs[0] for op in graph.get_operations()[known:]
                     if pattern.search(op.name)]
        if not flags:
            if not self._inf_nan:
                raise RuntimeError('no %r tensor after the loss-scale optimizer: the adapter '
                                   'is older than r1.5.0 (see runtime.check_device_options)'
                                   % self._adapter_flag)
            flags = [tf.reduce_all(tf.math.is_finite(
                grad.values if isinstance(grad, tf.IndexedSlices) else grad))
                for grad, _ in grads_and_vars if grad is not None]
        tf.reduce_all(tf.stack(flags), name=FINITE_TENSOR)
        return train_op

    def get_slot(self, var, name):
        return self._optimizer.get_slot(var, name)

    def get_slot_names(self):
        return self._optimizer.get_slot_names()

    def variables(self):
        return self._optimizer.variables()


def overflow_indicator(loss_scale, graph=None):
    """A bool scalar: True when the step's gradients overflowed and its update was skipped.

    Call it after the train op is built from runtime.wrap_optimizer's
    optimizer, whose FiniteGradientsRecorder names FINITE_TENSOR (True when
    finite; several train ops are and-ed).

    Returns:
      A bool tensor, or None without loss scaling.
    Raises:
      RuntimeError: loss scaling is on but the train op has not been built.
    """
    if loss_scale is None:
        return None
    graph = graph or tf.get_default_graph()
    finite = [op.outputs[0] for op in graph.get_operations()
              if op.name == FINITE_TENSOR or op.name.endswith('/' + FINITE_TENSOR)]
    if not finite:
        raise RuntimeError('no %r tensor in the graph: build the train op with the optimizer '
                           'from wrap_optimizer() first' % FINITE_TENSOR)
    with graph.as_default():
        return tf.logical_not(tf.reduce_all(tf.stack(finite)), name='overflow')
