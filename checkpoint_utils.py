"""Checkpoint resolution and backbone checks shared by eval_ckpt_file.py and export_model.py.

A checkpoint written by trainer.py holds the backbone (`resnet_v1_<depth>/...`)
plus the margin head (`arcface_loss/embedding_weights`), the Momentum slots and
`global_step`; a checkpoint of the original InsightFace_TF has the same
backbone names. Evaluation and export restore ONLY the backbone variables of
an inference graph (face_model.inference_graph), so both kinds load.

Everything a user can get wrong is checked from the checkpoint's variable list
(`tf.train.list_variables`, no tensor data read) before any heavy work, and
reported as a `CheckpointError` with a one-line message naming the checkpoint
and what was expected: a missing path, another depth, missing backbone
variables, or shapes that do not match (a different --image_size changes
`E_DenseLayer/W`).

Typical use:
    prefix = resolve_checkpoint('output/ckpt')            # folder -> latest
    check_depth_by_names(prefix, list_checkpoint(prefix), net_depth=50)
    images, embedding = face_model.inference_graph(50, (112, 112), 32)
    variables = backbone_variables(50)
    check_shapes(prefix, list_checkpoint(prefix), variables, 50)
    restore(sess, tf.train.Saver(var_list=variables), prefix)
"""
import glob
import os
import re

import tensorflow.compat.v1 as tf

from nets.L_Resnet_E_IR import BLOCK_CHANNELS, UNITS_PER_BLOCK, scope_name

_SCOPE = re.compile(r'^resnet_v1_(\d+)/')
_UNIT = re.compile(r'^resnet_v1_\d+/block(\d+)/unit_(\d+)/')
_DENSE_WEIGHT = 'E_DenseLayer/W'
# Suffixes a user may paste instead of the prefix (TF's V2 checkpoint format).
_FILE_SUFFIXES = ('.index', '.meta')
_DATA_SUFFIX = re.compile(r'\.data-\d{5}-of-\d{5}$')


class CheckpointError(ValueError):
    """A checkpoint that is missing or does not fit the requested network; one line."""


class RestoreError(RuntimeError):
    """Reading a checkpoint's tensors failed (e.g. a truncated data file); one line."""


def op_error_text(error):
    """The informative line of a tf.errors.OpError's message.

    TensorFlow 2 puts 'Graph execution error:' and the Python stack of the
    node first; TensorFlow 1.15 starts with the reason. Either way the reason
    is the first line that is not such a preamble.
    """
    message = getattr(error, 'message', None) or str(error)
    for line in message.splitlines():
        text = line.strip()
        if (text and text != 'Graph execution error:' and not text.startswith(
                ('Detected at node', 'File "', 'Node:', '[['))):
            return text
    return type(error).__name__


def _strip_file_suffix(path):
    """'x.ckpt.index' or 'x.ckpt.data-00000-of-00001' -> 'x.ckpt'; other paths unchanged."""
    for suffix in _FILE_SUFFIXES:
        if path.endswith(suffix):
            return path[:-len(suffix)]
    return _DATA_SUFFIX.sub('', path)


def _is_checkpoint(prefix):
    """True if `prefix` names a checkpoint (V2: prefix.index; V1: the file itself)."""
    return os.path.isfile(prefix + '.index') or (os.path.isfile(prefix)
                                                 and not prefix.endswith('.index'))


def resolve_checkpoint(path):
    """Turns a --ckpt_file value into a checkpoint prefix.

    Args:
      path: a checkpoint prefix ('out/ckpt/InsightFace_iter_1000.ckpt'), one of
        its files ('....ckpt.index'), or a folder: its latest checkpoint by the
        folder's `checkpoint` file (tf.train.latest_checkpoint), else the
        newest `*.index` file in it.
    Returns:
      str, the prefix to restore.
    Raises:
      CheckpointError: nothing found, naming what was tried.
    """
    if os.path.isdir(path):
        latest = tf.train.latest_checkpoint(path)
        if latest and _is_checkpoint(latest):
            return latest
        indexes = glob.glob(os.path.join(path, '*.index'))
        if indexes:
            newest = max(indexes, key=lambda name: (os.path.getmtime(name), name))
            return newest[:-len('.index')]
        raise CheckpointError('no checkpoint in folder %s: expected a "checkpoint" file '
                              'or *.index files' % path)
    prefix = _strip_file_suffix(path)
    if _is_checkpoint(prefix):
        return prefix
    raise CheckpointError('checkpoint %s not found: expected the files %s.index and %s.data-*'
                          % (path, prefix, prefix))


def list_checkpoint(prefix):
    """{variable name: shape list} of a checkpoint, without reading tensor data.

    Raises:
      CheckpointError: unreadable or corrupt index.
    """
    try:
        return dict((name, list(shape)) for name, shape in tf.train.list_variables(prefix))
    except (tf.errors.OpError, ValueError) as error:
        raise CheckpointError('cannot read checkpoint %s: %s' % (prefix, op_error_text(error)))


