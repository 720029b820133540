"""STAND-IN of npu_bridge.estimator.npu.npu_loss_scale_optimizer.NPULossScaleOptimizer.

compute_gradients scales the loss by the manager's loss scale and divides the
gradients by it (tf.contrib.mixed_precision's LossScaleOptimizer, which the
real one extends from r1.7). apply_gradients, by NPU_STANDIN_ADAPTER:

  r1.5+ / before-r1.5 (saturation mode): the NPU's float-status register is
    simulated as an int32[8] status that is non-zero when any gradient is not
    finite (or the run is forced to overflow, below); with is_distributed it is
    summed over the ranks (hccl_ops.allreduce 'sum', fusion=0). "All finite" is a
    reduce_all named `overflow_status_reduce_all` in the caller's name scope
    (r1.5+) or unnamed (`All`, before r1.5).
    FixedLossScaleManager(enable_overflow_check=False) (r1.5+): no check at all.
  inf-nan: TF's LossScaleOptimizer.apply_gradients (is_finite on every gradient,
    None included); no overflow_status_reduce_all tensor exists.

In every mode an overflow skips the wrapped apply_gradients (weights and
global_step unchanged) and the manager's update always runs.

NPU_STANDIN_OVERFLOW_CALLS ('2,3': the 2nd and 3rd run of the update; 'all')
forces overflows: in saturation modes through the status, in inf-nan mode by
multiplying the first gradient by inf in compute_gradients (that mode has no
status to force). Each device iteration of a loop-sunk run counts as a run.
"""
import os

import numpy as np
import tensorflow.compat.v1 as tf

from npu_bridge import standin
from npu_bridge.estimator.npu.npu_loss_scale_manager import FixedLossScaleManager
from npu_bridge.hccl import hccl_ops

OVERFLOW_CALLS_ENV = 'NPU_STANDIN_OVERFLOW_CALLS'
_STATUS_SCOPE = 'NPULossScaleOptimizermodule'  # the adapter formats the module's type name


class _ForcedOverflow(object):
    """Counts runs; True on the runs NPU_STANDIN_OVERFLOW_CALLS names."""

    def __init__(self, spec):
        self.always = spec.strip() == 'all'
        self.runs = set() if self.always else {int(c) for c in spec.split(',') if c.strip()}
        self.count = 0

    def __call__(self):
        self.count += 1
        return np.bool_(self.always or self.count in self.runs)


def _forced_overflow():
    """A scalar bool tensor, True on forced runs; None without NPU_STANDIN_OVERFLOW_CALLS."""
    spec = os.environ.get(OVERFLOW_CALLS_ENV)
    if not spec:
        return None
    return tf.reshape(tf.py_func(_ForcedOverflow(spec), [], tf.bool, stateful=True,
                                 name='standin_forced_overflow'), [])


class NPULossScaleOptimizer(tf.train.Optimizer):
    """Loss scaling with overflow detection, like Huawei's."""

    def __init__(self, opt, loss_scale_manager, is_distributed=False):
        standin.record('NPULossScaleOptimizer', inner=type(opt).__name__,
                       manager=type(loss_scale_manager).__name__, is_distributed=is_distributed)
        self._opt = opt
        self._loss_scale_manager = loss_scale_manager
        self._is_distributed = is_distributed
        super(NPULossScaleOptimizer, self).__init__(name='NPULossScaleOptimizer',
                                                    use_locking=False)

    def __getattr__(self, attr):
        # r1.10+: unknown attributes come from the wrapped optimizer.
        if attr == '_opt' or not standin.models_master():
            raise AttributeError(attr)
        return getattr(self._opt, attr)

    def compute_gradients(self, loss, var_list=None, gate_gradients=tf.train.Optimizer.GATE_OP,
                          aggregation_method=None, colocate_gradients_with_ops=False,
                          grad_loss=None):
        loss_val = loss() if callable(loss) else loss
        loss_scale = self._loss_scale_manager.get_loss_scale()
        scaled_loss = loss_val * tf.cast(loss_scale, loss_val.dtype.base_dtype)
        grads_and_vars = self._opt.compute_gradients(
            scaled_loss, var_list=var_list, gate_gradients=gate_gradients,
            aggregation_method=aggregation_method,
            colocate_gradients_with_ops=colocate_gradients_with_ops, grad_loss=grad_loss)
        inverse = tf.reciprocal(tf.cast(loss_scale, tf.float32))
        result = [(None if g is None else g * tf.cast(inverse, g.dtype.base_dtype), v)
                  for g, v in grads_and_vars]
        if standin.inf_nan_mode():
            result = self._force_non_finite_gradient(result)
        return result

    @staticmethod
    def _force_non_finite_gradient(grads_and_vars):
        forced = _forced_overflow()
        if forced is None:
            return grads_and_vars
        for index, (grad, var) in enumerate(grads_and_vars):
            if grad is not None:
                factor = tf.where(forced, tf.constant(np.inf, grad.dtype.base_dtype),
                                  tf.constant(1, grad.dtype.base_dtype))
                grads_and_vars[index] = (grad * factor, var)
                break
        return grads_and_vars

    def apply_gradients(self, grads_and_vars, global_step=None, name=None):
        grads_and_vars = list(grads_and_vars)
        if standin.inf_nan_mode():
            is_overall_finite = tf.reduce_all(
                [tf.reduce_all(tf.math.is_finite(g)) for g, _ in grads_and_vars])
        elif self._overflow_check_enabled():
            is_overall_finite = self._saturation_mode_flag(grads_and_vars)
        else:
            is_overall_finite = tf.constant(True, dtype=tf.bool)
        standin.record('overflow_flag', flag=is_overall_finite.name,
                       adapter=standin.ADAPTER)

        def apply_fn():
            return self._opt.apply_gradients(grads_and_vars, global_step, name)

        update_variables = tf.cond(is_overall_finite, apply_fn, tf.no_op)
        return tf.group(update_variables,
                        self._loss_scale_manager.update_loss_scale(is_overall_finite))

    def _overflow_check_enabled(self):
        if standin.at_least_r1_5() and isinstance(self._loss_scale_manager,
                                                  FixedLossScaleManager):
            return self._loss_scale_manager.get_enable_overflow_check()
        return True

    def _saturation_mode_flag(self, grads_and_vars):
        with tf.name_scope(_STATUS_SCOPE):
            grads = [g for g, _ in grads_and_vars if g is not None]
            with tf.control_dependencies(grads):
                overflow = tf.logical_not(tf.reduce_all(
                    [tf.reduce_all(tf.math.is_finite(g)) for g in grads]))
                forced = _forced_overflow()
                if forced is not None:
                    overflow = tf.logical_or(overflow, forced)
                # The NPU's float status: int32[8], non-zero after an overflow.
                local_status = tf.pad(tf.reshape(tf.cast(overflow, tf.int32), [1]), [[0, 7]],
                                      name='float_status')
            with tf.control_dependencies([local_status]):
                cleared_status = tf.zeros([8], tf.int32, name='cleared_float_status')
        if self._is_distributed:
            status = hccl_ops.allreduce([local_status], 'sum', fusion=0)
        else:
            status = local_status
        if standin.at_least_r1_5():
            with tf.control_dependencies([cleared_status]):
                return tf.reduce_all(tf.equal(status, 0), name='overflow_status_reduce_all')
        return tf.reduce_all(tf.equal(status, cleared_status))

    def get_slot(self, var, name):
        return self._opt.get_slot(var, name)

    def get_slot_names(self):
        return self._opt.get_slot_names()

    def variables(self):
        return self._opt.variables()
