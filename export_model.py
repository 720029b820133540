"""Exports a checkpoint's inference network as a frozen GraphDef and/or a SavedModel.

Outputs, in --output_dir:

  frozen_model.pb   a frozen inference GraphDef (variables folded into
                    constants, tf.graph_util.convert_variables_to_constants):
                    the TensorFlow format Ascend's ATC tool converts into an
                    offline .om model.
  saved_model/      a SavedModel, tag "serve", signature "serving_default":
                    input `images`, output `embeddings` (and
                    `embeddings_normalized` with --normalized_output), for
                    TensorFlow Serving or tf.saved_model.loader.load.
  model.onnx        with --onnx: the frozen graph converted by tf2onnx (opset
                    ONNX_OPSET), same input and outputs (names without ':0'),
                    for onnxruntime, TensorRT and other ONNX runtimes. Needs
                    the TensorFlow 2.x environment (requirements.txt).

The network (both formats):

  input node  `input_images`: uint8 [N, H, W, 3] RAW pixels in BGR order
              (OpenCV's order, as the .bin sets decode), 0..255. The graph
              itself normalises them, (x - 127.5) / 128: do NOT normalise
              before feeding. N is --batch_size, or dynamic (None) by default.
  output node `embeddings`: float32 [N, 512], NOT L2-normalised (the
              verification protocol sums the embeddings of an image and of its
              mirror, then normalises; cosine similarity needs normalised
              vectors). With --normalized_output the graph also has
              `embeddings_normalized` = embeddings / ||embeddings||.

Only the backbone `resnet_v1_<depth>/...` is restored, so a checkpoint of
train_nets.py (with ArcFace weights, Momentum slots, global_step) and one of
the original InsightFace_TF both export. Batch norm runs with its moving
statistics and there is no dropout.

Converting the frozen graph for the Ascend 910 (ATC needs a static shape;
export with --batch_size or give it here):

    atc --model=frozen_model.pb --framework=3 --output=insightface_r100 \
        --soc_version=Ascend910 --input_shape="input_images:1,112,112,3"
    # with --normalized_output add --out_nodes="embeddings_normalized:0"
    # (or "embeddings:0"), since `embeddings` then feeds another node

Before anything is moved into place, the frozen graph (in TensorFlow) and the ONNX model
(in onnxruntime) embed a few synthetic faces and their mirrors (data/synthetic) and must
give the checkpoint's embeddings to CHECK_RELATIVE; a model that does not is an error
(exit 1), and nothing is written.

Every output is written into a temporary folder inside --output_dir and
renamed into place at the end; existing outputs are only replaced with
--overwrite, and other files in --output_dir are never touched. Each output
gets a hidden record beside it (`.frozen_model.pb.written.json`, ...: every
file's size and SHA-256, data/safe_files.py); --overwrite replaces only an
output that matches its record, so a user's own file of that name, or one
added inside saved_model/, is refused, never deleted.

Typical use:
    python3 export_model.py --ckpt_file output/ckpt --net_depth 100 \
        --output_dir output/export --batch_size 1
"""
import argparse
import logging
import os
import shutil
import sys
import tempfile

# First: silences TensorFlow's logs before anything below imports it.
from data import quiet  # noqa: I100
import numpy as np  # noqa: I100
import tensorflow.compat.v1 as tf

from data.cli import UsageError
from data.safe_files import check_output, move_into_place, write_record
from data.synthetic import identities, render
from devices import runtime
from evaluation import ijb_models
from nets import checkpoint_names, inference
from training import cli_flags

PROG = 'export_model.py'
FROZEN_GRAPH = 'frozen_model.pb'
SAVED_MODEL = 'saved_model'
INPUT_NODE = inference.INPUT_NODE      # 'input_images'
OUTPUT_NODE = inference.OUTPUT_NODE    # 'embeddings'
NORMALIZED_NODE = 'embeddings_normalized'
SIGNATURE_INPUT = 'images'
SIGNATURE_OUTPUT = 'embeddings'
FORMATS = ('pb', 'saved_model', 'both')
ONNX_MODEL = 'model.onnx'
ONNX_OPSET = 13  # onnxruntime, TensorRT 8+ and ATC's ONNX front end all take it
_ONNX_CATCH_ERRORS = 'TF2ONNX_CATCH_ERRORS'
_ENTRY = '--output_dir entry'  # how messages name one output
CHECK_FACES = 4  # synthetic faces (and their mirrors) every written model must embed
# Largest ||exported - checkpoint|| / ||checkpoint|| of one face's embedding: float
# rounding moves it by about 1e-6; a network that differs (a nearest-neighbour resize
# for an area one) by 1e-2 and more.
CHECK_RELATIVE = 1e-4


class ExportMismatch(Exception):
    """A written model does not reproduce the checkpoint; one line."""