def checkpoint_step(prefix):
    """The training step in a checkpoint's name ('InsightFace_iter_2000.ckpt' -> 2000).

    The last run of digits in the file name; 0 if there is none.
    """
    numbers = re.findall(r'\d+', os.path.basename(prefix))
    return int(numbers[-1]) if numbers else 0


def units_per_block(names, depth):
    """Units found in each block of `resnet_v1_<depth>`, e.g. (2, 2, 2, 2)."""
    scope = scope_name(depth) + '/'
    units = {}
    for name in names:
        match = _UNIT.match(name)
        if match and name.startswith(scope):
            block, unit = int(match.group(1)), int(match.group(2))
            units[block] = max(units.get(block, 0), unit)
    return tuple(units.get(block, 0) for block in range(1, max(list(units) + [4]) + 1))


def check_depth_by_names(prefix, variables, net_depth):
    """Checks that the checkpoint holds the backbone of depth `net_depth`.

    Args:
      prefix: the checkpoint (for messages).
      variables: list_checkpoint(prefix).
      net_depth: the requested --net_depth.
    Raises:
      CheckpointError: no backbone, another depth, or other unit counts.
    """
    depths = sorted(set(int(m.group(1)) for m in map(_SCOPE.match, variables) if m))
    expected = scope_name(net_depth)
    if not depths:
        raise CheckpointError('checkpoint %s holds no L_Resnet_E_IR backbone (no resnet_v1_'
                              '<depth>/ variables); --net_depth %d expected %s/...'
                              % (prefix, net_depth, expected))
    if net_depth not in depths:
        found = ', '.join('depth-%d network (%s/...)' % (d, scope_name(d)) for d in depths)
        raise CheckpointError('checkpoint %s holds a %s; --net_depth %d expected %s'
                              % (prefix, found, net_depth, expected))
    found_units = units_per_block(variables, net_depth)
    if found_units != UNITS_PER_BLOCK[net_depth]:
        raise CheckpointError('checkpoint %s: %s has %s units per block; depth %d has %s'
                              % (prefix, expected, found_units, net_depth,
                                 UNITS_PER_BLOCK[net_depth]))


def backbone_variables(net_depth, graph=None):
    """The global variables of the backbone `resnet_v1_<net_depth>` in `graph`."""
    graph = graph or tf.get_default_graph()
    scope = scope_name(net_depth) + '/'
    return [v for v in graph.get_collection(tf.GraphKeys.GLOBAL_VARIABLES)
            if v.op.name.startswith(scope)]


def _dense_hint(shape):
    """Why E_DenseLayer/W differs: the final feature map, i.e. the image size."""
    cells = shape[0] // BLOCK_CHANNELS[-1] if len(shape) == 2 else 0
    side = int(round(cells ** 0.5))
    hint = ('; E_DenseLayer/W has (H/16)*(W/16)*%d rows, so the checkpoint was trained at '
            'another network input size (--image_size, or --net_input_size if it was set)'
            % BLOCK_CHANNELS[-1])
    if cells and side * side == cells:
        hint += (' (%d rows: a %dx%d final map, e.g. --image_size %d,%d or --net_input_size '
                 '%d,%d)' % ((shape[0], side, side) + (side * 16,) * 4))
    return hint


def check_shapes(prefix, variables, graph_variables, net_depth):
    """Checks that every backbone variable of the graph is in the checkpoint, same shape.

    Args:
      prefix: the checkpoint (for messages).
      variables: list_checkpoint(prefix).
      graph_variables: backbone_variables(net_depth) of the built graph.
      net_depth: the requested --net_depth.
    Raises:
      CheckpointError: naming the first missing or mis-shaped variable.
    """
    missing = [v.op.name for v in graph_variables if v.op.name not in variables]
    if missing:
        raise CheckpointError('checkpoint %s lacks %d of the %d variables of %s, e.g. %s'
                              % (prefix, len(missing), len(graph_variables),
                                 scope_name(net_depth), missing[0]))
    for var in graph_variables:
        name, expected = var.op.name, var.shape.as_list()
        if variables[name] != expected:
            hint = _dense_hint(variables[name]) if name.endswith(_DENSE_WEIGHT) else ''
            raise CheckpointError('checkpoint %s: %s has shape %s; the graph for --net_depth %d '
                                  'expects %s%s' % (prefix, name, variables[name], net_depth,
                                                    expected, hint))


def restore(sess, saver, prefix):
    """saver.restore(sess, prefix), failures as RestoreError naming the checkpoint."""
    try:
        saver.restore(sess, prefix)
    except tf.errors.OpError as error:
        raise RestoreError('cannot restore checkpoint %s: %s (%s); is it complete?'
                           % (prefix, op_error_text(error), type(error).__name__))


def check_checkpoint_names(path, net_depth):
    """resolve_checkpoint + list_checkpoint + check_depth_by_names.

    Returns:
      (prefix, variables) for check_shapes once the graph exists.
    Raises:
      CheckpointError.
    """
    prefix = resolve_checkpoint(path)
    variables = list_checkpoint(prefix)
    check_depth_by_names(prefix, variables, net_depth)
    return prefix, variables
