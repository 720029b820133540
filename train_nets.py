"""Trains L_Resnet_E_IR with a margin softmax head (ArcFace by default).

The original InsightFace_TF's training script, with typed flags, the input
pipeline feeding the graph directly, one global_step per iteration, resume
from the latest checkpoint, and validation every --validate_interval steps.

Typical use (the README's demo does all of it on a synthetic dataset):
    python3 data/mx2tfrecords.py --bin_path faces_webface/train.rec \
        --idx_path faces_webface/train.idx --tfrecords_file_path ./datasets/tfrecords_webface
    python3 train_nets.py --net_depth 50 --eval_db_path faces_webface --eval_datasets lfw
"""
import argparse
import logging
import math
import sys

# First: silences TensorFlow's logs before anything below imports it.
from data import quiet  # noqa: I100
from devices import distributed, npu_options, runtime
from evaluation import ijb_embed, ijb_meta
from losses import face_losses
from nets.L_Resnet_E_IR import DEFAULT_KEEP_PROB, NORMS, VARIANTS, all_depths, width_for
from training import cli_flags

DEFAULT_LR_STEPS = '40000,60000,80000'
DEFAULT_LR_VALUES = '0.001,0.0005,0.0003,0.0001'  # the original's train_nets.py


def get_parser():
    """The training flags, grouped as in the original (defaults are the original's)."""
    # One-line flag errors: the usage of some 60 flags would bury the one that is wrong.
    parser = cli_flags.OneLineParser(
        prog='train_nets.py',
        description='Train L_Resnet_E_IR + ArcFace (InsightFace_TF) on TFRecords.',
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    data = parser.add_argument_group('data')
    data.add_argument('--tfrecords_file_path', default='./datasets/tfrecords_webface',
                      help='folder of TFRecord shards + manifest.json written by '
                           'data/mx2tfrecords.py')
    data.add_argument('--image_size', type=cli_flags.image_size, default=(112, 112),
                      help='height,width of the training images; must match the data')
    data.add_argument('--buffer_size', type=cli_flags.positive_int, default=10000,
                      help='shuffle buffer, in images')
    data.add_argument('--num_output', type=cli_flags.positive_int, default=None,
                      help='number of identities of the margin head; default: from the '
                           'dataset manifest')
    data.add_argument('--augment', type=cli_flags.str2bool, default=False,
                      help='random translation and brightness/contrast jitter on top of the '
                           'random flip (the original only flips); for small datasets')
    data.add_argument('--augment_strength', type=cli_flags.bounded_float(0.0, low_open=True),
                      default=1.0,
                      help='scales every --augment range (1: shifts up to 1/14 of the width, '
                           'crops of 90-100%% of the side, brightness +-0.1, contrast x0.8-1.2)')
    data.add_argument('--random_erase', type=cli_flags.bounded_float(0.0, 1.0, high_open=False),
                      default=0.0,
                      help='random erasing: blank one rectangle per training image (mean '
                           'colour), each side up to this fraction of the image and at least '
                           'a fifth of it; 0: off. With or without --augment; for small datasets')
    data.add_argument('--max_bad_records', type=cli_flags.non_negative_int, default=100,
                      help='training records that cannot be read or decoded are skipped and '
                           'named in the log (shard, record); more than this many distinct '
                           'ones stop training with a checkpoint (exit 1); 0: stop at the first')
    data.add_argument('--seed', type=int, default=None,
                      help='graph-level random seed; None: not reproducible')

    model = parser.add_argument_group('model')
    model.add_argument('--net_depth', type=int, default=100, choices=all_depths(),
                       help='L_Resnet_E_IR depth (standard width: 18, 34, 50, 100, 152; '
                            'wide: 50, 101, 152)')
    model.add_argument('--norm', default='batch', choices=list(NORMS),
                       help='normalisation: batch (the original\'s train_nets.py), group '
                            '(its L_Resnet_E_IR_GBN.py, model A) or batch_renorm '
                            '(L_Resnet_E_IR_RBN.py); its README suggests the last two for '
                            'batches below about 128')
    model.add_argument('--net_width', default=None, choices=sorted(VARIANTS),
                       help='standard: every unit as wide as its block (the original\'s '
                            'L_Resnet_E_IR_fix_issue9.py); wide: second convolution and '
                            'shortcut 4x wider (its L_Resnet_E_IR.py, _GBN.py, _RBN.py); '
                            'default: the width of the original\'s file for --norm (batch: '
                            'standard; group, batch_renorm: wide)')
    cli_flags.add_net_input_size(model)
    model.add_argument('--keep_prob', default=DEFAULT_KEEP_PROB,
                       type=cli_flags.bounded_float(0.0, 1.0, low_open=True, high_open=False),
                       help='dropout keep probability before the embedding layer')
    model.add_argument('--loss_type', default='arcface', choices=face_losses.LOSS_TYPES,
                       help='margin head')
    # Ranges: what the heads mean, not what the original checked (it checked nothing).
    model.add_argument('--margin_s', type=cli_flags.bounded_float(0.0, low_open=True),
                       default=None,
                       help='logit scale s > 0; default 64 (arcface, combine) or 30 (cosineface)')
    model.add_argument('--margin_m', type=cli_flags.bounded_float(0.0, math.pi), default=None,
                       help='margin m in [0, pi) (0: none); default 0.5 (arcface, an angle in '
                            'radians) or 0.4 (cosineface, subtracted from the cosine)')
    model.add_argument('--combine_margins', type=cli_flags.combine_margins,
                       default=[1.0, 0.3, 0.2],
                       help='m1,m2,m3 of the combine head: s*(cos(m1*theta+m2)-m3), which must '
                            'not exceed s*cos(theta) for theta in [0, 90] degrees')
    model.add_argument('--partial_fc', type=cli_flags.str2bool, default=False,
                       help='Partial FC: the class centres split in one block per training '
                            'device (each tower of train_nets_mgpu.py), every block scoring '
                            'the whole batch (docs/partial_fc.md); False: the original\'s '
                            'head, whole on every device')
    model.add_argument('--sample_rate', default=1.0,
                       type=cli_flags.bounded_float(0.0, 1.0, low_open=True, high_open=False),
                       help='with --partial_fc: the share of each block\'s classes that take '
                            'part in a step, every positive among them (1: all)')

    optim = parser.add_argument_group('optimization')
    optim.add_argument('--batch_size', type=cli_flags.positive_int, default=32,
                       help='images per step')
    optim.add_argument('--epoch', type=cli_flags.positive_int, default=200, help='epochs to train')
    optim.add_argument('--max_steps', type=cli_flags.positive_int, default=None,
                       help='stop after this global step (demos, benchmarks); None: run '
                            'all epochs')
    # 0 is plain SGD; 1 never forgets a gradient and above 1 the updates grow without bound.
    optim.add_argument('--momentum', type=cli_flags.bounded_float(0.0, 1.0), default=0.9,
                       help='SGD momentum in [0, 1)')
    optim.add_argument('--weight_deacy', '--weight_decay', dest='weight_decay',
                       type=cli_flags.bounded_float(0.0), default=5e-4,
                       help='L2 weight decay >= 0 (0: none; the original spelling is kept)')
    optim.add_argument('--lr_steps', type=cli_flags.int_list,
                       default=cli_flags.int_list(DEFAULT_LR_STEPS),
                       help='learning-rate boundaries in iterations for batch 512, '
                            'multiplied by int(512 / batch of one step over all devices) as '
                            'in the original (see docs/training.md)')
    optim.add_argument('--lr_values', type=cli_flags.learning_rates,
                       default=cli_flags.learning_rates(DEFAULT_LR_VALUES),
                       help='learning rates >= 0, one more than --lr_steps; a 0 freezes the '
                            'weights in its phase, and at least one must be positive')
    optim.add_argument('--clip_gradient_norm', type=cli_flags.bounded_float(0.0, low_open=True),
                       default=None,
                       help='clip the backbone\'s gradients to this global norm (insightface\'s '
                            'PyTorch trainer uses 5); None: off, as the original')
    optim.add_argument('--warmup_steps', type=cli_flags.non_negative_int, default=0,
                       help='linear learning-rate warm-up over this many iterations; 0: off')

    ckpt = parser.add_argument_group('checkpoints and logs')
    ckpt.add_argument('--summary_path', default='./output/summary', help='TensorBoard folder')
    ckpt.add_argument('--ckpt_path', default='./output/ckpt',
                      help='checkpoint folder; training resumes from its latest checkpoint')
    ckpt.add_argument('--log_file_path', default='./output/logs', help='log folder')
    ckpt.add_argument('--saver_maxkeep', type=cli_flags.positive_int, default=100,
                      help='checkpoints kept')
    ckpt.add_argument('--summary_interval', type=cli_flags.positive_int, default=300,
                      help='steps between summaries')
    ckpt.add_argument('--summary_histograms', type=cli_flags.str2bool, default=True,
                      help='with each summary, histograms of every gradient and trainable '
                           'variable, as the original (fetched to the host; see docs/training.md)')
    ckpt.add_argument('--ckpt_interval', type=cli_flags.positive_int, default=10000,
                      help='steps between checkpoints')
    ckpt.add_argument('--validate_interval', type=cli_flags.positive_int, default=2000,
                      help='steps between validations')
    ckpt.add_argument('--show_info_interval', type=cli_flags.positive_int, default=20,
                      help='steps between log lines')
    ckpt.add_argument('--log_device_mapping', type=cli_flags.str2bool, default=False,
                      help='log the device of every op')

    evals = parser.add_argument_group('validation')
    evals.add_argument('--eval_datasets', nargs='+', default=['lfw'],
                       help='names of .bin verification sets in --eval_db_path')
    evals.add_argument('--eval_db_path', default='./datasets/faces_ms1m_112x112',
                       help='folder holding the .bin verification sets')
    evals.add_argument('--eval_batch_size', type=cli_flags.positive_int, default=None,
                       help='images per validation batch; default: --batch_size')
    evals.add_argument('--eval_ijb', default=None,
                       help='also validate on IJB-B/IJB-C 1:1 verification (TAR@FAR, as '
                            'eval_ijb.py): insightface\'s release folder holding loose_crop/ '
                            'and meta/ (docs/ijb.md); None: off')
    evals.add_argument('--eval_ijb_target', default='IJBC', choices=ijb_meta.TARGETS,
                       help='which meta files of --eval_ijb: meta/ijbc_*.txt or meta/ijbb_*.txt')
    evals.add_argument('--eval_ijb_workers', type=cli_flags.non_negative_int,
                       default=ijb_embed.default_workers(),
                       help='processes decoding and aligning --eval_ijb\'s images at each '
                            'validation; 0: in the training process')
    evals.add_argument('--best_metric', default=None,
                       help='the validation set whose score chooses <ckpt_path>/best: a name '
                            'of --eval_datasets (its accuracy) or ijbc / ijbb (TAR at FAR=1e-4 '
                            'of --eval_ijb); None: the first of --eval_datasets')

    device = parser.add_argument_group('device')
    device.add_argument('--device', default='auto', choices=runtime.DEVICES,
                        help='auto: NPU if npu_bridge imports, else GPU, else CPU')
    device.add_argument('--precision_mode', default='allow_mix_precision',
                        choices=npu_options.PRECISION_MODES,
                        help='NPU precision mode; %s compute in float16 and turn on loss '
                             'scaling' % ', '.join(npu_options.FP16_PRECISION_MODES))
    device.add_argument('--iterations_per_loop', type=cli_flags.positive_int, default=1,
                        help='NPU loop sinking: steps the device runs per sess.run; logs, '
                             'summaries, validation and checkpoints happen between loops, so '
                             '--validate_interval, --ckpt_interval and --max_steps must be '
                             'multiples of it (1 off the NPU)')
    device.add_argument('--graph_memory_max_size', type=cli_flags.positive_int, default=None,
                        help='NPU graph memory in bytes; None: CANN decides')
    device.add_argument('--variable_memory_max_size', type=cli_flags.positive_int, default=None,
                        help='NPU variable memory in bytes; None: CANN decides')
    device.add_argument('--num_threads', type=cli_flags.positive_int, default=None,
                        help='CPU threads per op pool; None: TensorFlow decides')

    scaling = parser.add_argument_group('mixed precision and loss scaling')
    scaling.add_argument('--mixed_precision', default='auto', choices=runtime.MIXED_PRECISION,
                         help='auto: loss scaling on the NPU when --precision_mode computes in '
                              'float16, float32 on a GPU, bfloat16 on a CPU that computes it '
                              '(oneDNN; margin head and losses float32); on: the same on the NPU, '
                              'TensorFlow\'s float16 graph rewrite with loss scaling on a GPU, '
                              'bfloat16 on the CPU or a one-line refusal; off: no loss scaling, '
                              'float32 on the CPU')
    scaling.add_argument('--loss_scale', type=cli_flags.loss_scale, default='dynamic',
                         help='dynamic (ExponentialUpdateLossScaleManager on the NPU, '
                              'DynamicLossScale on a GPU) or a fixed number')
    scaling.add_argument('--init_loss_scale', type=cli_flags.bounded_float(0.0, low_open=True),
                         default=None,
                         help='first dynamic loss scale; None: 2**32 on the NPU (Huawei), '
                              '2**15 on a GPU (TensorFlow)')
    scaling.add_argument('--incr_every_n_steps', type=cli_flags.positive_int, default=1000,
                         help='double the dynamic scale after this many finite steps')
    scaling.add_argument('--decr_every_n_nan_or_inf', type=cli_flags.positive_int, default=2,
                         help='lower the dynamic scale after this many overflows (NPU; a GPU '
                              'lowers it at every overflow)')
    scaling.add_argument('--decr_ratio', type=cli_flags.bounded_float(0.0, 1.0, low_open=True),
                         default=0.5,
                         help='factor lowering the dynamic scale (a GPU raises it by 1/ratio)')
    scaling.add_argument('--max_consecutive_overflows', type=cli_flags.positive_int, default=100,
                         help='stop (exit 1) after this many overflowed steps in a row; the '
                              'scale falls from 2**32 into float16 range in about 34')

    # ---- Cluster: several worker processes, TensorFlow's gRPC runtime (distributed.py) ----
    cluster = parser.add_argument_group(
        'cluster', 'several machines on GPUs/CPUs; also read from TF_CONFIG when these are '
                   'absent; --batch_size is then per worker')
    cluster.add_argument('--worker_hosts', default=None,
                         help='comma-separated host:port of every worker, the same list on '
                              'each; None: a single process (or TF_CONFIG)')
    cluster.add_argument('--task_index', type=int, default=None,
                         help='this worker\'s index in --worker_hosts; 0 is the chief, which '
                              'writes checkpoints, summaries and validation logs')
    cluster.add_argument('--peer_timeout', type=cli_flags.positive_int,
                         default=distributed.PEER_TIMEOUT_SECONDS,
                         help='seconds a worker may stop answering before the others stop '
                              '(exit 1; the chief keeps its last checkpoint); HCCL ranks on '
                              'Ascend: HCCL_EXEC_TIMEOUT (docs/distributed.md)')
    # The tower flags of train_nets_mgpu.py, which adds them; here: one device.
    parser.set_defaults(num_gpus=None, devices=None)
    quiet.add_flag(parser)
    return parser


def check_args(args):
    """What the parser's types cannot check alone: flags that must agree. Returns messages."""
    problems = []
    width = width_for(args.norm, args.net_width)
    depths = sorted(VARIANTS[width].units_per_block)
    if args.net_depth not in depths:
        problems.append('--net_depth %d: the %s network%s has depths %s; pass one of them%s'
                        % (args.net_depth, width,
                           ' (the width of --norm %s, as the original\'s file for it)'
                           % args.norm if args.norm != 'batch' else '',
                           ', '.join(str(d) for d in depths),
                           '' if width == 'standard' else
                           ', or --net_width standard'))
    size_problem = cli_flags.check_net_input_size(args.net_input_size, args.image_size)
    if size_problem:
        problems.append(size_problem)
    if len(args.lr_values) != len(args.lr_steps) + 1:
        problems.append('--lr_values has %d values for %d --lr_steps; expected one more value '
                        'than steps' % (len(args.lr_values), len(args.lr_steps)))
    if list(args.lr_steps) != sorted(set(args.lr_steps)) or any(s < 1 for s in args.lr_steps):
        problems.append('--lr_steps %s: expected increasing positive integers' % (args.lr_steps,))
    metric_problem = best_metric_problem(args.best_metric, args.eval_datasets,
                                         args.eval_ijb_target if args.eval_ijb else None)
    if metric_problem:
        problems.append(metric_problem)
    loop = args.iterations_per_loop
    off = ['--%s %d' % (flag, getattr(args, flag))
           for flag in ('validate_interval', 'ckpt_interval', 'max_steps')
           if getattr(args, flag) is not None and getattr(args, flag) % loop]
    if off:
        problems.append('%s %s not a multiple of --iterations_per_loop %d: each sess.run trains '
                        '%d steps on the device' % (', '.join(off), 'is' if len(off) == 1
                                                    else 'are', loop, loop))
    return problems


def best_metric_problem(best_metric, eval_datasets, ijb_target):
    """Why --best_metric names no validation set of this run, or None."""
    if best_metric is None:
        return None
    names = list(eval_datasets) + ([ijb_target.lower()] if ijb_target else [])
    if best_metric in names:
        return None
    return ('--best_metric %s: expected one of this run\'s validation sets: %s (%s)'
            % (best_metric, ', '.join(names), '--eval_datasets and --eval_ijb' if ijb_target
               else '--eval_datasets; ijbc or ijbb need --eval_ijb'))


def main(argv=None, parser=None, complete_args=None):
    """Parses flags, checks inputs, trains. Returns the process exit code.

    Args:
      argv: command-line arguments; None: sys.argv[1:].
      parser: None for get_parser(); train_nets_mgpu.py passes its extension.
      complete_args: None, or fn(args) filling defaults that depend on other flags.
    """
    parser = parser or get_parser()
    args = parser.parse_args(argv)
    if complete_args is not None:
        complete_args(args)
    problems = check_args(args)
    if problems:
        for problem in problems:
            cli_flags.fail(parser.prog, problem, 2)
        return 2
    runtime.init()
    from training import setup, trainer  # after runtime.init(): builds graphs in graph mode
    return cli_flags.run_tool(parser.prog, lambda: trainer.train(setup.prepare(args)),
                              failing='training', writing='the training outputs')

if __name__ == '__main__':
    logging.getLogger().handlers[:] = []
    sys.exit(main())
