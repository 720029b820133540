"""L_Resnet_E_IR: the ArcFace backbone of InsightFace_TF, in its two widths.

"L" = a 3x3 stride-1 stem (input 112x112 keeps full resolution), "IR" = the
improved residual unit BN-conv-BN-PReLU-conv-BN, "E" = the embedding head
BN-dropout-flatten-FC-BN. Deng et al., "ArcFace: Additive Angular Margin Loss
for Deep Face Recognition", CVPR 2019.

The original ships the network twice: `L_Resnet_E_IR_fix_issue9.py`, which
its train_nets.py trains (every unit `BLOCK_CHANNELS` wide; 'standard' here),
and `L_Resnet_E_IR.py`, which its eval_ckpt_file.py builds and its released
models B and C were trained with (each unit's second convolution and the
shortcut 4x wider, depths named 50/101/152; 'wide' here). Training builds
'standard' unless told otherwise; evaluation and export read the width from
the checkpoint.
Depths and widths are data (`VARIANTS`), built by one generic function.

The normalisation is data too (`NORMS`): 'batch' (both files above),
'group' (the original's L_Resnet_E_IR_GBN.py, its released model A) and
'batch_renorm' (L_Resnet_E_IR_RBN.py), which its README suggests below a batch
of about 128. Those two files are the wide network; any norm builds in either
width here.

Variable names match the original's checkpoints exactly
(`resnet_v1_<depth>/block<b>/unit_<u>/bottleneck_v1/...`), see
`test/test_nets.py`, ../shared/reference/ and test/reference/.

Typical use:
    embedding, end_points = get_resnet(images, 50, is_training=True)
    eval_embedding, _ = get_resnet(eval_images, 50, is_training=False, reuse=True)
"""
import collections

import tensorflow.compat.v1 as tf

from nets import layers

# Units in each of the four blocks; every block starts with a stride-2 unit.
UNITS_PER_BLOCK = {
    18: (2, 2, 2, 2),
    34: (3, 4, 6, 3),
    50: (3, 4, 14, 3),
    100: (3, 13, 30, 3),
    152: (3, 8, 36, 3),
}
BLOCK_CHANNELS = (64, 128, 256, 512)

Variant = collections.namedtuple('Variant', [
    'units_per_block',  # {depth: units in each of the four blocks}
    'expansion',        # a unit's output channels / its first convolution's channels
])
STANDARD = 'standard'
WIDE = 'wide'
VARIANTS = {
    STANDARD: Variant(UNITS_PER_BLOCK, 1),
    WIDE: Variant({50: (3, 4, 14, 3), 101: (3, 13, 30, 3), 152: (3, 8, 36, 3)}, 4),
}
# Where each normalisation puts its layers, by the names the original's files give them.
NormLayout = collections.namedtuple('NormLayout', [
    'stem',             # after the stem convolution
    'conv2',            # after a unit's second convolution
    'last_map',         # on the last feature map, before dropout (the output block)
    'embedding',        # on the embedding after the dense layer; None: none
    'embedding_gamma_trainable',
    'shortcut_sees_first_norm',  # identity shortcuts add the unit's first norm's output
])
BATCH = 'batch'
GROUP = 'group'
BATCH_RENORM = 'batch_renorm'
NORMS = {
    BATCH: NormLayout('bn0', 'conv2_bn/BatchNorm', 'E_BN1', 'E_BN2', False, False),
    # L_Resnet_E_IR_GBN.py: no norm after the dense layer (its E_GN_1 is commented out).
    GROUP: NormLayout('group_norm_0', 'conv2_bn/GroupNorm', 'E_GN_0', None, True, False),
    # L_Resnet_E_IR_RBN.py normalises a unit's input by assigning to the input layer's
    # `outputs`; where the shortcut is that same layer (stride 1, same width) it then
    # carries the normalised input. Kept: it is the arithmetic its checkpoints learnt.
    BATCH_RENORM: NormLayout('bn0', 'conv2_bn/BatchNorm', 'E_BN1', 'E_BN2', True, True),
}
# The width the original's file for each normalisation has.
ORIGINAL_WIDTH = {BATCH: STANDARD, GROUP: WIDE, BATCH_RENORM: WIDE}
STEM_CHANNELS = 64
EMBEDDING_SIZE = 512
DEFAULT_KEEP_PROB = 0.4  # the original's dropout keep probability


def scope_name(net_depth):
    """The outer variable scope of a depth, e.g. 'resnet_v1_50'."""
    return 'resnet_v1_%d' % net_depth


def all_depths():
    """Every depth of every variant, sorted (the choices of --net_depth when evaluating)."""
    return sorted(set(d for variant in VARIANTS.values() for d in variant.units_per_block))


def width_for(norm, net_width=None):
    """`net_width` if given, else the width of the original's file for `norm`."""
    return net_width or ORIGINAL_WIDTH[norm]


def check_norm(norm):
    """Raises ValueError unless `norm` is a key of NORMS."""
    if norm not in NORMS:
        raise ValueError('unsupported norm %r; expected one of %s' % (norm, ', '.join(NORMS)))


def check_depth(net_depth, variant=STANDARD):
    """Raises ValueError unless `net_depth` is a depth of `variant`."""
    depths = VARIANTS[variant].units_per_block
    if net_depth not in depths:
        raise ValueError('unsupported net_depth %r; expected one of %s%s'
                         % (net_depth, sorted(depths),
                            '' if variant == STANDARD else ' (%s variant)' % variant))


def final_channels(variant=STANDARD):
    """Channels of the last feature map (the embedding layer's input depth)."""
    return BLOCK_CHANNELS[-1] * VARIANTS[variant].expansion


