"""The networks eval_ijb.py can embed with: checkpoints, frozen graphs and ONNX models.

  * a checkpoint (prefix or folder): the inference graph (nets.inference) at the depth
    and width the checkpoint holds (nets.checkpoint_names), restoring its backbone only,
    as eval_ckpt_file.py does; several checkpoints of one network share one graph;
  * a frozen `.pb` of export_model.py: input `input_images` uint8 [N, 112, 112, 3] BGR,
    output `embeddings` (a static N is used as the batch);
  * an `.onnx` of export_model.py --onnx, run with onnxruntime (the TensorFlow 2.x
    environment has it; elsewhere it is refused in one line).

Each model is checked before anything is embedded (names, shapes, input and output
nodes) and fingerprinted: the SHA-256 of the checkpoint's .index file (which holds the
checksum of every tensor) or of the model file, so that a features cache knows what
made it.

Typical use:
    model = resolve('output/ckpt', net_depth=None)
    with Runners([model], batch_size=64, net_input_size=None, device='cpu') as runners:
        run_batch, batch_size = runners.open(model)
        embeddings = run_batch(crops)            # uint8 [batch_size, 112, 112, 3] BGR
"""
import collections
import os

import tensorflow.compat.v1 as tf

from data.cli import UsageError
from data.safe_files import file_sha256
from devices import runtime
from evaluation.ijb_align import CROP_SIZE
from nets import checkpoint_names, inference
from nets.checkpoint_names import CheckpointError

CHECKPOINT, FROZEN, ONNX = 'checkpoint', 'frozen graph', 'onnx'

Model = collections.namedtuple('Model', [
    'kind',       # CHECKPOINT, FROZEN or ONNX
    'path',       # checkpoint prefix or model file, as resolved
    'sha256',     # hex SHA-256 of the .index file (checkpoint) or of the model file
    'network',    # checkpoint_names.Network (checkpoints), else None
    'variables',  # {name: shape} of a checkpoint, else None
    'batch',      # the static batch of a model file's input, None if dynamic or a checkpoint
])


def onnxruntime_module():
    """onnxruntime, or None where it is not installed (the TensorFlow 1.15 environment)."""
    try:
        import onnxruntime  # pylint: disable=import-outside-toplevel
    except ImportError:
        return None
    return onnxruntime


def resolve(path, net_depth=None, norm=None):
    """A --ckpt_file value as a checked Model (no graph built).

    Raises:
      CheckpointError: missing, unreadable, or not a network of the expected form.
      UsageError: an .onnx model without onnxruntime.
    """
    if path.endswith('.pb') or path.endswith('.onnx'):
        if not os.path.isfile(path):
            raise CheckpointError('model file %s not found' % path)
        if path.endswith('.pb'):
            batch = _check_frozen_graph(path, load_frozen_graph(path))
            return Model(FROZEN, path, file_sha256(path), None, None, batch)
        batch = _check_onnx(path, onnx_session(path, 'cpu'))
        return Model(ONNX, path, file_sha256(path), None, None, batch)
    prefix, variables, network = checkpoint_names.check_checkpoint_names(path, net_depth, norm)
    index = prefix + '.index' if os.path.isfile(prefix + '.index') else prefix
    return Model(CHECKPOINT, prefix, file_sha256(index), network, variables, None)


def load_frozen_graph(path):
    """The GraphDef of a binary .pb file.

    Raises:
      CheckpointError: the file does not parse as a GraphDef.
    """
    graph_def = tf.GraphDef()
    try:
        with open(path, 'rb') as pb:
            graph_def.ParseFromString(pb.read())
    except Exception as error:  # protobuf's DecodeError, whose module differs by version
        raise CheckpointError('%s is not a frozen GraphDef (%s: %s)'
                              % (path, type(error).__name__, error))
    return graph_def


def _input_problem(path, shape, dtype):
    """None if [N, 112, 112, 3] uint8 (N anything), else the one-line complaint."""
    height, width = CROP_SIZE
    if (dtype in ('uint8', 'tensor(uint8)') and len(shape) == 4
            and list(shape[1:]) == [height, width, 3]):
        return None
    return ('%s: its input %s is %s [%s]; IJB crops are uint8 [N, %d, %d, 3] (export with '
            '--image_size %d,%d, and --net_input_size for a network trained on smaller '
            'images)' % (path, inference.INPUT_NODE, dtype,
                         ', '.join('?' if d is None else str(d) for d in shape),
                         height, width, height, width))


def _check_frozen_graph(path, graph_def):
    """The static batch of a frozen graph's input (None: dynamic).

    Raises:
      CheckpointError: no input_images placeholder of [N, 112, 112, 3] uint8, or no
        embeddings node.
    """
    nodes = {node.name: node for node in graph_def.node}
    missing = [name for name in (inference.INPUT_NODE, inference.OUTPUT_NODE)
               if name not in nodes]
    if missing:
        raise CheckpointError('frozen graph %s has no node %s; expected export_model.py\'s '
                              '%s -> %s' % (path, ' or '.join(missing), inference.INPUT_NODE,
                                            inference.OUTPUT_NODE))
    node = nodes[inference.INPUT_NODE]
    dims = [d.size for d in node.attr['shape'].shape.dim]
    shape = [None if d < 0 else d for d in dims]
    dtype = tf.as_dtype(node.attr['dtype'].type).name if node.attr['dtype'].type else '?'
    problem = _input_problem(path, shape, dtype)
    if problem or node.attr['shape'].shape.unknown_rank:
        raise CheckpointError(problem or '%s: its input has no known shape' % path)
    return shape[0]


