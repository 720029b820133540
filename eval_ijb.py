"""Evaluates checkpoints on IJB-B / IJB-C 1:1 verification, as insightface's eval_ijbc.py.

Reads insightface's release of IJB-B or IJB-C (--ijb_root holding loose_crop/ and meta/,
evaluation/ijb_meta.py), aligns each loose crop by its five landmarks onto ArcFace's
112x112 template, embeds it and its mirror (evaluation/ijb_embed.py: decoding in worker
processes, streamed through the network), pools images into templates and scores the
template pairs with the protocol of insightface's recognition/arcface_torch/eval_ijbc.py
at commit 7fadd420 (evaluation/ijb_protocol.py), and prints TAR at FAR 1e-6 ... 1e-1:

    checkpoint                  target  TAR@FAR=1e-6  TAR@FAR=1e-5  ...  TAR@FAR=1e-1
    InsightFace_iter_20000.ckpt IJBC    80.12         88.35         ...  98.71

--ckpt_file is a checkpoint (prefix or folder; depth and width read from it, as in
eval_ckpt_file.py), a frozen .pb of export_model.py, or its .onnx (onnxruntime, TensorFlow
2.x environment). Optional outputs: the features cache (--features_cache, reused by the
next run of the same checkpoint and image list), the JSON (--output_json), the ROC PNG
(--plot) and the per-pair scores (--scores_npy). They are checked before the long part
(an existing one is replaced only with --overwrite, and only if this tool wrote it) and
written at the end, atomically.

Exit status: 0 done; 2 bad input (a flag, a checkpoint, the release, an image that does
not decode, an output that may not be replaced: one line on stderr, nothing written);
1 a failure while running; 130 interrupted (Ctrl-C or kill), nothing written.

Typical use:
    python3 eval_ijb.py --ckpt_file output/ckpt --ijb_root /data/IJB_release/IJBC \\
        --target IJBC --output_json output/ijbc.json --plot output/ijbc_roc.png
"""
import argparse
import collections
import io
import json
import logging
import os
import signal
import sys
import threading

# First: silences TensorFlow's logs before anything below imports it.
from data import quiet  # noqa: I100
import numpy as np  # noqa: I100
import tensorflow.compat.v1 as tf

from data.cli import UsageError
from data.safe_files import check_output, write_recorded
from devices import runtime
from evaluation import (ijb_cache, ijb_embed, ijb_meta, ijb_models, ijb_plot, ijb_protocol,
                        ijb_report)
from evaluation.ijb_align import CROP_SIZE
from evaluation.ijb_meta import IJBFormatError
from nets import checkpoint_names
from training import cli_flags

PROG = 'eval_ijb.py'
WRITER = ijb_cache.WRITER
REFERENCE = ('deepinsight/insightface recognition/arcface_torch/eval_ijbc.py at commit '
             '7fadd420')

Plan = collections.namedtuple('Plan', [
    'device',         # 'npu', 'gpu' or 'cpu'
    'models',         # [ijb_models.Model], in the order given
    'meta',           # ijb_meta.IJBMeta of the release
    'landmark_path',  # the 5pts file, for messages
    'cache',          # (ijb_cache.Identity, REUSE or WRITE), or None without --features_cache
])


