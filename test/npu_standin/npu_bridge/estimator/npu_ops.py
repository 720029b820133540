"""STAND-IN of npu_bridge.estimator.npu_ops: dropout with the real checks.

The real op pair DropOutGenMask + DropOutDoMask computes what
tf.nn.dropout(keep_prob) computes; its type attribute T (float16 or float32)
is shared by x and keep_prob, so other dtypes fail when the graph is built.
"""
import numbers
import os

import numpy as np
import tensorflow.compat.v1 as tf

from npu_bridge import standin

_DROPOUT_DTYPES = (tf.float16, tf.float32)


def dropout(x, keep_prob, noise_shape=None, seed=None, name=None):
    """Keeps each element with probability keep_prob and scales it by 1/keep_prob.

    Raises:
      RuntimeError: eager execution.
      ValueError: x not floating, or a Python real keep_prob outside (0, 1].
      TypeError: x or a keep_prob tensor outside {float16, float32}, or the two differ.
    """
    if tf.executing_eagerly():
        raise RuntimeError('npu_ops.dropout() is not compatible with eager execution.')
    x = tf.convert_to_tensor(x, name='x')
    if not x.dtype.is_floating:
        raise ValueError('x must be a floating point tensor. Got a %s tensor instead.' % x.dtype)
    if isinstance(keep_prob, numbers.Real) and not 0 < keep_prob <= 1.0:
        raise ValueError('keep_prob must be a float value or a scalar tensor in the range '
                         '(0, 1], got %g' % keep_prob)
    standin.record('npu_ops.dropout', input=x.name,
                   keep_prob=keep_prob if isinstance(keep_prob, numbers.Real) else
                   getattr(keep_prob, 'name', str(keep_prob)))
    if isinstance(keep_prob, float) and keep_prob == 1.0:
        return x
    dtype = x.dtype.base_dtype
    if dtype not in _DROPOUT_DTYPES:
        raise TypeError("Value passed to parameter 'x' of DropOutDoMask has DataType %s not in "
                        "list of allowed values: float16, float32" % dtype.name)
    if isinstance(keep_prob, numbers.Real):
        keep = tf.constant(keep_prob, dtype)
    else:
        keep = tf.convert_to_tensor(keep_prob)
        if keep.dtype.base_dtype != dtype:
            raise TypeError("Input 'keep_prob' of 'DropOutDoMask' Op has type %s that does not "
                            "match type %s of argument 'x'." % (keep.dtype.base_dtype.name,
                                                                dtype.name))
    with tf.name_scope(name, 'dropout', [x]):
        shape = tf.shape(x) if noise_shape is None else noise_shape
        uniform = tf.random_uniform(shape, seed=seed, dtype=dtype)
        kept = tf.cast(uniform < keep, dtype)
        return _simulated_fault(x * kept / keep)


class _NanAtRun(object):
    """NPU_STANDIN_NAN_AT='<rank>:<run>': on that rank, the run-th execution of the
    dropout yields NaN (a numerical fault of one device, for the ranks' stop test)."""

    def __init__(self, run):
        self.run, self.count = run, 0

    def __call__(self):
        self.count += 1
        return np.float32(np.nan if self.count == self.run else 1.0)


def _simulated_fault(output):
    spec = os.environ.get('NPU_STANDIN_NAN_AT', '')
    if not spec:
        return output
    rank, run = (int(part) for part in spec.split(':'))
    if rank != int(os.environ.get('RANK_ID', '0')):
        return output
    factor = tf.reshape(tf.py_func(_NanAtRun(run), [], tf.float32), [])
    return output * tf.cast(factor, output.dtype)
