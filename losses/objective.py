"""The training objective: the margin head's loss on the backbone's embedding, plus weight decay.

`training_losses` builds the original training script's losses on
nets.L_Resnet_E_IR and losses.face_losses; it reads no flags.
"""
import collections

import tensorflow.compat.v1 as tf

from losses import face_losses
from nets import layers
from nets.L_Resnet_E_IR import BATCH, DEFAULT_KEEP_PROB, STANDARD, get_resnet

TrainingLosses = collections.namedtuple('TrainingLosses', [
    'total',      # inference + weight decay: what the optimizer minimises
    'inference',  # mean softmax cross-entropy on the margin logits
    'weight_decay',
    'accuracy',   # top-1 on the plain cosines (no margin), what a reader expects
])


def weight_decay_loss(weight_decay):
    """weight_decay * sum(||v||^2 / 2) over the WEIGHT_DECAY collection.

    That collection holds every conv kernel, the embedding dense weight, the
    margin head's class centres, BN gammas and PReLU alphas (the original
    listed them by name and forgot the dense weight except at depth 50).
    The 1/2 matches the original's tf.contrib.layers.l2_regularizer.
    """
    variables = tf.get_collection(layers.WEIGHT_DECAY)
    return tf.multiply(weight_decay, tf.add_n([tf.nn.l2_loss(v) for v in variables]),
                       name='weight_decay_loss')


def training_losses(images, labels, net_depth, num_classes, loss_type='arcface',
                    margin_args=None, weight_decay=5e-4, keep_prob=DEFAULT_KEEP_PROB,
                    dropout_fn=None, float32_scope=face_losses.tensors_as_given,
                    variant=STANDARD, norm=BATCH):
    """The training graph's losses, from a batch of normalised images.

    Args:
      images: float [N, H, W, 3] normalised images.
      labels: int [N] class ids in [0, num_classes).
      net_depth: backbone depth.
      num_classes: classes of the margin head.
      loss_type: one of face_losses.LOSS_TYPES.
      margin_args: dict of the head's s/m (or s/m1/m2/m3); None for defaults.
      weight_decay: L2 factor.
      keep_prob: dropout keep probability of the embedding head.
      dropout_fn: see nets.L_Resnet_E_IR.get_resnet.
      float32_scope: fn(*tensors) -> a context, entered as the tensors to compute
        from, whose ops a mixed-precision device must keep in float32
        (devices.runtime.float32_scope): the embedding's and centres' L2
        normalisations, the margin and the softmax cross-entropy.
      variant, norm: the backbone's width and normalisation (nets.L_Resnet_E_IR).
    Returns:
      TrainingLosses of scalar float32 tensors.
    """
    embedding, _ = get_resnet(images, net_depth, is_training=True, keep_prob=keep_prob,
                              dropout_fn=dropout_fn, variant=variant, norm=norm)
    logits, cos_t = face_losses.margin_logits(loss_type, embedding, labels, num_classes,
                                              float32_scope, **(margin_args or {}))
    with float32_scope(logits) as (logits,):  # exp of logits up to s=64 overflows float16
        inference = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
            labels=labels, logits=logits), name='inference_loss')
    decay = weight_decay_loss(weight_decay)
    predictions = tf.argmax(cos_t, axis=1, output_type=labels.dtype)
    accuracy = tf.reduce_mean(tf.cast(tf.equal(predictions, labels), tf.float32),
                              name='train_accuracy')
    return TrainingLosses(tf.add(inference, decay, name='total_loss'), inference, decay, accuracy)
