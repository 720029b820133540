"""STAND-IN: records calls, does not run on an NPU.

The two managers behave like Huawei's (which follow tf.contrib.mixed_precision):
variables named loss_scale / good_steps / bad_steps, the scale raised after
incr_every_n_steps finite steps and lowered after decr_every_n_nan_or_inf
overflows.
"""
import tensorflow.compat.v1 as tf

from npu_bridge import standin


def _record(api, **details):
    # Huawei's managers create variables: they must not sit inside a
    # control-dependency block. Graph._control_dependencies_stack is private
    # TensorFlow API, acceptable in a test stand-in.
    outside = not tf.get_default_graph()._control_dependencies_stack
    standin.record(api, outside_control_dependencies=outside, **details)


class LossScaleManager(object):
    def get_loss_scale(self):
        raise NotImplementedError('STAND-IN: abstract')

    def update_loss_scale(self, finite_grads):
        raise NotImplementedError('STAND-IN: abstract')


class FixedLossScaleManager(LossScaleManager):
    def __init__(self, loss_scale, enable_overflow_check=True):
        _record('FixedLossScaleManager', loss_scale=loss_scale,
                enable_overflow_check=enable_overflow_check)
        self._loss_scale = float(loss_scale)

    def get_loss_scale(self):
        return tf.constant(self._loss_scale, tf.float32)

    def update_loss_scale(self, finite_grads):
        return tf.no_op()


class ExponentialUpdateLossScaleManager(LossScaleManager):
    def __init__(self, init_loss_scale, incr_every_n_steps, decr_every_n_nan_or_inf=2,
                 incr_ratio=2, decr_ratio=0.8):
        _record('ExponentialUpdateLossScaleManager', init_loss_scale=init_loss_scale,
                incr_every_n_steps=incr_every_n_steps,
                decr_every_n_nan_or_inf=decr_every_n_nan_or_inf, incr_ratio=incr_ratio,
                decr_ratio=decr_ratio)
        self._incr_every_n_steps = incr_every_n_steps
        self._decr_every_n_nan_or_inf = decr_every_n_nan_or_inf
        self._incr_ratio = float(incr_ratio)
        self._decr_ratio = float(decr_ratio)
        self._loss_scale = tf.Variable(float(init_loss_scale), name='loss_scale',
                                       dtype=tf.float32, trainable=False)
        self._num_good_steps = tf.Variable(0, name='good_steps', dtype=tf.int32, trainable=False)
        self._num_bad_steps = tf.Variable(0, name='bad_steps', dtype=tf.int32, trainable=False)

    def get_loss_scale(self):
        return self._loss_scale

    def _reset_stats(self):
        return tf.group(tf.assign(self._num_good_steps, 0), tf.assign(self._num_bad_steps, 0))

    def update_loss_scale(self, finite_grads):
        def incr():
            raised = self._loss_scale * self._incr_ratio
            new = tf.cond(tf.math.is_finite(raised), lambda: raised, lambda: self._loss_scale)
            return tf.group(tf.assign(self._loss_scale, new), self._reset_stats())

        def if_finite():
            return tf.cond(self._num_good_steps + 1 >= self._incr_every_n_steps, incr,
                           lambda: tf.assign_add(self._num_good_steps, 1).op)

        def decr():
            lowered = tf.maximum(1.0, self._loss_scale * self._decr_ratio)
            return tf.group(tf.assign(self._loss_scale, lowered), self._reset_stats())

        def if_not_finite():
            return tf.cond(self._num_bad_steps + 1 >= self._decr_every_n_nan_or_inf, decr,
                           lambda: tf.group(tf.assign_add(self._num_bad_steps, 1),
                                            tf.assign(self._num_good_steps, 0)))

        return tf.cond(finite_grads, if_finite, if_not_finite)
