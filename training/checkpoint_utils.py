"""The checks of a checkpoint to resume training from: check_training_resume before the
graph is built (the flags against the checkpoint's network and head), plan_training_restore
after it (every variable by name or alias, shapes and types), apply_training_restore in the
session. What a checkpoint holds is read with nets.checkpoint_names.
"""
import collections
import re

import tensorflow.compat.v1 as tf

from losses import face_losses, partial_fc
from nets.L_Resnet_E_IR import BATCH, STANDARD, scope_name
from nets.checkpoint_names import (DENSE_WEIGHT, SCOPE_PATTERN, CheckpointError,
                                   RestoreError, check_checkpoint_names, dense_hint,
                                   op_error_text, restore)

# Names that other writers gave a variable: (name in this port's graph, name in the
# checkpoint). Optimizer slots follow their variable ('<name>/Momentum').
NAME_ALIASES = (
    # The original's combine_loss_val: top level; this port's first releases: a scope.
    ('embedding_weights', 'combine_loss/embedding_weights'),
)
_INTEGER_DTYPES = (tf.int32, tf.int64)


def stored_names(name):
    """The checkpoint names under which graph variable `name` may be stored, own name first."""
    names = [name]
    for current, other in NAME_ALIASES:
        if name == current or name.startswith(current + '/'):
            names.append(other + name[len(current):])
    return names


def _is_model_state(name):
    """Variables a resume must find: the network, the head, their slots and the step.

    Anything else (e.g. the NPU's dynamic loss-scale state) starts afresh when a
    checkpoint lacks it, as on a new run.
    """
    # The heads' class centres under any scope, their aliases (NAME_ALIASES) included.
    return (SCOPE_PATTERN.match(name) is not None or name == 'global_step'
            or '/embedding_weights' in name or name.startswith('embedding_weights'))


TrainingRestore = collections.namedtuple('TrainingRestore', [
    'prefix',
    'saver',        # a tf.train.Saver of the variables stored under the same type
    'converted',    # [(variable, checkpoint name, checkpoint dtype name)]: integer types
    'initialised',  # [variable]: not model state and not in the checkpoint
    'aliased',      # [(graph name, checkpoint name)]
    'resharded',    # [(graph name, [checkpoint name])]: head blocks assembled from others
    'reshard_op',   # the op that assigns them (None when there are none)
])


_AFRESH = 'start afresh with another --ckpt_path'


def check_training_resume(prefix, net_depth, loss_type, num_classes, net_width=STANDARD,
                          norm=BATCH, input_size=None, head_blocks=1):
    """Checks, before any graph is built, that a training run can resume from `prefix`.

    The backbone (detect_network), the margin head and its number of classes
    are read from the checkpoint's variable list and compared with the flags.
    Without this, another --net_depth or --loss_type ends at the restore,
    after the graph is built, in TensorFlow's "Key ... not found".

    Args:
      prefix: the checkpoint to resume (latest_in_folder of --ckpt_path).
      net_depth, loss_type, num_classes, net_width, norm: what the run would build.
      input_size: (height, width) the network would run at, checked against the
        folder's network.json where there is one (the variables cannot tell 56 from 64).
      head_blocks: the blocks the run splits the class centres into (--partial_fc:
        one per device); 1: the whole head.
    Raises:
      CheckpointError: one line naming the flag, what the checkpoint holds
        and how to resume.
    """
    _, variables, network = check_checkpoint_names(prefix)
    resume = 'the checkpoint to resume, %s,' % prefix
    if (input_size is not None and network.input_size is not None
            and tuple(network.input_size) != tuple(input_size)):
        raise CheckpointError('--net_input_size %d,%d: %s was trained at %d,%d (its network.json)'
                              '; resume with --net_input_size %d,%d, or %s'
                              % (tuple(input_size) + (resume,) + tuple(network.input_size)
                                 + tuple(network.input_size) + (_AFRESH,)))
    if network.depth != net_depth:
        raise CheckpointError('--net_depth %d: %s holds a depth-%d network (%s/...); resume '
                              'with --net_depth %d, or %s'
                              % (net_depth, resume, network.depth, scope_name(network.depth),
                                 network.depth, _AFRESH))
    if network.norm != norm:
        raise CheckpointError('--norm %s: %s holds a %s-norm network; resume with --norm %s, '
                              'or %s' % (norm, resume, network.norm, network.norm, _AFRESH))
    if network.variant != net_width:
        raise CheckpointError('--net_width %s: %s holds the %s network; resume with '
                              '--net_width %s, or %s'
                              % (net_width, resume, network.variant, network.variant, _AFRESH))
    heads = [(other, partial_fc.stored_layout(variables,
                                              stored_names(face_losses.centres_name(other))))
             for other in face_losses.LOSS_TYPES]
    heads = [(other, blocks) for other, blocks in heads if blocks]
    mine = [blocks for other, blocks in heads if other == loss_type]
    if not mine:
        if heads:
            found, blocks = heads[0]
            name = partial_fc.block_name(found, sum(n for _, n in blocks), *blocks[0])
            raise CheckpointError('--loss_type %s: %s was trained with --loss_type %s (%s); '
                                  'resume with --loss_type %s, or %s'
                                  % (loss_type, resume, found, name, found, _AFRESH))
        raise CheckpointError('--loss_type %s: %s holds no margin head (%s); it holds a '
                              'network alone, e.g. for evaluation: %s'
                              % (loss_type, resume, face_losses.centres_name(loss_type),
                                 _AFRESH))
    blocks = mine[0]
    stored = sum(size for _, size in blocks)
    whole = [name for name in stored_names(face_losses.centres_name(loss_type))
             if name in variables]
    problem = partial_fc.layout_problem(blocks, whole_name=bool(whole))
    if problem:
        raise CheckpointError('--partial_fc: %s holds %s, which is no whole head (%s); this '
                              'run builds %s: %s'
                              % (resume, partial_fc.describe_layout(blocks, num_classes),
                                 problem, partial_fc.describe_layout(
                                     partial_fc.layout(num_classes, head_blocks)), _AFRESH))
    if stored != num_classes:
        held = ('%s is %s' % (whole[0], variables[whole[0]]) if whole
                else partial_fc.describe_layout(blocks))
        raise CheckpointError('--num_output %d: %s has %d classes (%s); resume with '
                              '--num_output %d (or, without it, data of %d identities), or %s'
                              % (num_classes, resume, stored, held, stored, stored, _AFRESH))


