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
    'gn_groups',     # group norm: at most this many groups (fewer channels: one per group)
    'gn_epsilon',    # group norm's variance epsilon
    'renorm_momentum',  # batch renorm: momentum of the moving and the renorm statistics
    'renorm_epsilon',   # batch renorm's epsilon (tf.layers.batch_normalization's default)
    'renorm_clipping',  # batch renorm: bounds of the corrections r and d
])
# Group norm and batch renorm as the original's L_Resnet_E_IR_GBN.py (its
# tl_layers_modify.GroupNormLayer) and L_Resnet_E_IR_RBN.py (tf.layers.batch_normalization
# with renorm=True) build them; rmin is the original's 0.3333, not 1/3.
DEFAULTS = LayerDefaults(bn_decay=0.9, bn_epsilon=2e-5, gamma_stddev=0.002,
                         gn_groups=32, gn_epsilon=1e-5,
                         renorm_momentum=0.9, renorm_epsilon=1e-3,
                         renorm_clipping={'rmax': 3.0, 'rmin': 0.3333, 'dmax': 5.0})


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


def group_norm(inputs, is_training, scope, gamma_trainable=True):
    """Group normalisation (Wu and He, 2018) of a [N, H, W, C] map, as the original's.

    min(32, C) groups of consecutive channels, each normalised over its channels
    and the whole map with its own mean and (biased) variance, epsilon 1e-5, then
    a per-channel `scale` (initialised to 1) and `offset` (0), stored [1, C, 1, 1]
    as the original's NCHW layout stores them. The same in training and
    inference (no statistics are kept), so `is_training` is unused; neither
    variable is weight-decayed (the original decays only names with W_conv2d,
    W, gamma, alphas).
    """
    del is_training, gamma_trainable
    channels = inputs.get_shape().as_list()[-1]
    groups = min(DEFAULTS.gn_groups, channels)
    with tf.variable_scope(scope):
        scale = tf.get_variable('scale', [1, channels, 1, 1], tf.float32, tf.ones_initializer())
        offset = tf.get_variable('offset', [1, channels, 1, 1], tf.float32,
                                 tf.zeros_initializer())
    x = tf.cast(inputs, tf.float32)
    height, width = x.get_shape().as_list()[1:3]
    grouped = tf.reshape(x, [-1, height, width, groups, channels // groups])
    mean, variance = tf.nn.moments(grouped, [1, 2, 4], keep_dims=True)
    grouped = (grouped - mean) / tf.sqrt(variance + DEFAULTS.gn_epsilon)
    y = (tf.reshape(grouped, [-1, height, width, channels]) * tf.reshape(scale, [channels])
         + tf.reshape(offset, [channels]))
    return tf.cast(y, inputs.dtype)


def batch_renorm(inputs, is_training, scope, gamma_trainable=True):
    """Batch renormalisation (Ioffe, 2017) as tf.layers.batch_normalization(renorm=True).

    The original's arguments (momentum and renorm momentum 0.9, clipping rmax 3,
    rmin 0.3333, dmax 5, epsilon 1e-3, gamma initialised to 1) and TensorFlow
    1.15's arithmetic: in training the batch statistics are corrected by
    r = clip(sigma_B / sigma_renorm) and d = clip((mu_B - mu_renorm) / sigma_renorm),
    taken before this step's update of the renorm statistics, with no gradient
    through them; the moving standard deviation is tracked and the moving
    variance derived from it. Variables: gamma, beta, moving_mean,
    moving_variance, and in training moving_stddev, renorm_mean, renorm_stddev,
    the names of TensorFlow 1.15; inference reads only the first four, so
    checkpoints of older TensorFlow versions (other renorm variables) evaluate.
    """
    channels = inputs.get_shape().as_list()[-1]
    epsilon = DEFAULTS.renorm_epsilon
    with tf.variable_scope(scope):
        gamma = _decayed_variable('gamma', [channels], tf.ones_initializer(),
                                  trainable=gamma_trainable)
        beta = tf.get_variable('beta', [channels], tf.float32, tf.zeros_initializer())
        moving_mean = tf.get_variable('moving_mean', [channels], tf.float32,
                                      tf.zeros_initializer(), trainable=False)
        moving_variance = tf.get_variable('moving_variance', [channels], tf.float32,
                                          tf.ones_initializer(), trainable=False)
        if is_training:
            statistics = [tf.get_variable(name, [channels], tf.float32, initializer,
                                          trainable=False)
                          for name, initializer in (('moving_stddev', tf.ones_initializer()),
                                                    ('renorm_mean', tf.zeros_initializer()),
                                                    ('renorm_stddev', tf.ones_initializer()))]
    x = tf.cast(inputs, tf.float32)
    axes = list(range(x.get_shape().ndims - 1))
    if not is_training:
        y = tf.nn.batch_normalization(x, moving_mean, moving_variance, beta, gamma, epsilon)
        return tf.cast(y, inputs.dtype)
    moving_stddev, renorm_mean, renorm_stddev = statistics
    mean, variance = tf.nn.moments(x, axes)
    stddev = tf.sqrt(variance + epsilon)
    floor_stddev = tf.maximum(renorm_stddev, math.sqrt(epsilon))
    clipping = DEFAULTS.renorm_clipping
    r = tf.stop_gradient(tf.clip_by_value(stddev / floor_stddev, clipping['rmin'],
                                          clipping['rmax']))
    d = tf.stop_gradient(tf.clip_by_value((mean - renorm_mean) / floor_stddev,
                                          -clipping['dmax'], clipping['dmax']))
    y = tf.nn.batch_normalization(x, mean, variance, d * gamma + beta, r * gamma, epsilon)
    decay = 1.0 - DEFAULTS.renorm_momentum
    # The corrections of this step read the renorm statistics before they move.
    with tf.control_dependencies([r, d]):
        renorm_updates = [
            tf.assign_sub(renorm_mean, (renorm_mean - tf.stop_gradient(mean)) * decay),
            tf.assign_sub(renorm_stddev, (renorm_stddev - tf.stop_gradient(stddev)) * decay)]
    with tf.control_dependencies(renorm_updates):
        new_stddev = tf.assign_sub(moving_stddev,
                                   (moving_stddev - tf.stop_gradient(stddev)) * decay)
        updates = [tf.assign_sub(moving_mean, (moving_mean - tf.stop_gradient(mean)) * decay),
                   tf.assign(moving_variance, tf.nn.relu(new_stddev * new_stddev - epsilon))]
    for update in updates:
        tf.add_to_collection(tf.GraphKeys.UPDATE_OPS, update)
    return tf.cast(y, inputs.dtype)


NORMALIZERS = {'batch': batch_norm, 'group': group_norm, 'batch_renorm': batch_renorm}


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
