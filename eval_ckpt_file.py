"""Evaluates checkpoints on insightface verification sets (lfw.bin, cfp_fp.bin, ...).

The original InsightFace_TF's eval_ckpt_file.py with typed flags: it builds the
inference graph (raw uint8 BGR images in, embeddings out, moving batch-norm
statistics, no dropout), restores ONLY the backbone variables
`resnet_v1_<depth>/...` of each checkpoint (so a checkpoint of train_nets.py,
which also holds the ArcFace weights, Momentum slots and global_step, and a
checkpoint of the original InsightFace_TF both load), and scores each
verification set with insightface's 10-fold protocol on flip-summed
embeddings (verification.run_verification).

Output: one table row per checkpoint x dataset on stdout (accuracy and VAL are
mean+-std over the 10 folds, threshold is the best squared-L2 threshold on all
pairs, XNorm the mean norm of the raw embeddings),

    checkpoint                  dataset  accuracy           VAL@FAR=1e-3       threshold ...
    InsightFace_iter_20000.ckpt lfw      0.99517+-0.00359   0.98100+-0.01000   1.43      ...
    ... XNorm        pairs
    ... 21.843718    6000

the original's `[lfw][2000]XNorm: ...` / `[lfw][2000]Accuracy-Flip: ...` log
lines on stderr (step = the number in the checkpoint's name, else 0), and
optionally the same numbers plus the ROC as JSON (--output_json), one ROC
plot per dataset (--plot_dir), and where the wrong pairs come from (--error_report, see
pair_errors.py).

Every input is checked before the long part starts (checkpoints, their depth
and shapes, the .bin files); a problem ends the run with a one-line message
and exit status 2; a failure while running exits with 1.

Typical use:
    python3 eval_ckpt_file.py --ckpt_file output/ckpt/InsightFace_iter_ \
        --ckpt_index_list 10000.ckpt 20000.ckpt --net_depth 50 \
        --eval_db_path datasets/faces_ms1m_112x112 --eval_datasets lfw cfp_fp agedb_30 \
        --output_json output/eval.json --plot_dir output/roc
"""
import argparse
import collections
import json
import logging
import os
import sys

# First: silences TensorFlow's logs before anything below imports it.
from data import quiet  # noqa: I100
import numpy as np  # noqa: I100
import tensorflow.compat.v1 as tf

import verification
from data import eval_data_reader
from data.cli import UsageError
from data.safe_files import check_output, write_recorded
from devices import runtime
from evaluation import pair_errors, verification_sets
from evaluation import roc_plot  # imports matplotlib only when drawing
from nets import checkpoint_names, inference
from training import cli_flags

PROG = 'eval_ckpt_file.py'
FAR_LABEL = ('%.0e' % verification.FAR_TARGET).replace('e-0', 'e-')  # '1e-3'
TABLE_COLUMNS = ('accuracy', 'VAL@FAR=' + FAR_LABEL, 'threshold', 'XNorm', 'pairs')
_COLUMN_WIDTHS = (17, 17, 9, 11, 6)

Plan = collections.namedtuple('Plan', [
    'device',       # 'npu', 'gpu' or 'cpu'
    'checkpoints',  # [(prefix, {variable name: shape}, checkpoint_names.Network)]
    'network',      # the checkpoints' common checkpoint_names.Network
    'bin_paths',    # [(dataset name, path of its .bin)]
])


WRITER = 'eval_ckpt_file.py'  # names this tool in the records of what it wrote