def plan_training_restore(prefix, graph_variables):
    """How to restore every variable of a training graph from `prefix`, by name or alias.

    Built before the session (it adds a Saver to the graph). Handles what a
    checkpoint of the original InsightFace_TF differs in: its int32
    `global_step` (read and converted to this graph's integer type) and the
    combine head's class centres (NAME_ALIASES).

    Args:
      prefix: a checkpoint prefix.
      graph_variables: the variables to restore (tf.global_variables()).
    Returns:
      TrainingRestore for apply_training_restore.
    Raises:
      CheckpointError: the checkpoint cannot be read, lacks a variable of the
        model, stores one with another shape (naming the flag that changes
        it), or with a type that cannot be converted.
    """
    try:
        reader = tf.train.load_checkpoint(prefix)
        dtypes = reader.get_variable_to_dtype_map()
        shapes = reader.get_variable_to_shape_map()
    except (tf.errors.OpError, ValueError) as error:
        raise CheckpointError('cannot read checkpoint %s: %s' % (prefix, op_error_text(error)))
    by_name, converted, initialised, aliased, missing = {}, [], [], [], []
    resharded, assigns = [], []
    for var in graph_variables:
        name = var.op.name
        found = [n for n in stored_names(name) if n in dtypes]
        if not found:
            pieces = _reshard_pieces(name, var.shape.as_list(), shapes)
            if pieces:
                resharded.append((name, [stored for stored, _ in pieces]))
                assigns.append(_assign_from_pieces(prefix, var, pieces, shapes, dtypes))
            else:
                (missing if _is_model_state(name) else initialised).append(var)
            continue
        stored = found[0]
        if stored != name:
            aliased.append((name, stored))
        # Compared here, before the restore, which would fail on the first mismatch
        # with a message that does not say which flag changed the shape.
        if list(shapes[stored]) != var.shape.as_list():
            raise CheckpointError('checkpoint %s: %s has shape %s; this graph has %s%s'
                                  % (prefix, stored, list(shapes[stored]), var.shape.as_list(),
                                     _shape_hint(name, shapes[stored])))
        stored_dtype, graph_dtype = dtypes[stored].base_dtype, var.dtype.base_dtype
        if stored_dtype == graph_dtype:
            by_name[stored] = var
        elif stored_dtype in _INTEGER_DTYPES and graph_dtype in _INTEGER_DTYPES:
            converted.append((var, stored, stored_dtype.name))
        else:
            raise CheckpointError('checkpoint %s stores %s as %s; this graph needs %s'
                                  % (prefix, stored, stored_dtype.name, graph_dtype.name))
    if missing:
        raise CheckpointError('checkpoint %s lacks %d variables of this graph, e.g. %s; was it '
                              'written with another --net_depth or --loss_type?'
                              % (prefix, len(missing), missing[0].op.name))
    return TrainingRestore(prefix, tf.train.Saver(var_list=by_name, allow_empty=True),
                           converted, initialised, aliased, resharded,
                           tf.group(*assigns) if assigns else None)


