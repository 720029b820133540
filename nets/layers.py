"""The few layers L_Resnet_E_IR is made of, in plain `tf.compat.v1` ops.

Each layer creates its variables with `tf.get_variable` under the caller's
variable scope, using the variable names of InsightFace_TF's TensorLayer 1.7.4
layers (`W_conv2d`, `beta`/`gamma`/`moving_mean`/`moving_variance`, `alphas`,
`W`/`b`), so checkpoints written by the original load unchanged.

Defaults that the original spread over many call sites live here once:
`LayerDefaults` (batch-norm decay and epsilon, gamma initialiser) and
`xavier_normal`.

Variables that receive weight decay (conv kernels, the dense weight, BN gammas,
PReLU alphas) are added to the `WEIGHT_DECAY` collection when created, so the
trainer never has to match name substrings, and an inference graph built with
`reuse=True` adds nothing twice.
"""
import collections
import math

import tensorflow.compat.v1 as tf

WEIGHT_DECAY = 'weight_decay_variables'

LayerDefaults = collections.namedtuple('LayerDefaults', [
    'bn_decay',      # moving-average momentum of batch norm (TensorLayer: decay)
    'bn_epsilon',    # variance epsilon of batch norm
    'gamma_stddev',  # gamma ~ N(1, gamma_stddev), TensorLayer's BatchNormLayer default
])
DEFAULTS = LayerDefaults(bn_decay=0.9, bn_epsilon=2e-5, gamma_stddev=0.002)


def xavier_normal(fan_in, fan_out):
    """Xavier normal as tf.contrib.layers.xavier_initializer(uniform=False).

    That initialiser draws from a truncated normal with
    std = sqrt(1.3 * 2 / (fan_in + fan_out)); TF 2's variance-scaling
    initialiser uses a different correction factor, so it is spelled out here.
    """
    return tf.truncated_normal_initializer(stddev=math.sqrt(1.3 * 2.0 / (fan_in + fan_out)))


def _decayed_variable(name, shape, initializer, trainable=True):
    var = tf.get_variable(name, shape, tf.float32, initializer=initializer, trainable=trainable)
    if trainable and not tf.get_variable_scope().reuse:
        tf.add_to_collection(WEIGHT_DECAY, var)
    return var


def conv2d(inputs, filters, kernel_size, stride, scope, padding='SAME'):
    """Convolution without bias; stride 2 with kernel 3 pads explicitly.

    Stride-2 3x3 convolutions zero-pad one pixel on every side and then run
    VALID, as the original's `conv2d_same`; with 'SAME' TensorFlow would pad
    only bottom/right for even inputs and shift the sampling grid.

    Args:
      inputs: float [N, H, W, C_in].
      filters: number of output channels.
      kernel_size: int, square kernel.
      stride: int.
      scope: variable scope name (holds `W_conv2d`).
      padding: 'SAME' or 'VALID' for the unpadded case.
    Returns:
      float [N, H', W', filters].
    """
    in_channels = inputs.get_shape().as_list()[-1]
    with tf.variable_scope(scope):
        fan_in = kernel_size * kernel_size * in_channels
        fan_out = kernel_size * kernel_size * filters
        kernel = _decayed_variable('W_conv2d', [kernel_size, kernel_size, in_channels, filters],
                                   xavier_normal(fan_in, fan_out))
    if stride > 1 and kernel_size > 1:
        pad = (kernel_size - 1) // 2
        inputs = tf.pad(inputs, [[0, 0], [pad, pad], [pad, pad], [0, 0]])
        padding = 'VALID'
    return tf.nn.conv2d(inputs, tf.cast(kernel, inputs.dtype), [1, stride, stride, 1], padding)


