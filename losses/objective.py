"""The training objective: the margin head's loss on the backbone's embedding, plus weight decay.

`training_losses` builds the original training script's losses on
nets.L_Resnet_E_IR and losses.face_losses; `training_embedding` and
`partial_fc_losses` build the same objective in two halves for a head sharded
over devices (losses.partial_fc), which sees every device's embeddings. They
read no flags.
"""
import collections
import contextlib

import tensorflow.compat.v1 as tf

from losses import face_losses, partial_fc
from nets import layers
from nets.L_Resnet_E_IR import BATCH, DEFAULT_KEEP_PROB, STANDARD, get_resnet

TrainingLosses = collections.namedtuple('TrainingLosses', [
    'total',      # inference + weight decay: what the optimizer minimises
    'inference',  # mean softmax cross-entropy on the margin logits
    'weight_decay',
    'accuracy',   # top-1 on the plain cosines (no margin), what a reader expects
])


def weight_decay_loss(weight_decay, variables=None, name='weight_decay_loss'):
    """weight_decay * sum(||v||^2 / 2) over `variables` (default: the WEIGHT_DECAY collection).

    That collection holds every conv kernel, the embedding dense weight, the
    margin head's class centres, BN gammas and PReLU alphas (the original
    listed them by name and forgot the dense weight except at depth 50).
    The 1/2 matches the original's tf.contrib.layers.l2_regularizer.
    """
    if variables is None:
        variables = tf.get_collection(layers.WEIGHT_DECAY)
    return tf.multiply(weight_decay, tf.add_n([tf.nn.l2_loss(v) for v in variables]),
                       name=name)


def training_losses(images, labels, net_depth, num_classes, loss_type='arcface',
                    margin_args=None, weight_decay=5e-4, keep_prob=DEFAULT_KEEP_PROB,
                    dropout_fn=None, float32_scope=face_losses.tensors_as_given,
                    variant=STANDARD, norm=BATCH, seed=None):
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
      seed: --seed, or None: with a seed the initial class centres depend only on
        it and the class, as a sharded head's (partial_fc.centre_initial_value).
    Returns:
      TrainingLosses of scalar float32 tensors.
    """
    embedding = training_embedding(images, net_depth, keep_prob, dropout_fn, variant, norm)
    logits, cos_t = face_losses.margin_logits(
        loss_type, embedding, labels, num_classes, float32_scope,
        w_init=partial_fc.centre_initializer(num_classes, seeded=seed is not None),
        **(margin_args or {}))
    with float32_scope(logits) as (logits,):  # exp of logits up to s=64 overflows float16
        inference = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
            labels=labels, logits=logits), name='inference_loss')
    decay = weight_decay_loss(weight_decay)
    predictions = tf.argmax(cos_t, axis=1, output_type=labels.dtype)
    accuracy = tf.reduce_mean(tf.cast(tf.equal(predictions, labels), tf.float32),
                              name='train_accuracy')
    return TrainingLosses(tf.add(inference, decay, name='total_loss'), inference, decay, accuracy)


def training_embedding(images, net_depth, keep_prob=DEFAULT_KEEP_PROB, dropout_fn=None,
                       variant=STANDARD, norm=BATCH):
    """The backbone's training-mode embedding of a batch (the first half of the objective)."""
    embedding, _ = get_resnet(images, net_depth, is_training=True, keep_prob=keep_prob,
                              dropout_fn=dropout_fn, variant=variant, norm=norm)
    return embedding


def partial_fc_losses(embeddings, labels, num_classes, loss_type='arcface', margin_args=None,
                      weight_decay=5e-4, sample_rate=1.0, seed=None, block_devices=(None,),
                      first_block=0, num_blocks=None, reduce=partial_fc.ONE_PROCESS,
                      float32_scope=face_losses.tensors_as_given):
    """The objective's second half with the class centres in blocks (Partial FC).

    Args:
      embeddings, labels: float [B, D] and int [B] of the whole gathered batch.
      num_classes, loss_type, margin_args, weight_decay: as training_losses.
      sample_rate: partial_fc.block_statistics's.
      seed: --seed, or None: with a seed the initial centres depend only on it and
        the class (partial_fc.centre_initial_value) and the sampling repeats.
      block_devices: the device of each block this graph holds (a tower's), in order.
      first_block, num_blocks: the index of this graph's first block, and the
        number of blocks in all processes (default: this graph's).
      reduce: partial_fc.Reductions across processes.
      float32_scope: as training_losses.
    Returns:
      TrainingLosses, the same in every process; the weight decay covers every block
      (each process's share summed); differentiating `total` in each process gives that
      process's blocks and backbone their gradients.
    """
    num_blocks = num_blocks or len(block_devices)
    statistics = []
    for index, device in enumerate(block_devices):
        start, size = partial_fc.class_block(num_classes, first_block + index, num_blocks)
        with tf.device(device) if device else contextlib.nullcontext():
            centres = partial_fc.block_centres(loss_type, num_classes, start, size,
                                               embeddings.get_shape().as_list()[-1],
                                               seeded=seed is not None)
            statistics.append(partial_fc.block_statistics(
                embeddings, labels, centres, start, loss_type, margin_args, sample_rate,
                float32_scope, seed=None if seed is None else first_block + index + 1))
    inference, accuracy = partial_fc.combine(statistics, reduce, float32_scope)
    head_name = face_losses.centres_name(loss_type)
    decayed = tf.get_collection(layers.WEIGHT_DECAY)
    in_head = [v.op.name.startswith(head_name) for v in decayed]
    backbone_decay = weight_decay_loss(
        weight_decay, [v for v, head in zip(decayed, in_head) if not head], 'backbone_decay')
    blocks_decay = weight_decay_loss(
        weight_decay, [v for v, head in zip(decayed, in_head) if head], 'blocks_decay')
    # The backbone's decay and every block's, as an unsharded run logs it. Summed over
    # the processes by a reduction whose gradient reaches this process's blocks only
    # (devices.head_exchange), so `total` is both what each process minimises and the
    # same logged value everywhere.
    logged = tf.add(backbone_decay, reduce.sum(blocks_decay[None])[0], name='weight_decay_loss')
    total = tf.add(inference, logged, name='total_loss')
    return TrainingLosses(total, inference, logged, accuracy)