def ir_unit(inputs, depth, stride, is_training, scope, bottleneck_depth=None, norm=BATCH):
    """One improved-residual unit (no activation after the addition).

    Args:
      inputs: float [N, H, W, C_in].
      depth: output channels.
      bottleneck_depth: channels of the first convolution; None: `depth`.
      stride: 1, or 2 on the first unit of a block.
      is_training: Python bool (batch statistics vs moving statistics).
      scope: e.g. 'unit_1'; variables live under '<scope>/bottleneck_v1'.
      norm: a key of NORMS.
    Returns:
      float [N, H/stride, W/stride, depth].
    """
    normalize = layers.NORMALIZERS[norm]
    depth_in = inputs.get_shape().as_list()[-1]
    with tf.variable_scope(scope), tf.variable_scope('bottleneck_v1'):
        if depth == depth_in:
            shortcut = layers.subsample(inputs, stride)
        else:
            shortcut = layers.conv2d(inputs, depth, 1, stride, 'shortcut_conv')
            shortcut = normalize(shortcut, is_training, 'shortcut_bn/BatchNorm')
        normalized_input = normalize(inputs, is_training, 'conv1_bn1')
        if depth == depth_in and stride == 1 and NORMS[norm].shortcut_sees_first_norm:
            shortcut = normalized_input
        residual = layers.conv2d(normalized_input, bottleneck_depth or depth, 3, 1, 'conv1')
        residual = normalize(residual, is_training, 'conv1_bn2')
        residual = layers.prelu(residual, 'prelu_layer')
        residual = layers.conv2d(residual, depth, 3, stride, 'conv2')
        residual = normalize(residual, is_training, NORMS[norm].conv2)
        return shortcut + residual


def embedding_head(net, is_training, keep_prob, embedding_size, dropout_fn, norm=BATCH):
    """Output layer "E": norm -> dropout -> flatten -> dense [-> norm].

    Batch norm freezes the last norm's gamma, as the original; batch renorm
    trains it; group norm has none (NORMS).
    """
    layout = NORMS[norm]
    normalize = layers.NORMALIZERS[norm]
    net = normalize(net, is_training, layout.last_map)
    if is_training and keep_prob < 1.0:
        net = (dropout_fn or default_dropout)(net, keep_prob)
    net = tf.reshape(net, [-1, net.get_shape()[1:].num_elements()])
    net = layers.dense(net, embedding_size, 'E_DenseLayer')
    if layout.embedding is None:
        return net
    return normalize(net, is_training, layout.embedding,
                     gamma_trainable=layout.embedding_gamma_trainable)


def default_dropout(inputs, keep_prob):
    """tf.nn.dropout by keep probability (rate = 1 - keep_prob)."""
    return tf.nn.dropout(inputs, rate=1.0 - keep_prob)


def get_resnet(images, net_depth, is_training, keep_prob=DEFAULT_KEEP_PROB,
               embedding_size=EMBEDDING_SIZE, reuse=None, dropout_fn=None,
               variant=STANDARD, norm=BATCH):
    """Builds the backbone and returns the embedding.

    Args:
      images: float [N, H, W, 3], normalised to about [-1, 1] (see
        data.image_ops.normalize). 112x112 gives the original's 7x7x512
        feature map before the dense layer.
      net_depth: a depth of `variant` (standard: 18, 34, 50, 100, 152;
        wide: 50, 101, 152).
      is_training: Python bool. Training uses batch statistics, updates the
        moving averages (tf.GraphKeys.UPDATE_OPS) and applies dropout.
      keep_prob: dropout keep probability in (0, 1].
      embedding_size: width of the embedding (512 in the original).
      reuse: True to share the variables of an earlier call (e.g. an
        inference graph beside the training graph).
      dropout_fn: fn(inputs, keep_prob) -> Tensor, or None for default_dropout; the NPU
        swaps in npu_ops.dropout.
      variant: STANDARD or WIDE (see the module docstring).
      norm: a key of NORMS: BATCH, GROUP or BATCH_RENORM.
    Returns:
      (embedding float [N, embedding_size], end_points dict name -> Tensor).
    Raises:
      ValueError: unknown depth or norm, or keep_prob out of range.
    """
    check_depth(net_depth, variant)
    check_norm(norm)
    normalize = layers.NORMALIZERS[norm]
    units_per_block = VARIANTS[variant].units_per_block[net_depth]
    expansion = VARIANTS[variant].expansion
    if not 0.0 < keep_prob <= 1.0:
        raise ValueError('keep_prob %r: expected a probability in (0, 1]' % (keep_prob,))
    end_points = {}
    with tf.variable_scope(scope_name(net_depth), reuse=reuse):
        net = layers.conv2d(images, STEM_CHANNELS, 3, 1, 'conv1')
        net = normalize(net, is_training, NORMS[norm].stem)
        net = layers.prelu(net, 'prelu0')
        end_points['stem'] = net
        for block_index, (num_units, channels) in enumerate(zip(units_per_block,
                                                                BLOCK_CHANNELS)):
            block = 'block%d' % (block_index + 1)
            with tf.variable_scope(block):
                for unit_index in range(num_units):
                    stride = 2 if unit_index == 0 else 1
                    net = ir_unit(net, channels * expansion, stride, is_training,
                                  'unit_%d' % (unit_index + 1), bottleneck_depth=channels,
                                  norm=norm)
            end_points[block] = net
        embedding = embedding_head(net, is_training, keep_prob, embedding_size, dropout_fn,
                                   norm)
        end_points['embedding'] = embedding
    return embedding, end_points