def get_parser():
    """The evaluation flags."""
    parser = cli_flags.OneLineParser(
        prog=PROG, description='Evaluate InsightFace checkpoints on verification .bin sets.',
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ckpt = parser.add_argument_group('checkpoints')
    ckpt.add_argument('--ckpt_file', type=str, required=True,
                      help='checkpoint prefix (e.g. output/ckpt/InsightFace_iter_2000.ckpt) or '
                           'a folder (its latest checkpoint); with --ckpt_index_list, the '
                           'common beginning of the checkpoint names')
    ckpt.add_argument('--ckpt_index_list', type=str, nargs='+', default=None,
                      help='evaluate several checkpoints: each entry is appended to '
                           '--ckpt_file (e.g. --ckpt_file output/ckpt/InsightFace_iter_ '
                           '--ckpt_index_list 1000.ckpt 2000.ckpt); None: --ckpt_file alone')
    model = parser.add_argument_group('model')
    cli_flags.add_checkpoint_network(model, 'the .bin images')
    data = parser.add_argument_group('data')
    data.add_argument('--eval_db_path', type=str, default='./datasets/faces_ms1m_112x112',
                      help='folder holding the .bin verification sets')
    data.add_argument('--eval_datasets', type=str, nargs='+', default=['lfw'],
                      help='names of .bin files in --eval_db_path, without .bin '
                           '(e.g. lfw cfp_fp agedb_30)')
    data.add_argument('--batch_size', type=cli_flags.positive_int, default=32,
                      help='images per forward pass (the static batch dimension)')
    output = parser.add_argument_group('output')
    output.add_argument('--output_json', type=str, default=None,
                        help='also write the results (with the ROC) to this JSON file; '
                             'None: off')
    output.add_argument('--plot_dir', type=str, default=None,
                        help='write roc_<dataset>.png here, one curve per checkpoint; '
                             'None: off')
    output.add_argument('--overwrite', action='store_true',
                        help='replace --output_json and the ROC plots of an earlier '
                             'evaluation (only files this tool wrote and nobody changed)')
    output.add_argument('--error_report', type=cli_flags.str2bool, default=False,
                        help='after each row, where the wrong pairs come from: groups of '
                             'images linked by same-person pairs (a .bin holds no identity '
                             'labels), or the wrong pairs themselves; see pair_errors.py')
    device = parser.add_argument_group('device')
    device.add_argument('--device', type=str, default='auto', choices=runtime.DEVICES,
                        help='auto: NPU if npu_bridge imports, else GPU, else CPU')
    quiet.add_flag(parser)
    return parser


def output_paths(args, datasets):
    """[(flag, path)] of the files this evaluation writes: the JSON, one ROC per dataset."""
    paths = [('--output_json', args.output_json)] if args.output_json else []
    if args.plot_dir:
        paths += [('--plot_dir', roc_plot.plot_path(args.plot_dir, name)) for name in datasets]
    return paths


def prepare(args):
    """Checks flags, checkpoint names and .bin paths (no graph, no decoding).

    Raises:
      UsageError, CheckpointError, OutputError: one-line messages.
    """
    size_problem = cli_flags.check_net_input_size(args.net_input_size, args.image_size)
    if size_problem:
        raise UsageError(size_problem)
    try:
        device = runtime.select_device(args.device)
    except ValueError as error:
        raise UsageError(str(error))
    paths = cli_flags.checkpoint_arguments(args.ckpt_file, args.ckpt_index_list)
    checkpoints = [checkpoint_names.check_checkpoint_names(path, args.net_depth, args.norm)
                   for path in paths]
    network = checkpoint_names.common_network(checkpoints)
    args.net_input_size = checkpoint_names.network_input_size(
        checkpoints[0][0], network, args.image_size, args.net_input_size)
    bin_paths = verification_sets.find(args.eval_db_path, args.eval_datasets)
    if args.output_json:
        if os.path.isdir(args.output_json):
            raise UsageError('--output_json %s is a folder; expected a file name'
                             % args.output_json)
        cli_flags.check_output_folder(os.path.dirname(os.path.abspath(args.output_json)),
                                      '--output_json')
    if args.plot_dir:
        cli_flags.check_output_folder(args.plot_dir, '--plot_dir')
    for flag, path in output_paths(args, [name for name, _ in bin_paths]):
        check_output(path, WRITER, flag, args.overwrite)
    return Plan(device, checkpoints, network, bin_paths)


def checkpoint_labels(prefixes):
    """Short names for the table: file names, or full paths if two would collide."""
    names = [os.path.basename(p) for p in prefixes]
    return names if len(set(names)) == len(names) else list(prefixes)


class Table(object):
    """Prints the result table row by row (the header with the first row), columns
    sized from the names known beforehand."""

    def __init__(self, labels, datasets, out=None):
        self.out = out or sys.stdout
        self.first = max([len('checkpoint')] + [len(label) for label in labels])
        self.second = max([len('dataset')] + [len(name) for name in datasets])
        self.started = False

    def _line(self, cells):
        text = '%-*s  %-*s' % (self.first, cells[0], self.second, cells[1])
        for width, cell in zip(_COLUMN_WIDTHS, cells[2:]):
            text += '  %-*s' % (width, cell)
        self.out.write(text.rstrip() + '\n')
        self.out.flush()

    def lines(self, texts):
        for text in texts:
            self.out.write(text + '\n')
        self.out.flush()

    def row(self, label, dataset, result):
        if not self.started:
            self._line(('checkpoint', 'dataset') + TABLE_COLUMNS)
            self.started = True
        self._line((label, dataset) + format_row(result))


def format_row(result):
    """The result cells of a table row, in TABLE_COLUMNS order."""
    return ('%.5f+-%.5f' % (result.accuracy, result.accuracy_std),
            '%.5f+-%.5f' % (result.val, result.val_std),
            '%.2f' % result.threshold, '%.6f' % result.xnorm, '%d' % result.nrof_pairs)


def result_record(prefix, dataset, bin_path, result):
    """One JSON-ready dict: the table's numbers, the folds' thresholds, the ROC.

    The checkpoint is named by its full path: the file is read elsewhere
    (extract_features.py --threshold_from matches it by full path)."""
    return {'checkpoint': os.path.abspath(prefix),
            'step': checkpoint_names.checkpoint_step(prefix), 'dataset': dataset, 'bin': bin_path,
            'accuracy': result.accuracy, 'accuracy_std': result.accuracy_std,
            'val': result.val, 'val_std': result.val_std, 'far': result.far,
            'threshold': result.threshold,
            'fold_thresholds': np.asarray(result.fold_thresholds).tolist(),
            'xnorm': result.xnorm, 'nrof_pairs': result.nrof_pairs,
            'tpr': np.asarray(result.tpr).tolist(), 'fpr': np.asarray(result.fpr).tolist()}


def evaluate(args, plan):
    """Builds the graph, checks shapes, loads the sets, evaluates; returns the records.

    Raises:
      UsageError, CheckpointError: an input problem found before evaluating.
      RestoreError: a checkpoint's data could not be read.
      tf.errors.OpError: a failure while running.
    """
    logger = logging.getLogger()
    with tf.Graph().as_default():
        with runtime.inference_scope(plan.device):
            images_ph, embeddings = inference.inference_graph(
                plan.network.depth, tuple(args.image_size), args.batch_size,
                net_input_size=args.net_input_size, variant=plan.network.variant,
                norm=plan.network.norm)
        variables = checkpoint_names.backbone_variables(plan.network.depth)
        for prefix, names, _ in plan.checkpoints:
            checkpoint_names.check_shapes(prefix, names, variables, plan.network)
        sets = verification_sets.load(plan.bin_paths, args.image_size)
        saver = tf.train.Saver(var_list=variables)
        labels = checkpoint_labels([prefix for prefix, _, _ in plan.checkpoints])
        table = Table(labels, [name for name, _, _, _ in sets])
        records = []
        with tf.Session(config=runtime.inference_session_config(plan.device)) as sess:
            for label, (prefix, _, _) in zip(labels, plan.checkpoints):
                checkpoint_names.restore(sess, saver, prefix)
                logger.info('evaluating %s (depth %d, %s, %s norm)', os.path.abspath(prefix),
                            plan.network.depth, plan.network.variant, plan.network.norm)
                step = checkpoint_names.checkpoint_step(prefix)
                for name, bin_path, images, issame in sets:
                    embedded = verification.embed_images(sess, images_ph, embeddings, images,
                                                         args.batch_size)
                    result = verification.evaluate_flip(embedded[0], embedded[1], issame)
                    table.row(label, name, result)
                    if args.error_report:
                        report = pair_errors.breakdown(embedded[0], embedded[1], issame,
                                                       result.threshold,
                                                       eval_data_reader.distinct_images(images)[1])
                        table.lines(pair_errors.format_report(name, report))
                    verification_sets.log_result(name, step, result, logger)
                    records.append((label, result_record(prefix, name, bin_path, result)))
    return records


def write_outputs(args, network, records):
    """The JSON file and the ROC plots, if asked for."""
    if args.output_json:
        payload = {'net_depth': network.depth, 'variant': network.variant, 'norm': network.norm,
                   'image_size': list(args.image_size),
                   'net_input_size': list(args.net_input_size or args.image_size),
                   'batch_size': args.batch_size, 'eval_db_path': args.eval_db_path,
                   'tensorflow': tf.__version__,
                   'roc_thresholds': verification.ACCURACY_THRESHOLDS.tolist(),
                   'results': [record for _, record in records]}
        text = json.dumps(payload, indent=1, sort_keys=True) + '\n'
        write_recorded(args.output_json, text.encode('utf-8'), WRITER, '--output_json',
                       args.overwrite)
        logging.info('results: %s', os.path.abspath(args.output_json))
    if args.plot_dir:
        for dataset in verification_sets.unique(args.eval_datasets):
            curves = [roc_plot.RocCurve(label, record['fpr'], record['tpr'], record['accuracy'])
                      for label, record in records if record['dataset'] == dataset]
            path = roc_plot.plot_path(args.plot_dir, dataset)
            write_recorded(path, roc_plot.render_roc(dataset, curves), WRITER, '--plot_dir',
                           args.overwrite)
            logging.info('ROC: %s', os.path.abspath(path))



def main(argv=None):
    """Parses flags, checks inputs, evaluates. Returns the process exit code."""
    args = get_parser().parse_args(argv)
    runtime.init()

    def work():
        plan = prepare(args)
        write_outputs(args, plan.network, evaluate(args, plan))

    return cli_flags.run_tool(PROG, work, failing='evaluation', writing='the results')


if __name__ == '__main__':
    sys.exit(main())