def get_parser():
    """The IJB evaluation flags."""
    parser = cli_flags.OneLineParser(
        prog=PROG, description='Evaluate InsightFace checkpoints on IJB-B / IJB-C 1:1 '
                               'verification (TAR at FAR 1e-6 ... 1e-1), as insightface\'s '
                               'eval_ijbc.py.',
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ckpt = parser.add_argument_group('checkpoints')
    ckpt.add_argument('--ckpt_file', type=str, required=True,
                      help='checkpoint prefix or folder (its latest checkpoint), a frozen .pb '
                           'of export_model.py, or its .onnx (needs onnxruntime); with '
                           '--ckpt_index_list, the common beginning of the names')
    ckpt.add_argument('--ckpt_index_list', type=str, nargs='+', default=None,
                      help='evaluate several: each entry is appended to --ckpt_file (one '
                           'table row each); None: --ckpt_file alone')
    model = parser.add_argument_group('model (checkpoints)')
    cli_flags.add_checkpoint_network(model, 'the aligned crops: 112,112 (ArcFace\'s template)')
    data = parser.add_argument_group('data')
    data.add_argument('--ijb_root', type=str, required=True,
                      help='the release folder, holding loose_crop/ and meta/ (e.g. the '
                           'unpacked IJB_release/IJBC)')
    data.add_argument('--target', type=str, default='IJBC', choices=ijb_meta.TARGETS,
                      help='which meta files: meta/ijbc_*.txt or meta/ijbb_*.txt')
    data.add_argument('--batch_size', type=cli_flags.positive_int, default=64,
                      help='crops per forward pass (the static batch; a frozen graph or ONNX '
                           'model with a fixed batch uses its own)')
    data.add_argument('--num_workers', type=cli_flags.non_negative_int,
                      default=ijb_embed.default_workers(),
                      help='processes that decode and align images while the network runs; '
                           '0: in this process; default: the cores this process may use')
    protocol = parser.add_argument_group('protocol (insightface\'s test modes)')
    protocol.add_argument('--flip', type=cli_flags.str2bool, default=True,
                          help='add the embedding of each crop\'s mirror (mode F2); False: '
                               'the crop alone')
    protocol.add_argument('--norm_score', type=cli_flags.str2bool, default=True,
                          help='keep each image\'s embedding norm as its weight in the '
                               'template (N1); False: L2-normalise every image first (N0)')
    protocol.add_argument('--detector_score', type=cli_flags.str2bool, default=True,
                          help='weight each image by its detector score (D1); False: not (D0)')
    output = parser.add_argument_group('output')
    output.add_argument('--features_cache', type=str, default=None,
                        help='.npz of the raw embeddings (and of the mirrors): written after '
                             'embedding; a later run of the same checkpoint and image list '
                             'reuses it, whatever the protocol flags; None: off')
    output.add_argument('--output_json', type=str, default=None,
                        help='write the table, AUC, counts and flags to this JSON file; '
                             'None: off')
    output.add_argument('--plot', type=str, default=None,
                        help='write the ROC curves (log FAR 1e-6..1e-1) to this PNG; None: off')
    output.add_argument('--scores_npy', type=str, default=None,
                        help='write the pair scores to this .npy: float64 [pairs], or '
                             '[checkpoints, pairs] for several; None: off')
    output.add_argument('--overwrite', action='store_true',
                        help='replace outputs of an earlier run (only files this tool wrote '
                             'and nobody changed), and a features cache of another checkpoint')
    device = parser.add_argument_group('device')
    device.add_argument('--device', type=str, default='auto', choices=runtime.DEVICES,
                        help='auto: NPU if npu_bridge imports, else GPU, else CPU')
    quiet.add_flag(parser)
    return parser


def output_paths(args):
    """[(flag, path)] of the result files asked for (the features cache apart)."""
    return [(flag, path) for flag, path in (('--output_json', args.output_json),
                                            ('--plot', args.plot),
                                            ('--scores_npy', args.scores_npy)) if path]


def _check_flags(args):
    if tuple(args.image_size) != CROP_SIZE:
        raise UsageError('--image_size %d,%d: IJB crops are aligned onto ArcFace\'s %d,%d '
                         'template; a network trained on smaller images takes '
                         '--net_input_size' % (tuple(args.image_size) + CROP_SIZE))
    problem = cli_flags.check_net_input_size(args.net_input_size, args.image_size)
    if problem:
        raise UsageError(problem)


def _check_models(args, models, device):
    if not any(m.kind == ijb_models.CHECKPOINT for m in models):
        given = [flag for flag, value in (('--net_depth', args.net_depth),
                                          ('--norm', args.norm),
                                          ('--net_input_size', args.net_input_size)) if value]
        if given:
            raise UsageError('%s %s to checkpoints only; %s holds its network'
                             % (' and '.join(given), 'apply' if len(given) > 1 else 'applies',
                                models[0].path))
    if device == 'npu' and any(m.kind == ijb_models.ONNX for m in models):
        raise UsageError('--device npu: onnxruntime does not run on the NPU; give the '
                         'checkpoint or the frozen .pb')
    if args.features_cache and len(models) > 1:
        raise UsageError('--features_cache holds the embeddings of one checkpoint; evaluate '
                         'the %d of --ckpt_index_list in separate runs, one cache each'
                         % len(models))


def _check_outputs(args):
    named = output_paths(args) + ([('--features_cache', args.features_cache)]
                                  if args.features_cache else [])
    seen = {}
    for flag, path in named:
        if os.path.isdir(path):
            raise UsageError('%s %s is a folder; expected a file name' % (flag, path))
        other = seen.setdefault(os.path.abspath(path), flag)
        if other != flag:
            raise UsageError('%s and %s both name %s' % (other, flag, path))
        cli_flags.check_output_folder(os.path.dirname(os.path.abspath(path)), flag)
    for flag, path in output_paths(args):
        check_output(path, WRITER, flag, args.overwrite)


def cache_identity(args, model, meta):
    """What a features cache of `model` on this release must record."""
    size = ''
    if model.kind == ijb_models.CHECKPOINT:
        size = '%d,%d' % tuple(args.net_input_size or CROP_SIZE)
    return ijb_cache.Identity(
        model=os.path.abspath(model.path), model_kind=model.kind, model_sha256=model.sha256,
        target=args.target, ijb_root=os.path.abspath(args.ijb_root),
        images_sha256=ijb_cache.images_sha256(meta), num_images=len(meta.image_names),
        net_input_size=size)


def prepare(args):
    """Checks flags, models, the release and the outputs; no graph, no image decoded.

    Raises:
      UsageError, CheckpointError, OutputError, IJBFormatError: one-line messages.
    """
    _check_flags(args)
    try:
        device = runtime.select_device(args.device)
    except ValueError as error:
        raise UsageError(str(error))
    paths = cli_flags.checkpoint_arguments(args.ckpt_file, args.ckpt_index_list)
    models = [ijb_models.resolve(path, args.net_depth, args.norm) for path in paths]
    _check_models(args, models, device)
    checkpoints = [m for m in models if m.kind == ijb_models.CHECKPOINT]
    if checkpoints:
        args.net_input_size = checkpoint_names.network_input_size(
            checkpoints[0].path, checkpoints[0].network, CROP_SIZE, args.net_input_size)
    meta = ijb_meta.read_meta(args.ijb_root, args.target)
    ijb_meta.check_scorable(meta, args.ijb_root, args.target)
    _check_outputs(args)
    cache = None
    if args.features_cache:
        identity = cache_identity(args, models[0], meta)
        cache = (identity, ijb_cache.check(args.features_cache, identity, args.overwrite))
    return Plan(device, models, meta,
                ijb_meta.meta_path(args.ijb_root, args.target, ijb_meta.LANDMARKS), cache)


class EvaluationFailed(RuntimeError):
    """A failure while evaluating that no input check could foresee; one line, exit 1."""


Result = collections.namedtuple('Result', ['label', 'model', 'curve', 'tars', 'scores',
                                           'source'])


def _embeddings(args, plan, model, runners, pool):
    """(embeddings, flipped or None, 'features_cache' or 'network') of one model."""
    if plan.cache is not None and plan.cache[1] == ijb_cache.REUSE:
        logging.info('reusing the embeddings of --features_cache %s (%s %s): no embedding',
                     os.path.abspath(args.features_cache), model.kind,
                     os.path.abspath(model.path))
        embeddings, flipped = ijb_cache.load(args.features_cache)
        return embeddings, flipped, 'features_cache'
    run_batch, batch_size = runners.open(model)
    mirror = args.flip or plan.cache is not None
    network = (' (depth %d, %s, %s norm)' % model.network[:3]) if model.network else ''
    logging.info('embedding %d images%s with %s %s%s, batches of %d, %s',
                 len(plan.meta.image_names), ' and their mirrors' if mirror else '',
                 model.kind, os.path.abspath(model.path), network, batch_size,
                 '%d worker processes' % pool.num_workers if pool.num_workers
                 else 'decoding in this process')
    embeddings, flipped = ijb_embed.embed_release(
        args.ijb_root, plan.meta, plan.landmark_path, run_batch, batch_size, pool,
        mirror=mirror, label='embedding %s' % args.target)
    return embeddings, flipped, 'network'


def evaluate(args, plan, table):
    """Embeds (or reuses the cache), scores, prints a row per model.

    Returns:
      ([Result], (embeddings, flipped) to cache or None).
    Raises:
      IJBFormatError: an image that does not decode.
      CheckpointError, RestoreError, tf.errors.OpError: a checkpoint that fails.
      EvaluationFailed: embeddings that are not finite, a worker process that died.
    """
    meta = plan.meta
    reuse = plan.cache is not None and plan.cache[1] == ijb_cache.REUSE
    to_cache = None
    results = []
    labels = ijb_report.labels_of([model.path for model in plan.models])
    with ijb_embed.CropPool(0 if reuse else args.num_workers) as pool, \
            ijb_models.Runners([] if reuse else plan.models, args.batch_size,
                               args.net_input_size, plan.device) as runners:
        for label, model in zip(labels, plan.models):
            try:
                embeddings, flipped, source = _embeddings(args, plan, model, runners, pool)
            except ijb_embed.WorkerError as error:
                raise EvaluationFailed(str(error))
            if not (np.isfinite(embeddings).all()
                    and (flipped is None or np.isfinite(flipped).all())):
                raise EvaluationFailed('%s %s gives embeddings that are not finite'
                                       % (model.kind, model.path))
            if plan.cache is not None and not reuse:
                to_cache = (embeddings, flipped)
            verified = ijb_protocol.verify(meta, embeddings, flipped, flip=args.flip,
                                           norm_score=args.norm_score,
                                           detector_score=args.detector_score)
            table.row(label, args.target, verified.tars)
            results.append(Result(label, model, verified.curve, verified.tars,
                                  verified.scores if args.scores_npy else None, source))
            del embeddings, flipped  # before the next model's (to_cache keeps a single one)
    return results, to_cache


def _payload(args, plan, table, results):
    flags = dict((key, list(value) if isinstance(value, tuple) else value)
                 for key, value in sorted(vars(args).items()))
    return {'tool': PROG, 'reference': REFERENCE, 'target': args.target,
            'ijb_root': os.path.abspath(args.ijb_root),
            'counts': ijb_report.counts(plan.meta), 'fars': list(ijb_protocol.FARS),
            'far_labels': list(ijb_report.FAR_LABELS), 'table': table.lines,
            'flags': flags, 'tensorflow': tf.__version__,
            'results': [ijb_report.result_record(r.label, r.model, r.tars, r.curve.auc,
                                                 r.source) for r in results]}


def write_outputs(args, plan, table, results, to_cache, written):
    """The features cache, the scores, the plot and the JSON, each atomically; appends
    each path to `written` once it is in place."""
    if to_cache is not None:
        ijb_cache.write(args.features_cache, plan.cache[0], to_cache[0], to_cache[1],
                        args.overwrite)
        written.append(args.features_cache)
        logging.info('features cache: %s', os.path.abspath(args.features_cache))
    if args.scores_npy:
        scores = [r.scores for r in results]
        buffer = io.BytesIO()
        np.save(buffer, scores[0] if len(scores) == 1 else np.stack(scores))
        write_recorded(args.scores_npy, buffer.getvalue(), WRITER, '--scores_npy',
                       args.overwrite)
        written.append(args.scores_npy)
        logging.info('pair scores: %s', os.path.abspath(args.scores_npy))
    if args.plot:
        curves = [ijb_plot.RocCurve(r.label, r.curve.fpr, r.curve.tpr, r.curve.auc)
                  for r in results]
        write_recorded(args.plot, ijb_plot.render_roc(args.target, curves), WRITER, '--plot',
                       args.overwrite)
        written.append(args.plot)
        logging.info('ROC: %s', os.path.abspath(args.plot))
    if args.output_json:
        text = json.dumps(_payload(args, plan, table, results), indent=1, sort_keys=True)
        write_recorded(args.output_json, (text + '\n').encode('utf-8'), WRITER,
                       '--output_json', args.overwrite)
        written.append(args.output_json)
        logging.info('results: %s', os.path.abspath(args.output_json))


def _interrupt(unused_signum, unused_frame):
    raise KeyboardInterrupt()


def main(argv=None):
    """Parses flags, checks inputs, evaluates. Returns the process exit code."""
    args = get_parser().parse_args(argv)
    runtime.init()
    written = []

    def work():
        plan = prepare(args)
        counts = ijb_report.counts(plan.meta)
        logging.info('%s at %s: %d images, %d templates, %d media, %d pairs (%d genuine, %d '
                     'impostor)', args.target, os.path.abspath(args.ijb_root), counts['images'],
                     counts['templates'], counts['media'], counts['pairs'], counts['genuine'],
                     counts['impostor'])
        table = ijb_report.Table(ijb_report.labels_of([m.path for m in plan.models]))
        try:
            results, to_cache = evaluate(args, plan, table)
        except EvaluationFailed as error:
            return cli_flags.fail(PROG, 'evaluation failed: %s' % error, 1)
        write_outputs(args, plan, table, results, to_cache, written)

    # A plain `kill` ends the run as Ctrl-C does (workers terminated, nothing written);
    # signal handlers can only be set from the main thread (tests call main() in others).
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _interrupt) if in_main_thread else None
    try:
        return cli_flags.run_tool(PROG, work, failing='evaluation', writing='the results',
                                  input_errors=(IJBFormatError,))
    except KeyboardInterrupt:
        return cli_flags.fail(PROG, 'interrupted; %s' % (
            'wrote %s only' % ', '.join(written) if written else 'nothing written'), 130)
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)


if __name__ == '__main__':
    sys.exit(main())
