"""STAND-IN of npu_bridge.estimator.npu.npu_loss_scale_manager.

Like Huawei's (which follow tf.contrib.mixed_precision): FixedLossScaleManager
refuses a scale below 1; ExponentialUpdateLossScaleManager keeps non-trainable
global variables loss_scale (float32), good_steps and bad_steps (int32), raises
the scale by incr_ratio after incr_every_n_steps finite steps (unless it would
pass 3.4e38) and lowers it to max(1, scale * decr_ratio) after
decr_every_n_nan_or_inf overflows; both counters reset when the scale changes.
Before r1.5 FixedLossScaleManager has no enable_overflow_check argument.
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
    """The interface NPULossScaleOptimizer calls."""

    def get_loss_scale(self):
        raise NotImplementedError('STAND-IN: abstract')

    def update_loss_scale(self, finite_grads):
        raise NotImplementedError('STAND-IN: abstract')


class FixedLossScaleManager(LossScaleManager):
    """A constant loss scale; update_loss_scale is a no-op."""

    if standin.at_least_r1_5():
        def __init__(self, loss_scale, enable_overflow_check=True):
            self._setup(loss_scale, enable_overflow_check)
    else:
        def __init__(self, loss_scale):
            self._setup(loss_scale, True)

    def _setup(self, loss_scale, enable_overflow_check):
        if loss_scale < 1:
            raise ValueError('loss scale must be at least 1.')
        details = {'loss_scale': loss_scale}
        if standin.at_least_r1_5():
            details['enable_overflow_check'] = enable_overflow_check
        _record('FixedLossScaleManager', **details)
        self._loss_scale = tf.convert_to_tensor(loss_scale, dtype=tf.float32, name='loss_scale')
        self._enable_overflow_check = enable_overflow_check

    def get_enable_overflow_check(self):
        """False only when built with enable_overflow_check=False (r1.5+)."""
        return self._enable_overflow_check

    def get_loss_scale(self):
        return self._loss_scale

    def update_loss_scale(self, finite_grads):
        del finite_grads
        return tf.no_op()


class ExponentialUpdateLossScaleManager(LossScaleManager):
    """A loss scale that grows after good steps and shrinks after overflows."""

    def __init__(self, init_loss_scale, incr_every_n_steps, decr_every_n_nan_or_inf=2,
                 incr_ratio=2, decr_ratio=0.8):
        _record('ExponentialUpdateLossScaleManager', init_loss_scale=init_loss_scale,
                incr_every_n_steps=incr_every_n_steps,
                decr_every_n_nan_or_inf=decr_every_n_nan_or_inf, incr_ratio=incr_ratio,
                decr_ratio=decr_ratio)
        self._incr_every_n_steps = incr_every_n_steps
        self._decr_every_n_nan_or_inf = decr_every_n_nan_or_inf
        self._incr_ratio = incr_ratio
        self._decr_ratio = decr_ratio
        self._loss_scale = tf.Variable(tf.convert_to_tensor(init_loss_scale, tf.float32),
                                       name='loss_scale', dtype=tf.float32, trainable=False)
        self._num_good_steps = tf.Variable(0, name='good_steps', dtype=tf.int32, trainable=False)
        self._num_bad_steps = tf.Variable(0, name='bad_steps', dtype=tf.int32, trainable=False)

    def get_loss_scale(self):
        return self._loss_scale

    def _reset_stats(self):
        return tf.group(tf.assign(self._num_good_steps, 0), tf.assign(self._num_bad_steps, 0))

    def update_loss_scale(self, finite_grads):
        def increase():
            fits = tf.less(self._loss_scale, 3.4e38 / self._incr_ratio)
            new = tf.cond(fits, lambda: self._loss_scale * self._incr_ratio,
                          lambda: tf.identity(self._loss_scale))
            return tf.group(tf.assign(self._loss_scale, new), self._reset_stats())

        def if_finite():
            return tf.cond(self._num_good_steps + 1 >= self._incr_every_n_steps, increase,
                           lambda: tf.assign_add(self._num_good_steps, 1).op)

        def decrease():
            lowered = tf.maximum(1.0, self._loss_scale * self._decr_ratio)
            return tf.group(tf.assign(self._loss_scale, lowered), self._reset_stats())

        def if_not_finite():
            return tf.cond(self._num_bad_steps + 1 >= self._decr_every_n_nan_or_inf, decrease,
                           lambda: tf.group(tf.assign_add(self._num_bad_steps, 1),
                                            tf.assign(self._num_good_steps, 0)))

        return tf.cond(finite_grads, if_finite, if_not_finite)