def get_parser():
    """The export flags."""
    parser = cli_flags.OneLineParser(
        prog=PROG, description='Export an InsightFace checkpoint as a frozen .pb (for ATC) '
                               'and/or a SavedModel.',
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument('--ckpt_file', type=str, required=True,
                        help='checkpoint prefix (e.g. output/ckpt/InsightFace_iter_2000.ckpt) '
                             'or a folder (its latest checkpoint)')
    cli_flags.add_checkpoint_network(parser, 'the images the exported graph takes')
    parser.add_argument('--batch_size', type=cli_flags.positive_int, default=None,
                        help='static batch dimension of input_images; None: dynamic')
    parser.add_argument('--output_dir', type=str, required=True,
                        help='folder for %s and %s/ (created if missing)'
                             % (FROZEN_GRAPH, SAVED_MODEL))
    parser.add_argument('--format', type=str, default='both', choices=FORMATS,
                        help='pb: frozen GraphDef; saved_model: SavedModel; both')
    parser.add_argument('--normalized_output', action='store_true',
                        help='also output %s, the L2-normalised embeddings' % NORMALIZED_NODE)
    parser.add_argument('--onnx', action='store_true',
                        help='also write %s (tf2onnx, opset %d; TensorFlow 2.x environment)'
                             % (ONNX_MODEL, ONNX_OPSET))
    parser.add_argument('--overwrite', action='store_true',
                        help='replace outputs that already exist in --output_dir')
    quiet.add_flag(parser)
    return parser


def output_names(export_format, onnx=False):
    """The entries of --output_dir an export writes."""
    return {'pb': [FROZEN_GRAPH], 'saved_model': [SAVED_MODEL],
            'both': [FROZEN_GRAPH, SAVED_MODEL]}[export_format] + ([ONNX_MODEL] if onnx else [])


def onnx_converter():
    """tf2onnx's converter module, or None where it is not installed (TensorFlow 1.15)."""
    try:
        import tf2onnx  # pylint: disable=import-outside-toplevel
    except ImportError:
        return None
    return tf2onnx.convert


def prepare(args):
    """Checks the checkpoint (by names) and the output folder before any graph is built.

    Nothing is created yet: a refused export leaves no trace.

    Returns:
      (prefix, {variable name: shape}, checkpoint_names.Network) of the checkpoint.
    Raises:
      UsageError, CheckpointError, OutputError: one-line messages.
    """
    size_problem = cli_flags.check_net_input_size(args.net_input_size, args.image_size)
    if size_problem:
        raise UsageError(size_problem)
    if args.onnx and (onnx_converter() is None or ijb_models.onnxruntime_module() is None):
        raise UsageError('--onnx needs tf2onnx (to convert) and onnxruntime (to check the '
                         'model), which requirements.txt installs with TensorFlow 2.x; this '
                         'environment has TensorFlow %s without them' % tf.__version__)
    checked = checkpoint_names.check_checkpoint_names(args.ckpt_file, args.net_depth, args.norm)
    args.net_input_size = checkpoint_names.network_input_size(
        checked[0], checked[2], args.image_size, args.net_input_size)
    if os.path.exists(args.output_dir) and not os.path.isdir(args.output_dir):
        raise UsageError('--output_dir %s is a file; expected a folder' % args.output_dir)
    existing = [name for name in output_names(args.format, args.onnx)
                if os.path.lexists(os.path.join(args.output_dir, name))]
    if existing and not args.overwrite:
        raise UsageError('--output_dir %s already holds %s; pass --overwrite to replace it'
                         % (args.output_dir, ' and '.join(existing)))
    check_replaceable(args.output_dir, existing)
    return checked


def check_replaceable(output_dir, names):
    """Raises OutputError unless each named output is what this tool recorded writing."""
    for name in names:
        check_output(os.path.join(output_dir, name), PROG, _ENTRY, overwrite=True)


def build_inference(args, network):
    """The inference graph in the default graph; returns (images, {name: output})."""
    images, embeddings = inference.inference_graph(network.depth, tuple(args.image_size),
                                                    args.batch_size,
                                                    net_input_size=args.net_input_size,
                                                    variant=network.variant,
                                                    norm=network.norm)
    outputs = {SIGNATURE_OUTPUT: embeddings}
    if args.normalized_output:
        outputs[NORMALIZED_NODE] = tf.nn.l2_normalize(embeddings, axis=1, name=NORMALIZED_NODE)
    return images, outputs


def freeze(sess, outputs):
    """The GraphDef computing `outputs`, variables folded into constants.

    Attributes holding their default value are removed (as SavedModelBuilder's
    strip_default_attrs does): TensorFlow 2 adds attributes that TensorFlow
    1.15 does not know (e.g. FusedBatchNormV3's exponential_avg_factor), and a
    1.15-era reader (TensorFlow 1.15, ATC) would refuse the graph otherwise.
    """
    node_names = sorted(tensor.op.name for tensor in outputs.values())
    frozen = tf.graph_util.convert_variables_to_constants(
        sess, sess.graph.as_graph_def(), node_names)
    with tf.Graph().as_default():
        return tf.train.export_meta_graph(graph_def=frozen, clear_devices=True,
                                          strip_default_attrs=True).graph_def


def write_frozen_graph(graph_def, path):
    """Writes a GraphDef in binary form."""
    with open(path, 'wb') as out:
        out.write(graph_def.SerializeToString())


def write_onnx(graph_def, outputs, path):
    """Converts the frozen graph with tf2onnx; ONNX names are the graph's, without ':0'."""
    names = [INPUT_NODE] + sorted(tensor.op.name for tensor in outputs.values())
    # tf2onnx deep-copies the whole model before each of its ~12 graph optimisers unless
    # TF2ONNX_CATCH_ERRORS says no: at depth 50 that took the peak from 7.9 GB to 17 GB.
    previous = os.environ.get(_ONNX_CATCH_ERRORS)
    os.environ[_ONNX_CATCH_ERRORS] = 'FALSE'
    try:
        with tf.Graph().as_default():  # tf2onnx imports the GraphDef into the default graph
            onnx_converter().from_graph_def(
                graph_def, input_names=[INPUT_NODE + ':0'],
                output_names=[name + ':0' for name in names[1:]], opset=ONNX_OPSET,
                tensors_to_rename={name + ':0': name for name in names}, output_path=path)
    finally:
        if previous is None:
            del os.environ[_ONNX_CATCH_ERRORS]
        else:
            os.environ[_ONNX_CATCH_ERRORS] = previous


def write_saved_model(sess, images, outputs, path):
    """A SavedModel with the serving tag and a `serving_default` predict signature."""
    builder = tf.saved_model.builder.SavedModelBuilder(path)
    signature = tf.saved_model.signature_def_utils.predict_signature_def(
        inputs={SIGNATURE_INPUT: images}, outputs=outputs)
    builder.add_meta_graph_and_variables(
        sess, [tf.saved_model.tag_constants.SERVING],
        signature_def_map={
            tf.saved_model.signature_constants.DEFAULT_SERVING_SIGNATURE_DEF_KEY: signature},
        strip_default_attrs=True)
    builder.save()


def check_faces(image_size, batch_size):
    """uint8 [batch_size or 2 * CHECK_FACES, H, W, 3] BGR: synthetic faces and mirrors."""
    faces = render.render_images(0, identities.VAL_STREAM,
                                 [(person, 0) for person in range(CHECK_FACES)], image_size)
    faces = np.concatenate([faces, faces[:, :, ::-1]])
    if batch_size:
        faces = np.resize(faces, (batch_size,) + faces.shape[1:])
    return np.ascontiguousarray(faces)


def largest_relative_difference(got, want):
    """max over rows of ||got - want|| / ||want||; inf for a wrong shape or non-finite."""
    got = np.asarray(got, np.float64)
    want = np.asarray(want, np.float64)
    if got.shape != want.shape or not np.all(np.isfinite(got)):
        return float('inf')
    return float(np.max(np.linalg.norm(got - want, axis=1) / np.linalg.norm(want, axis=1)))


def _embed_frozen(graph_def, faces):
    with tf.Graph().as_default():
        tf.import_graph_def(graph_def, name='')
        with tf.Session(config=runtime.session_config('cpu')) as sess:
            return sess.run(OUTPUT_NODE + ':0', {INPUT_NODE + ':0': faces})


def _embed_onnx(path, faces):
    session = ijb_models.onnx_session(path, 'cpu')
    return session.run([OUTPUT_NODE], {INPUT_NODE: faces})[0]


def check_written(staging, args, frozen, faces, expected):
    """Embeds `faces` with every written model.

    Returns:
      ([names of the models checked], the largest relative difference).

    Raises:
      ExportMismatch: a model whose embeddings differ from the checkpoint's (`expected`).
    """
    embedded = []
    if args.format in ('pb', 'both'):
        embedded.append((FROZEN_GRAPH, _embed_frozen(frozen, faces)))
    if args.onnx:
        embedded.append((ONNX_MODEL, _embed_onnx(os.path.join(staging, ONNX_MODEL), faces)))
    worst = 0.0
    for name, got in embedded:
        difference = largest_relative_difference(got, expected)
        if not difference <= CHECK_RELATIVE:
            raise ExportMismatch(
                '%s does not reproduce the checkpoint: on %d synthetic faces its embeddings '
                'differ from the checkpoint\'s by up to %.3g of their norm (allowed %g); '
                'nothing written' % (name, len(faces), difference, CHECK_RELATIVE))
        worst = max(worst, difference)
    return [name for name, _ in embedded], worst


def export(args, prefix, variables, network):
    """Builds the graph, checks shapes, restores and writes the outputs into place.

    The outputs are written into a temporary folder inside --output_dir
    (created only once the graph matches the checkpoint) and renamed into
    place at the end; on failure nothing is left behind.

    Raises:
      CheckpointError: shapes that do not fit the graph.
      RestoreError: the checkpoint's data could not be read.
      tf.errors.OpError: another TensorFlow failure.
      OSError: the output folder cannot be written.
      ExportMismatch: a written model does not reproduce the checkpoint.
    Returns:
      check_written's ([models checked], largest relative difference).
    """
    with tf.Graph().as_default():
        images, outputs = build_inference(args, network)
        backbone = checkpoint_names.backbone_variables(network.depth)
        checkpoint_names.check_shapes(prefix, variables, backbone, network)
        saver = tf.train.Saver(var_list=backbone)
        created = not os.path.isdir(args.output_dir)
        if created:
            os.makedirs(args.output_dir)
        staging = tempfile.mkdtemp(prefix='.export-', dir=args.output_dir)
        done = False
        try:
            # Freezing only reads variables: the CPU does it on any machine.
            faces = check_faces(tuple(args.image_size), args.batch_size)
            with tf.Session(config=runtime.session_config('cpu')) as sess:
                checkpoint_names.restore(sess, saver, prefix)
                expected = sess.run(outputs[SIGNATURE_OUTPUT], {images: faces})
                frozen = freeze(sess, outputs) if args.format != 'saved_model' or args.onnx \
                    else None
                if args.format in ('pb', 'both'):
                    write_frozen_graph(frozen, os.path.join(staging, FROZEN_GRAPH))
                if args.format in ('saved_model', 'both'):
                    write_saved_model(sess, images, outputs, os.path.join(staging, SAVED_MODEL))
            if args.onnx:
                write_onnx(frozen, outputs, os.path.join(staging, ONNX_MODEL))
            checked = check_written(staging, args, frozen, faces, expected)
            _move_outputs(staging, args.output_dir, output_names(args.format, args.onnx))
            done = True
        finally:
            shutil.rmtree(staging, ignore_errors=True)
            if created and not done:
                os.rmdir(args.output_dir)
    return checked


def _move_outputs(staging, output_dir, names):
    """Moves each staged output into output_dir and records it, replacing an old one.

    The old outputs are checked against their records again first (the export
    takes a while).
    """
    check_replaceable(output_dir, [name for name in names
                                   if os.path.lexists(os.path.join(output_dir, name))])
    move_into_place(staging, output_dir, names)
    for name in names:
        write_record(os.path.join(output_dir, name), PROG)


def atc_command(args, net_depth):
    """The ATC command line that converts the exported frozen graph."""
    batch = args.batch_size or 1
    command = ('atc --model=%s --framework=3 --output=%s --soc_version=Ascend910 '
               '--input_shape="%s:%d,%d,%d,3"'
               % (os.path.join(args.output_dir, FROZEN_GRAPH),
                  os.path.join(args.output_dir, 'insightface_r%d' % net_depth),
                  INPUT_NODE, batch, args.image_size[0], args.image_size[1]))
    if args.normalized_output:
        command += ' --out_nodes="%s:0"' % NORMALIZED_NODE
    return command


def main(argv=None):
    """Parses flags, checks inputs, exports. Returns the process exit code."""
    args = get_parser().parse_args(argv)
    runtime.init()

    def work():
        prefix, variables, network = prepare(args)
        try:
            checked, worst = export(args, prefix, variables, network)
        except ExportMismatch as error:
            return cli_flags.fail(PROG, error, 1)
        for name in output_names(args.format, args.onnx):
            logging.info('wrote %s', os.path.join(args.output_dir, name))
        if checked:
            logging.info('checked against the checkpoint on %d synthetic faces: %s (largest '
                         'difference %.2g of the embedding\'s norm)',
                         args.batch_size or 2 * CHECK_FACES, ', '.join(checked), worst)
        logging.info('restored from %s (depth %d, %s, %s norm); input %s (uint8 BGR), output '
                     '%s (float32, not normalised)', os.path.abspath(prefix), network.depth,
                     network.variant, network.norm, INPUT_NODE, OUTPUT_NODE)
        if args.format in ('pb', 'both'):
            logging.info('for the Ascend 910: %s', atc_command(args, network.depth))

    return cli_flags.run_tool(PROG, work, failing='export of --ckpt_file %s' % args.ckpt_file,
                              writing='to --output_dir %s' % args.output_dir)


if __name__ == '__main__':
    sys.exit(main())
