"""The original's small-batch tip, measured: batch norm vs batch renorm vs group norm.

Its README suggests batch renormalization or group normalization below a batch of
about 128. This trains the same recipe once per normalisation and seed with
train_nets.py (a subprocess each, one after another) and reports, per run, the
final and best validation accuracy and the training speed (the median of the
log's samples/sec over lines not right after a validation), then each norm's
mean over seeds. The default is `make train-orl`'s recipe (tools/recipes/orl.sh)
at batch 8: 15 epochs (560 steps; the recipe trains 30 at batch 32, but on 2 cores a
batch-8 run gets about a quarter of the throughput), the learning rate scaled
linearly with the batch (0.1 * 8 / 32), warm-up over the same 3 epochs, decays at
about 55% and 80%.

    python test/benchmark/bench_norms.py --data ../shared/data/orl_faces \\
        --output output/bench/norms_orl_b8.json

About 5 minutes per run on 2 CPU cores (group norm is slower: it has no fused
kernel). Data: a folder with train.rec/train.idx (converted once into
--work/tfrecords) or with TFRecords + manifest.json, and --val.bin.
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time

_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NORMS = ('batch', 'batch_renorm', 'group')
ACCURACY = re.compile(r'\[(\w+)\]\[(\d+)\]Accuracy-Flip: (\d\.\d+)')
SPEED = re.compile(r'total_step (\d+), .* time ([\d.]+) samples/sec')


def get_parser():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--data', required=True,
                        help='folder with train.rec/train.idx or TFRecords + manifest.json')
    parser.add_argument('--val', default='orl_val', help='verification .bin in --data')
    parser.add_argument('--work', default='output/bench/norms', help='runs and TFRecords')
    parser.add_argument('--norms', default=','.join(NORMS))
    parser.add_argument('--seeds', default='0,1')
    parser.add_argument('--batch_size', type=int, default=8)
    parser.add_argument('--steps', type=int, default=560)
    parser.add_argument('--validate_interval', type=int, default=40)
    parser.add_argument('--lr_values', default='0.025,0.0025,0.00025')
    parser.add_argument('--lr_steps', default='5,7',
                        help='batch-512 iterations (x int(512/batch)): steps 320 and 448')
    parser.add_argument('--train_flags', default='--net_depth 18 --net_input_size 56,56 '
                        '--net_width standard --augment True --random_erase 0.5 '
                        '--warmup_steps 120 --margin_s 32 --margin_m 0.3 --weight_decay 5e-3 '
                        '--buffer_size 300 --show_info_interval 10 --summary_interval 1000',
                        help='the rest of orl.sh\'s flags (warm-up scaled to the batch)')
    parser.add_argument('--output', default=None, help='JSON file for the results')
    return parser


def _records(args):
    """The TFRecords folder: --data itself, or a conversion of its train.rec, made once."""
    if os.path.isfile(os.path.join(args.data, 'manifest.json')):
        return args.data
    records = os.path.join(args.work, 'tfrecords')
    if not os.path.isfile(os.path.join(records, 'manifest.json')):
        subprocess.check_call([sys.executable, 'data/mx2tfrecords.py', '--bin_path',
                               os.path.join(args.data, 'train.rec'), '--idx_path',
                               os.path.join(args.data, 'train.idx'), '--tfrecords_file_path',
                               records, '--overwrite', '--no_progress'], cwd=_ROOT)
    return records


def run(args, records, norm, seed):
    """One training run; returns its record."""
    out = os.path.join(args.work, '%s_seed%d' % (norm, seed))
    command = [sys.executable, 'train_nets.py', '--tfrecords_file_path', records,
               '--eval_db_path', args.data, '--eval_datasets', args.val,
               '--batch_size', str(args.batch_size), '--max_steps', str(args.steps),
               '--validate_interval', str(args.validate_interval),
               '--ckpt_interval', str(args.steps), '--saver_maxkeep', '1',
               '--lr_values', args.lr_values, '--lr_steps', args.lr_steps, '--seed', str(seed),
               '--norm', norm, '--ckpt_path', os.path.join(out, 'ckpt'),
               '--summary_path', os.path.join(out, 'summary'),
               '--log_file_path', os.path.join(out, 'logs')] + args.train_flags.split()
    start = time.time()
    result = subprocess.run(command, cwd=_ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, universal_newlines=True)
    wall = time.time() - start
    if result.returncode != 0:
        raise RuntimeError('%s seed %d failed:\n%s' % (norm, seed, result.stdout[-3000:]))
    record = summarize(result.stdout, args.val, _show_info_interval(args.train_flags))
    record.update(norm=norm, seed=seed, wall_s=wall)
    return record


def _show_info_interval(train_flags):
    words = train_flags.split()
    return int(words[words.index('--show_info_interval') + 1]) \
        if '--show_info_interval' in words else 20


def summarize(log, val, show_info_interval):
    """Final and best accuracy on `val` and the training speed, from a run's log.

    The speed is the median samples/sec of the training lines, leaving out each
    line whose interval holds a validation (it times the validation too).
    """
    accuracy = [(int(step), float(value)) for name, step, value in ACCURACY.findall(log)
                if name == val]
    validated = set(step for step, _ in accuracy)
    speeds = [float(speed) for step, speed in SPEED.findall(log)
              if not any(0 < int(step) - v <= show_info_interval for v in validated)]
    best_step, best = max(accuracy, key=lambda item: (item[1], -item[0]))
    return {'final': accuracy[-1][1], 'final_step': accuracy[-1][0], 'best': best,
            'best_step': best_step, 'images_per_s': statistics.median(speeds), 'curve': accuracy}


def main(argv=None):
    args = get_parser().parse_args(argv)
    args.data = os.path.abspath(args.data)
    args.work = os.path.join(_ROOT, args.work)  # an absolute --work stays as it is
    os.makedirs(args.work, exist_ok=True)
    records = _records(args)
    runs = []
    for norm in args.norms.split(','):
        for seed in [int(s) for s in args.seeds.split(',')]:
            record = run(args, records, norm, seed)
            runs.append(record)
            print('%-13s seed %d  final %.4f  best %.4f (step %d)  %.1f images/s  %.0f s'
                  % (norm, seed, record['final'], record['best'], record['best_step'],
                     record['images_per_s'], record['wall_s']), flush=True)
    summary = {}
    for norm in args.norms.split(','):
        mine = [r for r in runs if r['norm'] == norm]
        summary[norm] = {key: statistics.mean(r[key] for r in mine)
                         for key in ('final', 'best', 'images_per_s')}
        print('%-13s mean  final %.4f  best %.4f  %.1f images/s'
              % (norm, summary[norm]['final'], summary[norm]['best'],
                 summary[norm]['images_per_s']))
    if args.output:
        with open(args.output, 'w') as f:
            json.dump({'arguments': vars(args), 'runs': runs, 'mean': summary}, f, indent=1)
    return 0


if __name__ == '__main__':
    sys.exit(main())
