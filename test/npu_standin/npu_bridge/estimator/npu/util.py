"""STAND-IN of npu_bridge.estimator.npu.util: loop-sinking variables (sess.run mode).

set_iteration_per_loop(sess, train_op, N) with N > 1 creates (or reuses) four
scalar int64 resource LOCAL variables in variable scope `npu_runconfig`,
loads them with N-1, 0, 0, 1 and returns tf.group(train_op, name="IterationOp").
The session wrapper (npu_bridge/_session.py) then runs the step N times per
sess.run of that op, as the device loop would.
"""
import os

import tensorflow.compat.v1 as tf

from npu_bridge import standin

NPU_RUNCONFIG = 'npu_runconfig'
ITERATIONS_PER_LOOP_VAR = 'iterations_per_loop'
LOOP_COND_VAR = 'loop_cond'
CONST_ZERO = 'zero'
CONST_ONE = 'one'


def check_positive_integer(value, name):
    """TypeError unless an int; ValueError unless positive (the adapter's messages)."""
    if not isinstance(value, int):  # six.integer_types in the adapter (bool passes)
        raise TypeError('{} must be int, got {}'.format(name, type(value)))
    if value <= 0:
        raise ValueError('{} must be positive, got {}'.format(name, value))


def _check_train_op(train_op):
    if not isinstance(train_op, tf.Operation):
        # The adapter formats train_op.dtype.name: non-tensors raise AttributeError here.
        raise ValueError("The incoming 'train_op' type is '%s', and the need type is "
                         "'Operation'" % train_op.dtype.name)


def create_or_get_var(var_name):
    """The int64 scalar resource variable npu_runconfig/<var_name> (one per graph)."""
    graph = tf.get_default_graph()
    collection = '{}_{}'.format(NPU_RUNCONFIG, var_name)
    existing = graph.get_collection(collection)
    if len(existing) == 1:
        return existing[0]
    if len(existing) > 1:
        raise RuntimeError('Multiple var in collection.')
    global_step = tf.train.get_global_step()
    with tf.colocate_with(global_step, ignore_existing=global_step is None):
        with tf.variable_scope(NPU_RUNCONFIG, reuse=tf.AUTO_REUSE):
            return tf.get_variable(var_name, shape=[], dtype=tf.int64,
                                   initializer=tf.zeros_initializer(), trainable=False,
                                   collections=[collection, tf.GraphKeys.LOCAL_VARIABLES],
                                   use_resource=True)


def _loop_vars():
    return [create_or_get_var(name) for name in
            (ITERATIONS_PER_LOOP_VAR, LOOP_COND_VAR, CONST_ZERO, CONST_ONE)]


def _load(sess, loop_vars, iterations_per_loop):
    for var, value in zip(loop_vars, (iterations_per_loop - 1, 0, 0, 1)):
        var.load(value, session=sess)


def set_iteration_per_loop(sess, train_op, iterations_per_loop=1):
    """Returns train_op for N == 1, else the op named IterationOp (see module docstring).

    Raises:
      ValueError: train_op is a Tensor (AttributeError for other non-Operations).
      TypeError / ValueError: iterations_per_loop not a positive int.
    """
    _check_train_op(train_op)
    check_positive_integer(iterations_per_loop, 'iterations_per_loop')
    standin.record('util.set_iteration_per_loop', train_op=train_op.name,
                   iterations_per_loop=iterations_per_loop)
    if iterations_per_loop == 1:
        return train_op
    _load(sess, _loop_vars(), iterations_per_loop)
    return tf.group(train_op, name='IterationOp')


def get_ranksize():
    """RANK_SIZE (master also reads CM_WORKER_SIZE; both set is an error), as a string."""
    if standin.models_master() and os.getenv('CM_WORKER_SIZE') is not None and \
            os.getenv('RANK_SIZE') is not None:
        raise ValueError('RANK_SIZE and CM_WORK_SIZE cannot be configured at the same time')
    if os.getenv('RANK_SIZE') is not None:
        return os.getenv('RANK_SIZE')
    return os.getenv('CM_WORKER_SIZE', '1') if standin.models_master() else '1'


class IterationPerLoop(object):
    """The two-step form for a finalized graph: create before, load after."""

    def __init__(self):
        self._loop_vars = None

    def create_iteration_per_loop_var(self, train_op):
        """Creates the npu_runconfig variables; returns tf.group(train_op, name='IterationOp')."""
        _check_train_op(train_op)
        self._loop_vars = _loop_vars()
        standin.record('util.IterationPerLoop.create_iteration_per_loop_var',
                       train_op=train_op.name)
        return tf.group(train_op, name='IterationOp')

    def load_iteration_per_loop_var(self, sess, iterations_per_loop=1):
        """Loads N-1, 0, 0, 1 into the variables; returns None."""
        check_positive_integer(iterations_per_loop, 'iterations_per_loop')
        standin.record('util.IterationPerLoop.load_iteration_per_loop_var',
                       iterations_per_loop=iterations_per_loop)
        _load(sess, self._loop_vars, iterations_per_loop)


def check_nonnegative_integer(value, name):
    """TypeError unless an int; ValueError if negative (the adapter's messages)."""
    if not isinstance(value, int):
        raise TypeError('{} must be int, got {}'.format(name, type(value)))
    if value < 0:
        raise ValueError('{} must be nonnegative, got {}'.format(name, value))
