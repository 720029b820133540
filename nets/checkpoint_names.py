"""What a checkpoint holds, read from its names: resolution of a path to a checkpoint, the
network it holds, and the checks of its backbone against a graph, for evaluation, export,
feature extraction and resume (training.checkpoint_utils).

A checkpoint written by train_nets.py holds the backbone (`resnet_v1_<depth>/...`)
plus the margin head (`arcface_loss/embedding_weights`), the Momentum slots and
`global_step`; a checkpoint of the original InsightFace_TF has the same
backbone names. Evaluation and export restore ONLY the backbone variables of
an inference graph (nets.inference.inference_graph), so both kinds load.

Everything a user can get wrong is checked from the checkpoint's variable list
(`tf.train.list_variables`, no tensor data read) before any heavy work, and
reported as a `CheckpointError` with a one-line message naming the checkpoint
and what was expected: a missing path, another depth, missing backbone
variables, or shapes that do not match (a different --image_size changes
`E_DenseLayer/W`). The depth and the width variant (the original's two
networks, see nets.L_Resnet_E_IR) are read from the checkpoint itself.

Typical use:
    prefix, names, network = check_checkpoint_names('output/ckpt')   # folder -> latest
    images, embedding = inference.inference_graph(network.depth, (112, 112), 32,
                                                  variant=network.variant)
    variables = backbone_variables(network.depth)
    check_shapes(prefix, names, variables, network)
    restore(sess, tf.train.Saver(var_list=variables), prefix)
"""
import collections
import glob
import os
import re

import tensorflow.compat.v1 as tf

from nets.L_Resnet_E_IR import VARIANTS, final_channels, scope_name

SCOPE_PATTERN = re.compile(r'^resnet_v1_(\d+)/')
_UNIT = re.compile(r'^resnet_v1_\d+/block(\d+)/unit_(\d+)/')
DENSE_WEIGHT = 'E_DenseLayer/W'
_LAST_MAP_BN = 'E_BN1/beta'  # as wide as the last feature map: tells the variant

Network = collections.namedtuple('Network', ['depth', 'variant'])
# Suffixes a user may paste instead of the prefix (TF's V2 checkpoint format).
_FILE_SUFFIXES = ('.index', '.meta')
_DATA_SUFFIX = re.compile(r'\.data-\d{5}-of-\d{5}$')


# Lines of a TensorFlow error message around its reason (op_error_text).
_NOT_THE_REASON = ('Graph execution error', 'Detected at node', 'File "', 'Node:', '[[',
                   'Original stack trace')


class CheckpointError(ValueError):
    """A checkpoint that is missing or does not fit the requested network; one line."""


class RestoreError(RuntimeError):
    """Reading a checkpoint's tensors failed (e.g. a truncated data file); one line."""


def op_error_text(error):
    """The informative line of an exception's message (a tf.errors.OpError's above all).

    TensorFlow 2 puts 'Graph execution error:' and the Python stack of the
    node first, and the node's context after; TensorFlow 1.15 starts with the
    reason. Either way the reason is the first line that is not such a
    preamble or context (nor indented); the exception's type name if none is.
    """
    message = getattr(error, 'message', None) or str(error)
    for line in message.splitlines():
        if line.strip() and not line[0].isspace() and not line.startswith(_NOT_THE_REASON):
            return line.strip()
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


def latest_in_folder(folder):
    """The latest checkpoint of `folder`, looked up inside that folder only; None if none.

    The `checkpoint` index may hold absolute paths (written so by this port's earlier
    releases and by the original), which name the files of wherever the folder was
    first written: a copied or archived folder would silently use the original's.
    The name is taken inside `folder` instead.
    """
    state = tf.train.get_checkpoint_state(folder)
    if state and state.model_checkpoint_path:
        local = os.path.join(folder, os.path.basename(state.model_checkpoint_path))
        if _is_checkpoint(local):
            return local
    return None


def resolve_checkpoint(path):
    """Turns a --ckpt_file value into a checkpoint prefix.

    Args:
      path: a checkpoint prefix ('out/ckpt/InsightFace_iter_1000.ckpt'), one of
        its files ('....ckpt.index'), or a folder: its latest checkpoint by the
        folder's `checkpoint` file, looked up inside the folder
        (latest_in_folder), else the newest `*.index` file in it.
    Returns:
      str, the prefix to restore.
    Raises:
      CheckpointError: nothing found, naming what was tried.
    """
    if os.path.isdir(path):
        latest = latest_in_folder(path)
        if latest:
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


def _variant_by_width(prefix, variables, depth):
    """The variant whose last feature map is as wide as the checkpoint's E_BN1."""
    shape = variables.get('%s/%s' % (scope_name(depth), _LAST_MAP_BN), [])
    for name in sorted(VARIANTS):
        if shape == [final_channels(name)]:
            return name
    raise CheckpointError('checkpoint %s: %s/%s has shape %s; expected [%s] (the %s '
                          'L_Resnet_E_IR variants)'
                          % (prefix, scope_name(depth), _LAST_MAP_BN, shape,
                             '] or ['.join(str(final_channels(n)) for n in sorted(VARIANTS)),
                             ' and '.join(sorted(VARIANTS))))


