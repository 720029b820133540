"""Face embeddings of a folder of images, or the similarity of two images, from a checkpoint.

The embeddings are the verification protocol's: each image and its mirror
embedded, summed, L2-normalised (verification.combine_flip), so a squared
distance between two of them is what eval_ckpt_file.py's threshold applies
to, and their dot product is the cosine similarity.

    python3 extract_features.py --ckpt_file output/ckpt --image_dir gallery \\
        --output output/features.npz
    python3 extract_features.py --ckpt_file output/ckpt --compare a.jpg b.jpg \\
        --threshold_from output/eval.json

--image_dir takes every .jpg/.jpeg/.png under the folder (any depth); the
.npz holds `embeddings` float32 [N, 512], `files` (paths relative to the
folder, sorted), `identities` (each file's first folder, '' at the top) and
what made them (`checkpoint`, `net_depth`, `variant`, `norm`, `image_size`). Images
must have --image_size (the network's), or --resize re-encodes them to it.
The depth and width of the network are read from the checkpoint, as in
eval_ckpt_file.py. An existing --output is only replaced with --overwrite,
and only if this tool wrote it (a hidden record beside it,
`.<name>.written.json`; data/safe_files.py).

Exit status: 0 done; 2 bad input (one line on stderr); 1 a failure while running.
"""
import argparse
import io
import json
import logging
import os
import sys

# First: silences TensorFlow's logs before anything below imports it.
from data import quiet  # noqa: I100
import numpy as np  # noqa: I100

import verification
from data import eval_data_reader
from data.cli import UsageError
from data.image_files import ImageChecker, list_images
from data.safe_files import check_output, write_recorded
from devices import runtime
from nets import checkpoint_names, inference
from training import cli_flags

PROG = 'extract_features.py'


