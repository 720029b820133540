"""STAND-IN: records calls, does not run on an NPU. npu_ops.dropout is tf.nn.dropout here."""
import tensorflow.compat.v1 as tf

from npu_bridge import standin


def dropout(x, keep_prob, noise_shape=None, seed=None, name=None):
    standin.record('npu_ops.dropout', input=x.name, keep_prob=keep_prob)
    return tf.nn.dropout(x, rate=1.0 - keep_prob, noise_shape=noise_shape, seed=seed, name=name)
