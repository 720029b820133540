"""Partial FC: the margin head's class centres sharded over devices, negatives sampled.

An, Zhu, Xiao, Deng et al., "Killing Two Birds with One Stone: Efficient and
Robust Training of Face Recognition CNNs by Partial FC" (CVPR 2022); insightface's
PyTorch implementation is recognition/arcface_torch/partial_fc_v2.py
(deepinsight/insightface 7fadd42). Device r of N holds the contiguous block of
classes `class_block(C, r, N)` (the same split as insightface's). Each step
every device sees the whole gathered batch, computes its cosines against its
own block only (with `sample_rate` < 1: every positive of the block and random
negatives, a fixed number of rows), and the softmax cross-entropy is assembled
from small per-sample statistics without ever gathering the logits:

    loss_i = M_i + log(sum_r S_{r,i}) - t_i
    M_i    = max over devices of each device's largest logit (a constant shift)
    S_{r,i}= sum over device r's classes of exp(logit - M_i)
    t_i    = the target's margin logit, from the device that owns the class

and training accuracy the same way: a sample is right when its target's plain
cosine is the largest of all (the arg-max over every block).

`block_statistics` is one device's part; `combine` puts the parts of the
blocks one graph holds together, reducing across processes with the
`Reductions` given. Both are graph code with static shapes (Ascend compiles a
graph once).
"""
import collections
import math
import re

import tensorflow.compat.v1 as tf

from losses import face_losses
from nets import layers

# Initial class centres are drawn in column chunks of this many classes, each
# chunk with its own op seed, so under --seed a class's initial centre depends
# only on the seed and its index, never on how the classes are split.
INIT_CHUNK = 8192


def class_block(num_classes, rank, world_size):
    """(first class, number of classes) of device `rank` of `world_size`.

    Contiguous blocks whose sizes differ by at most one, the larger first (as
    insightface's PartialFC_V2 splits them).
    """
    base, extra = divmod(num_classes, world_size)
    return base * rank + min(rank, extra), base + int(rank < extra)


def sample_size(sample_rate, block_size):
    """Rows of a block of `block_size` classes that take part in a step: ceil(R * size)."""
    return min(block_size, int(math.ceil(sample_rate * block_size - 1e-9)))


def sampling_problem(sample_rate, num_classes, world_size, global_batch):
    """Why --sample_rate cannot be used with this layout, as a sentence's end; or None.

    Every positive of a block must fit among its sampled rows; a step can have
    up to the global batch of distinct positives in one block.
    """
    if not 0.0 < sample_rate <= 1.0:
        return 'expected a rate in (0, 1]'
    if sample_rate == 1.0:
        return None
    smallest = class_block(num_classes, world_size - 1, world_size)[1]
    rows = sample_size(sample_rate, smallest)
    if rows < global_batch:
        return ('each step samples %d of the %d classes of the smallest block, fewer than the '
                'global batch of %d (a block may hold that many positives); use a rate of at '
                'least %.4g' % (rows, smallest, global_batch, global_batch / float(smallest)))
    return None


def centre_initial_value(num_classes, start, size, embedding_size=512, seeded=True):
    """The initial class centres of classes [start, start + size): float32 [D, size].

    The original's Xavier-normal distribution over the whole head (truncated
    normal, std sqrt(1.3 * 2 / (D + C)), the op the original's initialiser
    runs), drawn in chunks of INIT_CHUNK classes, chunk k with op seed k + 1.
    Under a graph-level seed (--seed) a class's column is therefore the same
    whatever block holds it: every layout starts from the same model. Unseeded
    (seeded False), each chunk is a fresh random draw.
    """
    stddev = math.sqrt(1.3 * 2.0 / (embedding_size + num_classes))
    first, last = start // INIT_CHUNK, (start + size - 1) // INIT_CHUNK
    pieces = []
    for chunk in range(first, last + 1):
        values = tf.truncated_normal([embedding_size, INIT_CHUNK], stddev=stddev,
                                     seed=chunk + 1 if seeded else None)
        lo = max(start - chunk * INIT_CHUNK, 0)
        hi = min(start + size - chunk * INIT_CHUNK, INIT_CHUNK)
        pieces.append(values[:, lo:hi])
    return pieces[0] if len(pieces) == 1 else tf.concat(pieces, axis=1)


def centre_initializer(num_classes, seeded=True):
    """A get_variable initializer of the whole head's [D, C] centres, as centre_initial_value."""
    def initializer(shape, dtype=tf.float32, partition_info=None):
        del dtype, partition_info
        return centre_initial_value(num_classes, 0, num_classes, shape[0], seeded)
    return initializer


def layout(num_classes, num_blocks):
    """[(first class, number of classes)] of every block of a head split num_blocks ways."""
    return [class_block(num_classes, rank, num_blocks) for rank in range(num_blocks)]


