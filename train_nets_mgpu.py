"""Trains on several devices of one machine: train_nets.py plus in-graph towers.

Every flag of train_nets.py works the same (logging, checkpoints, resume,
validation, and --worker_hosts for several machines); this script only adds
the tower devices. --batch_size is the batch of one step over all towers:
each of the N devices gets batch_size / N images, the towers share one set of
variables (named as in a single-device run, so checkpoints are
interchangeable), and their gradients are averaged (see parallel.py).

Typical use:
    python3 train_nets_mgpu.py --num_gpus 2 --batch_size 128 --net_depth 50
    python3 train_nets_mgpu.py --devices /cpu:0,/cpu:1 --batch_size 8 ...   # CPU towers
"""
import logging
import sys

import train_nets


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
                        help='towers on /gpu:0 .. /gpu:N-1; None: see --devices')
    towers.add_argument('--devices', type=device_list, default=None,
                        help='comma-separated tower devices, e.g. /gpu:0,/gpu:2 or '
                             '/cpu:0,/cpu:1 (logical CPUs); None: --num_gpus, else one '
                             'device as train_nets.py')
    return parser


def main(argv=None):
    """train_nets.main with the tower flags. Returns the process exit code."""
    return train_nets.main(argv, get_parser())


if __name__ == '__main__':
    logging.getLogger().handlers[:] = []
    sys.exit(main())