def batch_norm_variables(channels, gamma_trainable=True):
    """beta, gamma, moving_mean, moving_variance of one BN, in the current scope.

    The original's names and initial values; gamma is weight-decayed when trainable.
    """
    beta = tf.get_variable('beta', [channels], tf.float32, tf.zeros_initializer())
    gamma = _decayed_variable('gamma', [channels],
                              tf.random_normal_initializer(1.0, DEFAULTS.gamma_stddev),
                              trainable=gamma_trainable)
    moving_mean = tf.get_variable('moving_mean', [channels], tf.float32,
                                  tf.zeros_initializer(), trainable=False)
    moving_variance = tf.get_variable('moving_variance', [channels], tf.float32,
                                      tf.ones_initializer(), trainable=False)
    return beta, gamma, moving_mean, moving_variance


def batch_norm(inputs, is_training, scope, gamma_trainable=True):
    """Batch normalisation over all axes but the last.

    Training mode normalises with the batch statistics and adds the
    moving-average updates to `tf.GraphKeys.UPDATE_OPS`; inference mode uses
    the moving statistics. 4-D inputs use the fused kernel (the same
    computation, one op instead of many).

    Args:
      inputs: float [N, H, W, C] or [N, C].
      is_training: Python bool.
      scope: variable scope holding beta, gamma, moving_mean, moving_variance.
      gamma_trainable: False freezes gamma (the embedding BN of the original).
    Returns:
      Tensor like `inputs`.
    """
    with tf.variable_scope(scope):
        beta, gamma, moving_mean, moving_variance = batch_norm_variables(
            inputs.get_shape().as_list()[-1], gamma_trainable)
    x = inputs
    if x.dtype != tf.float32:
        x = tf.cast(x, tf.float32)
    if x.get_shape().ndims == 4:
        if is_training:
            y, mean, variance = tf.nn.fused_batch_norm(x, gamma, beta, epsilon=DEFAULTS.bn_epsilon,
                                                       is_training=True)
        else:
            y, _, _ = tf.nn.fused_batch_norm(x, gamma, beta, moving_mean, moving_variance,
                                             epsilon=DEFAULTS.bn_epsilon, is_training=False)
    else:
        if is_training:
            mean, variance = tf.nn.moments(x, axes=list(range(x.get_shape().ndims - 1)))
        else:
            mean, variance = moving_mean, moving_variance
        y = tf.nn.batch_normalization(x, mean, variance, beta, gamma, DEFAULTS.bn_epsilon)
    if is_training:
        decay = 1.0 - DEFAULTS.bn_decay
        tf.add_to_collection(tf.GraphKeys.UPDATE_OPS, tf.assign_sub(
            moving_mean, (moving_mean - tf.stop_gradient(mean)) * decay))
        tf.add_to_collection(tf.GraphKeys.UPDATE_OPS, tf.assign_sub(
            moving_variance, (moving_variance - tf.stop_gradient(variance)) * decay))
    return tf.cast(y, inputs.dtype)


def prelu(inputs, scope):
    """Parametric ReLU with one alpha per channel, alpha initialised to 0."""
    channels = inputs.get_shape().as_list()[-1]
    with tf.variable_scope(scope):
        alphas = _decayed_variable('alphas', [channels], tf.zeros_initializer())
    alphas = tf.cast(alphas, inputs.dtype)
    return tf.nn.relu(inputs) + alphas * (inputs - tf.abs(inputs)) * 0.5


def dense(inputs, units, scope):
    """Fully connected layer with bias (`W` decayed, `b` zero-initialised)."""
    in_units = inputs.get_shape().as_list()[-1]
    with tf.variable_scope(scope):
        weights = _decayed_variable('W', [in_units, units], xavier_normal(in_units, units))
        bias = tf.get_variable('b', [units], tf.float32, tf.zeros_initializer())
    return tf.matmul(inputs, tf.cast(weights, inputs.dtype)) + tf.cast(bias, inputs.dtype)


def subsample(inputs, stride):
    """Identity for stride 1, else every stride-th pixel (a 1x1 max-pool)."""
    if stride == 1:
        return inputs
    return inputs[:, ::stride, ::stride, :]
