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

from nets import network_record
from nets.L_Resnet_E_IR import (BATCH, BATCH_RENORM, GROUP, NORMS, VARIANTS, final_channels,
                                scope_name)

SCOPE_PATTERN = re.compile(r'^resnet_v1_(\d+)/')
_UNIT = re.compile(r'^resnet_v1_\d+/block(\d+)/unit_(\d+)/')
DENSE_WEIGHT = 'E_DenseLayer/W'
# How a checkpoint's names tell its normalisation: a variable of the stem's norm.
_NORM_MARKS = ((GROUP, NORMS[GROUP].stem + '/scale'),
               (BATCH_RENORM, NORMS[BATCH_RENORM].stem + '/renorm_mean'))

Network = collections.namedtuple('Network', [
    'depth', 'variant', 'norm',
    'input_size',  # (height, width) the network was trained at, from its record; None: unknown
])
Network.__new__.__defaults__ = (BATCH, None)
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


def _norm_by_names(variables, depth):
    """The normalisation whose stem variable the checkpoint holds (batch norm if none)."""
    for norm, mark in _NORM_MARKS:
        if '%s/%s' % (scope_name(depth), mark) in variables:
            return norm
    return BATCH


def _variant_by_width(prefix, variables, depth, norm):
    """The variant whose last feature map is as wide as the norm on it in the checkpoint."""
    name = '%s/%s/%s' % (scope_name(depth), NORMS[norm].last_map,
                         'offset' if norm == GROUP else 'beta')
    shape = variables.get(name, [])
    channels = shape[1] if norm == GROUP and len(shape) == 4 else (shape or [None])[-1]
    for variant in sorted(VARIANTS):
        if len(shape) in (1, 4) and channels == final_channels(variant):
            return variant
    raise CheckpointError('checkpoint %s: %s has shape %s; expected %s channels (the %s '
                          'L_Resnet_E_IR variants)'
                          % (prefix, name, shape,
                             ' or '.join(str(final_channels(n)) for n in sorted(VARIANTS)),
                             ' and '.join(sorted(VARIANTS))))


def detect_network(prefix, variables, net_depth=None, norm=None):
    """The depth and width of the backbone a checkpoint holds.

    Args:
      prefix: the checkpoint (for messages).
      variables: list_checkpoint(prefix).
      net_depth: the requested --net_depth, checked against the checkpoint;
        None: the depth the checkpoint holds.
      norm: the requested --norm, checked likewise; None: the checkpoint's.
    Returns:
      Network(depth, variant, norm), variant a key of nets.L_Resnet_E_IR.VARIANTS
      ('standard': what train_nets.py trains by default; 'wide': the original's
      L_Resnet_E_IR.py and its group- and renorm files, e.g. its released models
      A, B and C), norm a key of NORMS; input_size None (see check_checkpoint_names).
    Raises:
      CheckpointError: no backbone, another depth or norm, several depths without
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
    found_norm = _norm_by_names(variables, depth)
    if norm is not None and norm != found_norm:
        raise CheckpointError('--norm %s: checkpoint %s holds a %s-norm network (%s/%s/...); '
                              'drop --norm or pass --norm %s'
                              % (norm, prefix, found_norm, scope_name(depth),
                                 NORMS[found_norm].stem, found_norm))
    variant = _variant_by_width(prefix, variables, depth, found_norm)
    expected = VARIANTS[variant].units_per_block.get(depth)
    found_units = units_per_block(variables, depth)
    if found_units != expected:
        raise CheckpointError('checkpoint %s: %s has %s units per block; the %s variant has %s'
                              % (prefix, scope_name(depth), found_units, variant,
                                 'no depth %d' % depth if expected is None else
                                 '%s at depth %d' % (expected, depth)))
    return Network(depth, variant, found_norm)


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
        # Each of the four stride-2 stages maps n to ceil(n / 2): every size from
        # 16 * (side - 1) + 1 to 16 * side ends in this map, so the names cannot
        # tell 56 from 64.
        low, high = 16 * (side - 1) + 1, 16 * side
        hint += (' (%d rows: a %dx%d final map, which every --image_size or --net_input_size '
                 'from %d,%d to %d,%d gives; '
                 'the variables cannot tell which: pass the size it was trained at, which its '
                 'training log and run_config.json name)'
                 % (shape[0], side, side, low, low, high, high))
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


def check_checkpoint_names(path, net_depth=None, norm=None):
    """resolve_checkpoint + list_checkpoint + detect_network, and the folder's record.

    A checkpoint folder written by train_nets.py records its network
    (nets.network_record); the record must agree with the names, and gives
    the Network its input_size.

    Returns:
      (prefix, variables, Network) for check_shapes once the graph exists.
    Raises:
      CheckpointError.
    """
    prefix = resolve_checkpoint(path)
    variables = list_checkpoint(prefix)
    network = detect_network(prefix, variables, net_depth, norm)
    folder = os.path.dirname(prefix)
    try:
        record = network_record.read(folder)
    except network_record.RecordError as error:
        raise CheckpointError(str(error))
    if record is None:
        return prefix, variables, network
    recorded = (record['net_depth'], record['net_width'], record['norm'])
    if recorded != network[:3]:
        raise CheckpointError('checkpoint %s holds a depth-%d %s %s-norm network but %s beside '
                              'it records depth %d, %s, %s-norm: the record belongs to another '
                              'run; move the record or the checkpoint'
                              % ((prefix,) + tuple(network[:3])
                                 + (os.path.join(folder, network_record.RECORD_NAME),)
                                 + recorded))
    return prefix, variables, network._replace(input_size=tuple(record['input_size']))


def network_input_size(prefix, network, image_size, net_input_size):
    """The --net_input_size to build with: the trained size where the checkpoint records it.

    Args:
      prefix: the checkpoint (for messages).
      network: its Network (check_checkpoint_names).
      image_size: (height, width) of the images fed.
      net_input_size: the --net_input_size given, or None.
    Returns:
      (height, width) to shrink the images to, or None to run at image_size.
    Raises:
      CheckpointError: the flag contradicts the record, or the images are smaller
        than the trained size.
    """
    if network.input_size is None:
        return net_input_size
    trained = tuple(network.input_size)
    source = os.path.join(os.path.dirname(prefix), network_record.RECORD_NAME)
    if net_input_size is not None and tuple(net_input_size) != trained:
        raise CheckpointError('--net_input_size %d,%d: checkpoint %s was trained at %d,%d (%s); '
                              'drop the flag or pass --net_input_size %d,%d'
                              % (tuple(net_input_size) + (prefix,) + trained + (source,)
                                 + trained))
    if trained[0] > image_size[0] or trained[1] > image_size[1]:
        raise CheckpointError('--image_size %d,%d: checkpoint %s was trained at %d,%d (%s), '
                              'larger than the images; images are only shrunk'
                              % (tuple(image_size) + (prefix,) + trained + (source,)))
    return None if trained == tuple(image_size) else trained


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