def get_parser():
    parser = cli_flags.OneLineParser(
        prog=PROG, description='Embeddings of a folder of face images (.npz), or the '
                               'similarity of two images, from an InsightFace checkpoint.',
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument('--ckpt_file', required=True,
                        help='checkpoint prefix, or a folder (its latest checkpoint)')
    cli_flags.add_checkpoint_network(parser, 'the images')
    parser.add_argument('--resize', action='store_true',
                        help='re-encode images of another size at --image_size instead of '
                             'refusing them')
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument('--image_dir', default=None,
                      help='embed every .jpg/.jpeg/.png under this folder (needs --output)')
    what.add_argument('--compare', nargs=2, metavar=('IMAGE_A', 'IMAGE_B'), default=None,
                      help='print the cosine similarity of two images (and the decision, '
                           'with --threshold_from)')
    parser.add_argument('--output', default=None, help='the .npz to write (with --image_dir)')
    parser.add_argument('--overwrite', action='store_true',
                        help='replace an existing --output that this tool wrote')
    parser.add_argument('--threshold_from', default=None,
                        help='an eval_ckpt_file.py --output_json file: its best threshold '
                             'decides same or different person (with --compare)')
    parser.add_argument('--threshold_dataset', default=None,
                        help='which dataset\'s threshold of --threshold_from; needed when it '
                             'holds several')
    parser.add_argument('--batch_size', type=cli_flags.positive_int, default=32,
                        help='images per forward pass')
    parser.add_argument('--device', default='auto', choices=runtime.DEVICES,
                        help='auto: NPU if npu_bridge imports, else GPU, else CPU')
    quiet.add_flag(parser)
    return parser


def read_threshold(path, dataset=None, checkpoint=None):
    """(squared-distance threshold, its dataset) from an eval_ckpt_file.py JSON.

    The record of `checkpoint` is preferred when the file scored several.

    Raises:
      UsageError: unreadable file, no such dataset, or an ambiguous choice.
    """
    try:
        with open(path) as json_file:
            results = json.load(json_file)['results']
    except (IOError, OSError, ValueError, KeyError, TypeError) as error:
        raise UsageError('--threshold_from %s: expected the JSON of eval_ckpt_file.py '
                         '--output_json (%s)' % (path, error))
    if dataset is not None:
        results = [r for r in results if r.get('dataset') == dataset]
    mine = [r for r in results if checkpoint and os.path.abspath(r.get('checkpoint', '')) ==
            os.path.abspath(checkpoint)]
    results = mine or results
    datasets = sorted(set(r.get('dataset') for r in results))
    if not results:
        raise UsageError('--threshold_from %s holds no result%s' % (
            path, '' if dataset is None else ' for --threshold_dataset %s' % dataset))
    if len(datasets) > 1:
        raise UsageError('--threshold_from %s holds thresholds of %s; choose one with '
                         '--threshold_dataset' % (path, ', '.join(datasets)))
    return float(results[-1]['threshold']), datasets[0]


def load_images(paths, image_size, resize):
    """Checks and decodes image files to uint8 BGR [N, H, W, 3].

    Raises:
      ImageFolderError: an unreadable image, or one of another size without resize.
    """
    checker = ImageChecker(image_size if resize else None)
    payloads = []
    try:
        for path in paths:
            payloads.append(checker.check(path, image_size, '(--image_size)')[0])
    finally:
        checker.close()
    return eval_data_reader.decode_images(payloads, tuple(image_size))


def embed(args, images):
    """Protocol embeddings (float32 [N, D], L2-normalised, flip-summed) and the checkpoint."""
    import tensorflow.compat.v1 as tf
    from tqdm import tqdm
    prefix, names, network = checkpoint_names.check_checkpoint_names(
        args.ckpt_file, args.net_depth, args.norm)
    net_input_size = checkpoint_names.network_input_size(prefix, network, args.image_size,
                                                         args.net_input_size)
    device = runtime.select_device(args.device)
    with tf.Graph().as_default():
        with runtime.inference_scope(device):
            images_ph, embeddings = inference.inference_graph(
                network.depth, tuple(args.image_size), args.batch_size,
                net_input_size=net_input_size, variant=network.variant, norm=network.norm)
        variables = checkpoint_names.backbone_variables(network.depth)
        checkpoint_names.check_shapes(prefix, names, variables, network)
        with tf.Session(config=runtime.inference_session_config(device)) as sess:
            checkpoint_names.restore(sess, tf.train.Saver(var_list=variables), prefix)
            logging.info('embedding with %s (depth %d, %s, %s norm)', os.path.abspath(prefix),
                         network.depth, network.variant, network.norm)
            with tqdm(total=2 * len(eval_data_reader.distinct_images(images)[0]), unit='image',
                      desc='embedding (image and mirror)', disable=None) as bar:
                passes = verification.embed_images(sess, images_ph, embeddings, images,
                                                   args.batch_size, on_batch=bar.update)
    return verification.combine_flip(*passes).astype(np.float32), prefix, network


def extract(args):
    """--image_dir: embeds every image and writes the .npz."""
    paths = list_images(args.image_dir)
    images = load_images(paths, args.image_size, args.resize)
    features, prefix, network = embed(args, images)
    relative = [os.path.relpath(p, args.image_dir) for p in paths]
    identities = [r.split(os.sep)[0] if os.sep in r else '' for r in relative]
    buffer = io.BytesIO()
    np.savez(buffer, embeddings=features, files=np.array(relative),
             identities=np.array(identities), checkpoint=os.path.abspath(prefix),
             net_depth=network.depth, variant=network.variant, norm=network.norm,
             image_size=np.array(args.image_size))
    write_recorded(args.output, buffer.getvalue(), PROG, '--output', args.overwrite)
    logging.info('wrote %s: %d embeddings of %d dimensions', os.path.abspath(args.output),
                 features.shape[0], features.shape[1])


def compare(args):
    """--compare: prints the cosine similarity, and the decision if a threshold is given."""
    threshold = None
    if args.threshold_from:
        prefix = checkpoint_names.resolve_checkpoint(args.ckpt_file)
        threshold, dataset = read_threshold(args.threshold_from, args.threshold_dataset, prefix)
    images = load_images(args.compare, args.image_size, args.resize)
    features, _, _ = embed(args, images)
    cosine = float(np.dot(features[0], features[1]))
    distance = float(np.sum((features[0] - features[1]) ** 2))
    line = 'cosine similarity %.4f (squared distance %.4f)' % (cosine, distance)
    if threshold is not None:
        # The protocol calls a pair the same person when the distance is below it.
        line += '; threshold %.2f (cosine %.4f) from %s [%s]: %s' % (
            threshold, 1.0 - threshold / 2.0, args.threshold_from, dataset,
            'same person' if distance < threshold else 'different people')
    print(line)


def main(argv=None):
    """Parses flags, checks inputs, runs. Returns the process exit code."""
    parser = get_parser()
    args = parser.parse_args(argv)
    problem = cli_flags.check_net_input_size(args.net_input_size, args.image_size)
    if args.image_dir is not None and not args.output:
        problem = '--image_dir needs --output (the .npz to write)'
    if args.compare is not None and args.output:
        problem = '--output goes with --image_dir; --compare prints its result'
    if problem:
        return cli_flags.fail(PROG, problem, 2)
    runtime.init()

    def work():
        if args.image_dir is not None:
            check_output(args.output, PROG, '--output', args.overwrite)  # before the long part
            extract(args)
        else:
            compare(args)

    # ValueError too: an image or .bin the decoders refuse.
    return cli_flags.run_tool(PROG, work, failing='embedding', writing='the output',
                              input_errors=(ValueError,))


if __name__ == '__main__':
    sys.exit(main())