# A head's class centres (or an optimizer slot of them): the whole head's name,
# then '_<start>_<size>' for a block, then '/<slot>' for a slot.
_HEAD_PATTERNS = [(loss_type, re.compile('^' + re.escape(face_losses.centres_name(loss_type))
                                          + r'(?:_(\d+)_(\d+))?(/.+)?$'))
                  for loss_type in face_losses.LOSS_TYPES]


def _reshard_pieces(name, shape, shapes):
    """The stored columns a head block `name` (or its slot) of `shape` is made of, when the
    checkpoint holds the same head in other blocks: [(checkpoint name, (first, end column))].
    None when `name` is no head variable, or the checkpoint lacks a piece of it."""
    for loss_type, pattern in _HEAD_PATTERNS:
        match = pattern.match(name)
        if match:
            break
    else:
        return None
    whole = face_losses.centres_name(loss_type)
    start = int(match.group(1)) if match.group(1) else 0
    slot = match.group(3) or ''
    candidates = stored_names(whole)
    blocks = partial_fc.stored_layout(shapes, candidates)
    total = sum(size for _, size in blocks)
    whole_stored = [n for n in candidates if n in shapes]
    if (not blocks or partial_fc.layout_problem(blocks, total, bool(whole_stored))
            or start + shape[-1] > total):
        return None
    pieces = []
    for block, lo, hi in partial_fc.reshard_pieces(blocks, start, shape[-1]):
        # The whole head may be stored under an alias; a block by partial_fc's name.
        stored = (whole_stored[0] if block[1] == total
                  else partial_fc.block_name(loss_type, total, *block)) + slot
        if stored not in shapes or list(shapes[stored][:-1]) != shape[:-1]:
            return None
        pieces.append((stored, (lo, hi)))
    return pieces


def _assign_from_pieces(prefix, var, pieces, shapes, dtypes):
    """An op assigning `var` the columns `pieces` of checkpoint `prefix`, each read alone
    (RestoreV2 with a slice: no process reads more of the head than its block)."""
    parts = []
    with tf.device('/cpu:0'):
        for stored, (lo, hi) in pieces:
            shape = list(shapes[stored])
            # Slice spec: the full shape, then start,length per dimension ('-': all).
            spec = '%s %s:%d,%d' % (' '.join(str(d) for d in shape),
                                    ':'.join('-' for _ in shape[:-1]), lo, hi - lo)
            parts.append(tf.raw_ops.RestoreV2(prefix=prefix, tensor_names=[stored],
                                              shape_and_slices=[spec],
                                              dtypes=[dtypes[stored].base_dtype])[0])
        value = parts[0] if len(parts) == 1 else tf.concat(parts, axis=-1)
    return tf.assign(var, tf.cast(value, var.dtype.base_dtype), validate_shape=True)


def _shape_hint(name, stored_shape):
    """Which flag changes the shape of training variable `name` (or its optimizer slot)."""
    if DENSE_WEIGHT in name:
        return dense_hint(list(stored_shape), STANDARD)
    if 'embedding_weights' in name:
        return '; the class centres are as many as --num_output (default: the identities of ' \
               'the data)'
    return ''


def apply_training_restore(sess, plan):
    """Runs a TrainingRestore; returns [(variable name, checkpoint dtype name, value)]
    of the converted variables.

    Raises:
      RestoreError: the data could not be read.
    """
    restore(sess, plan.saver, plan.prefix)
    if plan.reshard_op is not None:
        try:
            sess.run(plan.reshard_op)
        except tf.errors.OpError as error:
            raise RestoreError('cannot re-shard the head from checkpoint %s: %s (%s); is it '
                               'complete?' % (plan.prefix, op_error_text(error),
                                              type(error).__name__))
    values = []
    if plan.converted:
        reader = tf.train.load_checkpoint(plan.prefix)
        for var, stored, dtype_name in plan.converted:
            value = reader.get_tensor(stored)
            var.load(value.astype(var.dtype.base_dtype.as_numpy_dtype), sess)
            values.append((var.op.name, dtype_name, int(value)))
    if plan.initialised:
        sess.run(tf.variables_initializer(plan.initialised))
    return values
