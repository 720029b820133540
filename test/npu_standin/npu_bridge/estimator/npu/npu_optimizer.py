"""STAND-IN of npu_bridge.estimator.npu.npu_optimizer.NPUDistributedOptimizer.

Like the real one: with RANK_SIZE above 1, compute_gradients all-reduces
(hccl_ops.allreduce 'sum', which crosses processes in this stand-in) every
non-None gradient and divides it by the rank size, in name scope
<name>_Allreduce; the divisor comes from the job info, which needs JOB_ID
(AttributeError without it, as the adapter's None job info gives).
apply_gradients delegates.
"""
import os

import tensorflow.compat.v1 as tf

from npu_bridge import standin
from npu_bridge.estimator.npu import util
from npu_bridge.hccl import hccl_ops


def _job_rank_size():
    # The adapter's NPUBasics reads the job info from JOB_ID; without it the job
    # info is None and reading its rank size raises AttributeError.
    job_info = None
    if os.environ.get('JOB_ID'):
        job_info = type('JobInfo', (), {'rank_size': int(util.get_ranksize())})()
    return job_info.rank_size


def allreduce(tensor, average=True):
    """The adapter's npu_optimizer.allreduce: HCCL sum, divided by the rank size if average."""
    size = _job_rank_size()
    summed = hccl_ops.allreduce(tensor, 'sum')
    if not average:
        return summed
    return tf.div(summed, tf.cast(size, tensor.dtype))


class NPUDistributedOptimizer(tf.train.Optimizer):
    """Averages gradients over the HCCL ranks before the wrapped optimizer applies them."""

    if standin.at_least_r1_5():
        def __init__(self, optimizer, is_weight_update_sharding=False, name=None):
            if is_weight_update_sharding:
                raise NotImplementedError('npu_bridge STAND-IN: is_weight_update_sharding=True '
                                          'is not modelled')
            self._setup(optimizer, name)
    else:
        def __init__(self, optimizer, name=None):
            self._setup(optimizer, name)

    def _setup(self, optimizer, name):
        if name is None:
            name = 'Distributed{}'.format(type(optimizer).__name__)
        self._optimizer = optimizer
        super(NPUDistributedOptimizer, self).__init__(name=name, use_locking=False)
        standin.record('NPUDistributedOptimizer', inner=type(optimizer).__name__, name=name)

    def compute_gradients(self, loss, var_list=None, gate_gradients=tf.train.Optimizer.GATE_OP,
                          aggregation_method=None, colocate_gradients_with_ops=False,
                          grad_loss=None):
        gradients = self._optimizer.compute_gradients(
            loss, var_list=var_list, gate_gradients=gate_gradients,
            aggregation_method=aggregation_method,
            colocate_gradients_with_ops=colocate_gradients_with_ops, grad_loss=grad_loss)
        rank_size = util.get_ranksize()
        if rank_size is None or int(rank_size) <= 1:
            return gradients
        averaged = []
        with tf.name_scope(self._name + '_Allreduce'):
            for grad, var in gradients:
                averaged.append((allreduce(grad, True) if grad is not None else None, var))
        return averaged

    def apply_gradients(self, grads_and_vars, global_step=None, name=None):
        return self._optimizer.apply_gradients(grads_and_vars, global_step, name)

    def get_slot(self, var, name):
        return self._optimizer.get_slot(var, name)

    def get_slot_names(self):
        return self._optimizer.get_slot_names()

    def variables(self):
        return self._optimizer.variables()