def detect_network(prefix, variables, net_depth=None):
    """The depth and width of the backbone a checkpoint holds.

    Args:
      prefix: the checkpoint (for messages).
      variables: list_checkpoint(prefix).
      net_depth: the requested --net_depth, checked against the checkpoint;
        None: the depth the checkpoint holds.
    Returns:
      Network(depth, variant), variant a key of nets.L_Resnet_E_IR.VARIANTS
      ('standard': what train_nets.py trains; 'wide': the original's
      L_Resnet_E_IR.py, e.g. its released models B and C).
    Raises:
      CheckpointError: no backbone, another depth, several depths without
        --net_depth, or unit counts that no variant has.
    """
    depths = sorted(set(int(m.group(1)) for m in map(SCOPE_PATTERN.match, variables) if m))
    if not depths:
        raise CheckpointError('checkpoint %s holds no L_Resnet_E_IR backbone (no resnet_v1_'
                              '<depth>/ variables)%s' % (prefix, '' if net_depth is None else
                                                         '; --net_depth %d expected %s/...'
                                                         % (net_depth, scope_name(net_depth))))
    found = ', '.join('depth-%d network (%s/...)' % (d, scope_name(d)) for d in depths)
    if net_depth is None:
        if len(depths) > 1:
            raise CheckpointError('checkpoint %s holds a %s; choose one with --net_depth'
                                  % (prefix, found))
        depth = depths[0]
    elif net_depth in depths:
        depth = net_depth
    else:
        raise CheckpointError('checkpoint %s holds a %s; --net_depth %d expected %s'
                              % (prefix, found, net_depth, scope_name(net_depth)))
    variant = _variant_by_width(prefix, variables, depth)
    expected = VARIANTS[variant].units_per_block.get(depth)
    found_units = units_per_block(variables, depth)
    if found_units != expected:
        raise CheckpointError('checkpoint %s: %s has %s units per block; the %s variant has %s'
                              % (prefix, scope_name(depth), found_units, variant,
                                 'no depth %d' % depth if expected is None else
                                 '%s at depth %d' % (expected, depth)))
    return Network(depth, variant)


def backbone_variables(net_depth, graph=None):
    """The global variables of the backbone `resnet_v1_<net_depth>` in `graph`."""
    graph = graph or tf.get_default_graph()
    scope = scope_name(net_depth) + '/'
    return [v for v in graph.get_collection(tf.GraphKeys.GLOBAL_VARIABLES)
            if v.op.name.startswith(scope)]


def dense_hint(shape, variant):
    """Why E_DenseLayer/W differs: the final feature map, i.e. the image size."""
    channels = final_channels(variant)
    cells = shape[0] // channels if len(shape) == 2 else 0
    side = int(round(cells ** 0.5))
    hint = ('; E_DenseLayer/W has (H/16)*(W/16)*%d rows, so the checkpoint was trained at '
            'another network input size (--image_size, or --net_input_size if it was set)'
            % channels)
    if cells and side * side == cells:
        hint += (' (%d rows: a %dx%d final map, e.g. --image_size %d,%d or --net_input_size '
                 '%d,%d)' % ((shape[0], side, side) + (side * 16,) * 4))
    return hint


def check_shapes(prefix, variables, graph_variables, network):
    """Checks that every backbone variable of the graph is in the checkpoint, same shape.

    Args:
      prefix: the checkpoint (for messages).
      variables: list_checkpoint(prefix).
      graph_variables: backbone_variables(network.depth) of the built graph.
      network: the Network the graph was built for (detect_network).
    Raises:
      CheckpointError: naming the first missing or mis-shaped variable.
    """
    missing = [v.op.name for v in graph_variables if v.op.name not in variables]
    if missing:
        raise CheckpointError('checkpoint %s lacks %d of the %d variables of %s, e.g. %s'
                              % (prefix, len(missing), len(graph_variables),
                                 scope_name(network.depth), missing[0]))
    for var in graph_variables:
        name, expected = var.op.name, var.shape.as_list()
        if variables[name] != expected:
            hint = (dense_hint(variables[name], network.variant)
                    if name.endswith(DENSE_WEIGHT) else '')
            raise CheckpointError('checkpoint %s: %s has shape %s; the graph for --net_depth %d '
                                  'expects %s%s' % (prefix, name, variables[name],
                                                    network.depth, expected, hint))


def restore(sess, saver, prefix):
    """saver.restore(sess, prefix), failures as RestoreError naming the checkpoint."""
    try:
        saver.restore(sess, prefix)
    except tf.errors.OpError as error:
        raise RestoreError('cannot restore checkpoint %s: %s (%s); is it complete?'
                           % (prefix, op_error_text(error), type(error).__name__))


def check_checkpoint_names(path, net_depth=None):
    """resolve_checkpoint + list_checkpoint + detect_network.

    Returns:
      (prefix, variables, Network) for check_shapes once the graph exists.
    Raises:
      CheckpointError.
    """
    prefix = resolve_checkpoint(path)
    variables = list_checkpoint(prefix)
    return prefix, variables, detect_network(prefix, variables, net_depth)


def common_network(checkpoints):
    """The one Network of several checked checkpoints [(prefix, variables, Network)].

    Raises:
      CheckpointError: two checkpoints hold different networks (one graph serves all).
    """
    first_prefix, _, network = checkpoints[0]
    for prefix, _, other in checkpoints[1:]:
        if other != network:
            raise CheckpointError('checkpoints %s (depth %d, %s) and %s (depth %d, %s) hold '
                                  'different networks; evaluate them in separate runs'
                                  % (first_prefix, network.depth, network.variant, prefix,
                                     other.depth, other.variant))
    return network