def block_name(loss_type, num_classes, start, size):
    """The variable name of a block: the unsharded head's when it holds every class."""
    whole = face_losses.centres_name(loss_type)
    return whole if size == num_classes else '%s_%d_%d' % (whole, start, size)


def is_block_variable(name, loss_type):
    """True for a block of a split head, or one of its optimizer slots ('<block>/Momentum'):
    the variables a process of a head sharded over processes holds alone."""
    whole = face_losses.centres_name(loss_type)
    return re.match(re.escape(whole) + r'_\d+_\d+(/|$)', name) is not None


def stored_layout(shapes, names_of_whole_head):
    """[(first class, number of classes)] of the head blocks among a checkpoint's variables.

    Args:
      shapes: {variable name: shape} of the checkpoint.
      names_of_whole_head: the names an unsharded head may be stored under (first the
        head's own, then its aliases); a block is that first name + '_<start>_<size>'.
    Returns:
      The blocks, in class order; [] when the checkpoint holds no head of this kind.
    """
    for name in names_of_whole_head:
        if name in shapes:
            return [(0, shapes[name][-1])]
    pattern = re.compile(re.escape(names_of_whole_head[0]) + r'_(\d+)_(\d+)$')
    found = (pattern.match(name) for name in shapes)
    return sorted((int(m.group(1)), int(m.group(2))) for m in found if m)


def layout_problem(blocks, num_classes=None, whole_name=False):
    """Why stored `blocks` are no whole head (of `num_classes`, if given), as a phrase; or None.

    A head in blocks is whole when its blocks, in class order, cover every class
    once: each starts where the previous one ended. A single block is whole only
    under the unsharded head's name (`whole_name`): one block named
    '_<start>_<size>' is what is left of a head written in several.
    """
    if len(blocks) == 1 and not whole_name:
        return 'one block of a head written in several: the others are missing'
    end = 0
    for start, size in blocks:
        if start != end:
            return ('its blocks leave classes %d-%d out or hold them twice'
                    % (min(start, end), max(start, end) - 1))
        end = start + size
    if num_classes is not None and end != num_classes:
        return 'its blocks hold %d classes, not %d' % (end, num_classes)
    return None


def reshard_pieces(stored_blocks, start, size):
    """Where the columns of the block [start, start + size) lie in other blocks.

    Args:
      stored_blocks: [(first class, number of classes)] of a whole head in class
        order (stored_layout of a checkpoint; layout_problem None).
      start, size: the block to assemble.
    Returns:
      [(stored block, first column, end column)] in class order: the block is the
      concatenation of each stored block's columns [first, end).
    """
    pieces = []
    for block in stored_blocks:
        lo, hi = max(start, block[0]), min(start + size, block[0] + block[1])
        if lo < hi:
            pieces.append((block, lo - block[0], hi - block[0]))
    return pieces


def describe_layout(blocks, num_classes=None):
    """'the whole head of 10 classes', or '2 blocks (0-4, 5-9) of 10 classes'; blocks of
    a head of `num_classes` (default: as many as they hold) that miss some, as
    '1 block (0-3) of 4 classes'."""
    total = sum(size for _, size in blocks)
    if blocks == [(0, total)] and num_classes in (None, total):
        return 'the whole head of %d classes' % total
    shown = ', '.join('%d-%d' % (start, start + size - 1) for start, size in blocks[:4])
    return '%d block%s (%s%s) of %d classes' % (len(blocks), 's' if len(blocks) > 1 else '',
                                                shown, ', ...' if len(blocks) > 4 else '', total)


def block_centres(loss_type, num_classes, start, size, embedding_size=512, seeded=True):
    """The variable holding one block's class centres, float32 [D, size], weight-decayed.

    Named as the unsharded head's (`face_losses.centres_name`) when the block holds
    every class, else `<that name>_<start>_<size>`: a checkpoint names each block by
    its classes.
    """
    scope = face_losses.HEADS[loss_type][0]
    name = block_name(loss_type, num_classes, start, size).split('/')[-1]
    with tf.variable_scope(scope or tf.get_variable_scope()):
        var = tf.get_variable(name, initializer=centre_initial_value(
            num_classes, start, size, embedding_size, seeded))
        if not tf.get_variable_scope().reuse:
            tf.add_to_collection(layers.WEIGHT_DECAY, var)
    return var


BlockStatistics = collections.namedtuple('BlockStatistics', [
    'max_logit',    # float32 [B]: the largest margin logit in the block (for the shift)
    'logits',       # float32 [B, k]: the block's margin logits (k rows taken part)
    'target_logit',  # float32 [B]: the target's margin logit, 0 where the block lacks it
    'target_cos',   # float32 [B]: the target's plain cosine, 0 where the block lacks it
    'max_cos',      # float32 [B]: the largest plain cosine in the block
    'rows',         # int32 [k]: the block's rows that took part, ascending
])