def onnx_session(path, device):
    """An onnxruntime InferenceSession of `path` (CUDA with device 'gpu' where present).

    Raises:
      UsageError: no onnxruntime, or device 'npu'.
      CheckpointError: a file onnxruntime cannot load.
    """
    onnxruntime = onnxruntime_module()
    if onnxruntime is None:
        raise UsageError('%s: an .onnx model needs onnxruntime, which requirements.txt '
                         'installs with TensorFlow 2.x; this environment (TensorFlow %s) '
                         'has none: give the checkpoint or the frozen .pb' % (path, tf.__version__))
    if device == 'npu':
        raise UsageError('%s: onnxruntime does not run on the NPU; give the checkpoint or the '
                         'frozen .pb, or --device cpu' % path)
    providers = ['CPUExecutionProvider']
    if device == 'gpu' and 'CUDAExecutionProvider' in onnxruntime.get_available_providers():
        providers.insert(0, 'CUDAExecutionProvider')
    try:
        return onnxruntime.InferenceSession(path, providers=providers)
    except Exception as error:  # onnxruntime's own exception types
        raise CheckpointError('%s: onnxruntime cannot load it (%s)'
                              % (path, str(error).splitlines()[0] if str(error) else
                                 type(error).__name__))


def _check_onnx(path, session):
    """The static batch of an ONNX model's input (None: dynamic).

    Raises:
      CheckpointError: no input_images of [N, 112, 112, 3] uint8, or no embeddings output.
    """
    inputs = {node.name: node for node in session.get_inputs()}
    outputs = [node.name for node in session.get_outputs()]
    if inference.INPUT_NODE not in inputs or inference.OUTPUT_NODE not in outputs:
        raise CheckpointError('ONNX model %s has inputs %s and outputs %s; expected '
                              'export_model.py --onnx\'s %s -> %s'
                              % (path, sorted(inputs), outputs, inference.INPUT_NODE,
                                 inference.OUTPUT_NODE))
    node = inputs[inference.INPUT_NODE]
    shape = [d if isinstance(d, int) else None for d in node.shape]
    problem = _input_problem(path, shape, node.type)
    if problem:
        raise CheckpointError(problem)
    return shape[0]


class Runners(object):
    """Runs the models of one evaluation: one inference graph for all its checkpoints
    (they must hold one network, as in eval_ckpt_file.py; checked, with every
    checkpoint's shapes, when the block is entered), a graph or session per model file.

    A context manager: leaving it closes the sessions.
    """

    def __init__(self, models, batch_size, net_input_size, device):
        self._batch_size = batch_size
        self._net_input_size = net_input_size
        self._device = device
        self._checkpoints = [model for model in models if model.kind == CHECKPOINT]
        self._shared = None   # (session, images, embeddings, saver) of the checkpoints
        self._own = None      # the session of the model file being run

    def __enter__(self):
        if self._checkpoints:
            network = checkpoint_names.common_network(
                [(m.path, m.variables, m.network) for m in self._checkpoints])
            graph = tf.Graph()
            with graph.as_default():
                with runtime.inference_scope(self._device):
                    images, embeddings = inference.inference_graph(
                        network.depth, CROP_SIZE, self._batch_size,
                        net_input_size=self._net_input_size, variant=network.variant,
                        norm=network.norm)
                variables = checkpoint_names.backbone_variables(network.depth)
                for model in self._checkpoints:
                    checkpoint_names.check_shapes(model.path, model.variables, variables,
                                                  network)
                saver = tf.train.Saver(var_list=variables)
            session = tf.Session(graph=graph, config=runtime.inference_session_config(self._device))
            self._shared = (session, images, embeddings, saver)
        return self

    def open(self, model):
        """(run_batch, batch size) for `model`; closes the previous model file's session.

        run_batch: fn(uint8 [batch, 112, 112, 3] BGR) -> float32 [batch, D].
        Raises:
          RestoreError: a checkpoint's data cannot be read.
        """
        self._close_own()
        if model.kind == CHECKPOINT:
            session, images, embeddings, saver = self._shared
            checkpoint_names.restore(session, saver, model.path)
            return (lambda batch: session.run(embeddings, {images: batch})), self._batch_size
        batch_size = model.batch or self._batch_size
        if model.kind == FROZEN:
            graph = tf.Graph()
            with graph.as_default():
                tf.import_graph_def(load_frozen_graph(model.path), name='')
            session = tf.Session(graph=graph, config=runtime.inference_session_config(self._device))
            self._own = session
            feeds = inference.INPUT_NODE + ':0'
            fetch = inference.OUTPUT_NODE + ':0'
            return (lambda batch: session.run(fetch, {feeds: batch})), batch_size
        session = onnx_session(model.path, self._device)
        return (lambda batch: session.run([inference.OUTPUT_NODE],
                                          {inference.INPUT_NODE: batch})[0]), batch_size

    def _close_own(self):
        if self._own is not None:
            self._own.close()
            self._own = None

    def __exit__(self, *unused_error):
        self._close_own()
        if self._shared is not None:
            self._shared[0].close()
            self._shared = None
