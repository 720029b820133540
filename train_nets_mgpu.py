"""Trains on several devices of one machine: train_nets.py plus in-graph towers.

Every flag of train_nets.py works the same (logging, checkpoints, resume,
validation, and --worker_hosts for several machines); this script only adds
the tower devices. --batch_size is the batch of one step over all towers:
each of the N devices gets batch_size / N images, the towers share one set of
variables (named as in a single-device run, so checkpoints are
interchangeable), and their gradients are averaged (see parallel.py).

Its defaults are those of the original's train_nets_mgpu.py where they differ
from train_nets.py (ORIGINAL_DEFAULTS): depth 50, two GPUs, a 50,000-image
shuffle buffer, a checkpoint every 5,000 steps, lfw and cfp_fp validation, and
its learning rates 0.001, 0.0001, 0.00005, 0.00001.

Typical use:
    python3 train_nets_mgpu.py --num_gpus 2 --batch_size 128 --net_depth 50
    python3 train_nets_mgpu.py --devices /cpu:0,/cpu:1 --batch_size 8 ...   # CPU towers
"""
import logging
import sys

import train_nets

# The original train_nets_mgpu.py's own defaults, where they differ from train_nets.py.
ORIGINAL_DEFAULTS = {
    'net_depth': 50,
    'buffer_size': 50000,
    'ckpt_interval': 5000,
    'eval_datasets': ['lfw', 'cfp_fp'],
    'lr_values': [0.001, 0.0001, 0.00005, 0.00001],
}
ORIGINAL_NUM_GPUS = 2


def device_list(text):
    """argparse type: '/gpu:0,/gpu:1' -> ['/gpu:0', '/gpu:1']."""
    return [name.strip() for name in str(text).split(',') if name.strip()]


def get_parser():
    """train_nets.py's flags plus the tower devices."""
    parser = train_nets.get_parser()
    parser.prog = 'train_nets_mgpu.py'
    parser.description = ('Train L_Resnet_E_IR + ArcFace (InsightFace_TF) on several devices '
                          'of one machine (in-graph towers).')
    towers = parser.add_argument_group('towers', 'several devices in this process; '
                                                 '--batch_size is split evenly over them')
    towers.add_argument('--num_gpus', type=int, default=None,
                        help='towers on /gpu:0 .. /gpu:N-1; None: --devices if given, else '
                             '%d as in the original' % ORIGINAL_NUM_GPUS)
    towers.add_argument('--devices', type=device_list, default=None,
                        help='comma-separated tower devices, e.g. /gpu:0,/gpu:2 or '
                             '/cpu:0,/cpu:1 (logical CPUs); None: --num_gpus')
    parser.set_defaults(**ORIGINAL_DEFAULTS)
    return parser


def complete_args(args):
    """--num_gpus defaults to the original's 2 unless --devices names the towers."""
    if args.num_gpus is None and not args.devices:
        args.num_gpus = ORIGINAL_NUM_GPUS


def main(argv=None):
    """train_nets.main with the tower flags. Returns the process exit code."""
    return train_nets.main(argv, get_parser(), complete_args)


if __name__ == '__main__':
    logging.getLogger().handlers[:] = []
    sys.exit(main())