def block_statistics(embeddings, labels, centres, start, loss_type, margin_args=None,
                     sample_rate=1.0, float32_scope=face_losses.tensors_as_given, seed=None):
    """One device's part of the sharded margin softmax, for the whole gathered batch.

    Args:
      embeddings: float [B, D], every device's batch (all-gathered).
      labels: int [B] global class ids.
      centres: float32 [D, n] variable of the block's class centres.
      start: the block's first class.
      loss_type: one of face_losses.LOSS_TYPES.
      margin_args: the head's s/m (or s/m1/m2/m3); None: defaults.
      sample_rate: rows taking part: every positive in the block, then random
        negatives, sample_size(rate, n) in all (1: every row, no sampling).
      float32_scope: see face_losses.class_cosines.
      seed: op seed of the sampling.
    Returns:
      BlockStatistics.
    """
    size = centres.get_shape().as_list()[1]
    labels = tf.cast(labels, tf.int32)
    local = labels - start
    owned = tf.logical_and(local >= 0, local < size)
    local = tf.where(owned, local, tf.fill(tf.shape(local), -1))
    rows = tf.range(size, dtype=tf.int32)
    used = centres
    k = sample_size(sample_rate, size)
    if k < size:
        # How often each row is a target (a segment sum: a row no sample names gets 0).
        counts = tf.unsorted_segment_sum(tf.cast(owned, tf.float32),
                                         tf.where(owned, local, tf.zeros_like(local)), size)
        positive = tf.cast(counts > 0.0, tf.float32)
        # Positives score 2, negatives a uniform draw in [0, 1): top k keeps every
        # positive and random negatives; rows ascending, as insightface sorts them.
        scores = tf.random_uniform([size], seed=seed) + 2.0 * positive
        _, chosen = tf.nn.top_k(scores, k=k, sorted=False)
        rows = tf.sort(chosen)
        used = tf.gather(centres, rows, axis=1)
        local = tf.where(owned, tf.searchsorted(rows, local, out_type=tf.int32), local)
    _, logits_fn = face_losses.HEADS[loss_type]
    cos_t = face_losses.cosines(embeddings, used, float32_scope)
    with float32_scope(cos_t) as (cos_t,):
        logits = logits_fn(cos_t, local, **(margin_args or {}))
        mask = tf.one_hot(local, k, dtype=tf.float32)  # all zeros where not owned
        return BlockStatistics(
            max_logit=tf.reduce_max(logits, axis=1), logits=logits,
            target_logit=tf.reduce_sum(logits * mask, axis=1),
            target_cos=tf.reduce_sum(cos_t * mask, axis=1),
            max_cos=tf.reduce_max(cos_t, axis=1), rows=rows)


Reductions = collections.namedtuple('Reductions', [
    'max',  # fn(float32 [B] of this process) -> [B], the element-wise max over processes
    'sum',  # fn(float32 [B] of this process) -> [B], the element-wise sum over processes
])
# One process holds every block (a single device, or the towers of one graph).
ONE_PROCESS = Reductions(max=tf.identity, sum=tf.identity)


def combine(statistics, reduce=ONE_PROCESS, float32_scope=face_losses.tensors_as_given):
    """Mean cross-entropy and accuracy of the gathered batch from the blocks' statistics.

    Args:
      statistics: [BlockStatistics] of the blocks this process holds (one per
        tower; one on a single device or per worker), each for the same batch.
      reduce: Reductions across processes (HCCL ranks, TensorFlow workers);
        ONE_PROCESS when this graph holds every block.
    Returns:
      (loss, accuracy): float32 scalars, the same in every process.
    """
    def over_blocks(field, reduce_fn, op):
        parts = [getattr(part, field) for part in statistics]
        return reduce_fn(parts[0] if len(parts) == 1 else op(tf.stack(parts), axis=0))

    with float32_scope(*[part.logits for part in statistics]) as logits:
        # The shift only keeps exp finite; its gradient cancels exactly, so none flows.
        shift = tf.stop_gradient(over_blocks('max_logit', reduce.max, tf.reduce_max))
        sums = [tf.reduce_sum(tf.exp(part - shift[:, None]), axis=1) for part in logits]
        sum_exp = reduce.sum(tf.add_n(sums) if len(sums) > 1 else sums[0])
        target = over_blocks('target_logit', reduce.sum, tf.reduce_sum)
        loss = tf.reduce_mean(shift + tf.log(sum_exp) - target, name='inference_loss')
    best = over_blocks('max_cos', reduce.max, tf.reduce_max)
    target_cos = over_blocks('target_cos', reduce.sum, tf.reduce_sum)
    accuracy = tf.reduce_mean(tf.cast(target_cos >= best, tf.float32), name='train_accuracy')
    return loss, accuracy
