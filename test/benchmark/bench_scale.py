"""`make bench-scale`: the margin head at 100k-1M+ classes, data-parallel vs Partial FC.

Each case is a real training run: `train_nets.py` as two TensorFlow workers on
127.0.0.1 (two processes on this machine), depth 18 on 56x56 images of a small
synthetic set, so that the head dominates, and
`--num_output` setting the number of classes. Layouts:

  data_parallel   today's head: every process holds all classes, gradients all-reduced
  pfc_1.0         --partial_fc True --sample_rate 1 (each process holds half the classes)
  pfc_0.1         --partial_fc True --sample_rate 0.1
  pfc_1.0_1p      --partial_fc True on one process (the head memory of N = 1)

Per process: peak resident memory (VmHWM, polled from /proc while it runs) and the
images/s of its logged steps after the first few; the global rate is the sum. A case
whose estimated memory exceeds what this machine has free is not started and is
reported as not fitting, with the estimate. Writes output/bench/scale.json and
scale.md. Memory: a case may use up to ~95% of the free memory (say so when sharing
the machine).

    python test/benchmark/bench_scale.py          # 100k, 300k (about the most the data-
                                                  # parallel head fits here) and 1M classes
    python test/benchmark/bench_scale.py --classes 100000 --steps 6   # a quick look
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

_HERE = os.path.dirname(os.path.abspath(__file__))
_ROOT = os.path.dirname(os.path.dirname(_HERE))
sys.path.insert(0, _ROOT)
sys.path.insert(0, os.path.dirname(_HERE))  # test/: its helpers

from bench_norms import SPEED  # noqa: E402  (the training log's speed, one copy)
from machine import proc_kib  # noqa: E402

EMBEDDING = 512
LAYOUTS = {  # name: (processes, extra flags)
    'data_parallel': (2, []),
    'pfc_1.0': (2, ['--partial_fc', 'True']),
    'pfc_0.1': (2, ['--partial_fc', 'True', '--sample_rate', '0.1']),
    'pfc_1.0_1p': (1, ['--partial_fc', 'True']),
}
BACKBONE_GB = 2.0  # depth 18 at 56x56, its optimizer, TensorFlow itself (measured)


def head_gb(layout, classes):
    """Estimated head memory of one process, GB, from the peaks measured here (2026-12-07):
    about 10.5 copies of a block for Partial FC (centres, Momentum, their dense gradient,
    the optimizer's and the gradient graph's temporaries; 12.2 GB per process at 1M classes
    on two processes, R = 1) and 17.5 of the whole head for data parallelism (also the
    all-reduce's flat copies; 12.8 GB at 300k)."""
    processes, extra = LAYOUTS[layout]
    held = classes if layout == 'data_parallel' else classes / float(processes)
    copies = 17.5 if layout == 'data_parallel' else 10.5
    return copies * held * EMBEDDING * 4 / 1e9


def free_gb():
    return (proc_kib('/proc/meminfo', 'MemAvailable') or 0) / 1e6


def make_data(folder):
    """A small synthetic set of 56x56 images and its TFRecords."""
    from data import mx2tfrecords
    from data.make_synthetic_dataset import make_dataset
    raw = os.path.join(folder, 'raw')
    if not os.path.isdir(os.path.join(folder, 'tfrecords')):
        make_dataset(raw, num_identities=50, images_per_identity=8, num_val_identities=4,
                     num_val_pairs=20, image_size=(56, 56), seed=3)
        mx2tfrecords.convert(os.path.join(raw, 'train.rec'), os.path.join(raw, 'train.idx'),
                             os.path.join(folder, 'tfrecords'), num_shards=2, progress=False)
    return raw, os.path.join(folder, 'tfrecords')


def peak_rss_gb(pid):
    kib = proc_kib('/proc/%d/status' % pid, 'VmHWM')
    return kib / 1e6 if kib else None


def images_per_s(log_text, warmup):
    """The median samples/sec of one process's logged steps, the first `warmup` left out
    (graph optimisation and the first allocations); None when it logged no more."""
    rates = [float(rate) for _, rate in SPEED.findall(log_text)][warmup:]
    return sorted(rates)[len(rates) // 2] if rates else None


def run_case(layout, classes, args, data, work):
    """Trains one case; returns its result dict."""
    processes, extra = LAYOUTS[layout]
    estimate = processes * (head_gb(layout, classes) + BACKBONE_GB)
    result = {'layout': layout, 'classes': classes, 'processes': processes,
              'estimated_gb_per_process': round(estimate / processes, 2)}
    free = free_gb()
    if estimate > 0.95 * free:
        result['skipped'] = ('does not fit: ~%.1f GB per process estimated, %.1f GB free'
                             % (estimate / processes, free))
        return result
    raw, records = data
    out = os.path.join(work, '%s_%d' % (layout, classes))
    from test_distributed import free_ports
    hosts = ','.join('127.0.0.1:%d' % port for port in free_ports(processes))
    procs = []
    for rank in range(processes):
        command = [sys.executable, os.path.join(_ROOT, 'train_nets.py'),
                   '--tfrecords_file_path', records, '--eval_db_path', raw,
                   '--eval_datasets', 'lfw', '--image_size', '56,56', '--net_depth', '18',
                   '--num_output', str(classes), '--batch_size', str(args.batch_size),
                   '--max_steps', str(args.steps), '--show_info_interval', '1',
                   '--validate_interval', '1000000', '--ckpt_interval', '1000000',
                   '--device', 'cpu', '--seed', '1', '--ckpt_path', os.path.join(out, 'ckpt'),
                   '--summary_path', os.path.join(out, 'summary'),
                   '--log_file_path', os.path.join(out, 'logs')] + extra
        if processes > 1:
            command += ['--worker_hosts', hosts, '--task_index', str(rank)]
        log = open(os.path.join(work, '%s_%d_%d.log' % (layout, classes, rank)), 'w+')
        procs.append((subprocess.Popen(command, cwd=_ROOT, stdout=log,
                                       stderr=subprocess.STDOUT), log))
    peaks = [0.0] * processes
    started = time.time()
    while any(proc.poll() is None for proc, _ in procs):
        for rank, (proc, _) in enumerate(procs):
            peak = peak_rss_gb(proc.pid)
            if peak:
                peaks[rank] = max(peaks[rank], peak)
        time.sleep(0.5)
    speeds, failed = [], []
    for rank, (proc, log) in enumerate(procs):
        log.seek(0)
        text = log.read()
        log.close()
        if proc.returncode != 0:
            failed.append('rank %d exit %d: %s' % (rank, proc.returncode,
                                                   text.strip().splitlines()[-1:]))
        speeds.append(images_per_s(text, args.warmup))
    shutil.rmtree(out, ignore_errors=True)  # a 1M-class checkpoint is gigabytes
    result.update({'peak_gb_per_process': [round(p, 2) for p in peaks],
                   'images_per_s': round(sum(s for s in speeds if s), 1) if all(speeds) else None,
                   'seconds': round(time.time() - started, 1)})
    if failed:
        result['failed'] = '; '.join(failed)
    return result


def report(results, machine):
    lines = ['# Partial FC at scale (make bench-scale)', '',
             '%s (%s); TensorFlow %s. Depth 18 at 56x56, batch %s per process, 2 TensorFlow '
             'workers on one machine unless noted; the backbone in bfloat16 where the CPU '
             'computes it (--mixed_precision auto), the head in float32.'
             % (machine['cpu'], ' '.join(machine['cpu_features']), machine['tensorflow'],
                machine['batch_size']), '',
             '| classes | layout | processes | peak memory per process (GB) | images/s (all '
             'processes) |', '|---|---|---|---|---|']
    for r in results:
        if 'skipped' in r:
            memory, speed = r['skipped'], '-'
        else:
            memory = ', '.join('%.2f' % p for p in r['peak_gb_per_process'])
            speed = '%.1f' % r['images_per_s'] if r.get('images_per_s') else r.get('failed', '-')
        lines.append('| {:,} | {} | {} | {} | {} |'.format(r['classes'], r['layout'],
                                                          r['processes'], memory, speed))
    return '\n'.join(lines) + '\n'


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--classes', default='100000,300000,1000000',
                        help='comma-separated numbers of classes')
    parser.add_argument('--layouts', default=','.join(LAYOUTS))
    parser.add_argument('--steps', type=int, default=12)
    parser.add_argument('--warmup', type=int, default=3, help='logged steps not timed')
    parser.add_argument('--batch_size', type=int, default=16)
    parser.add_argument('--output_dir', default=os.path.join(_ROOT, 'output', 'bench'))
    args = parser.parse_args(argv)
    import machine as machine_info
    machine = dict(machine_info.describe(), batch_size=args.batch_size)
    os.makedirs(args.output_dir, exist_ok=True)
    work = tempfile.mkdtemp(prefix='bench_scale_', dir=args.output_dir)
    data = make_data(os.path.join(args.output_dir, 'scale_data'))
    results = []
    for classes in [int(c) for c in args.classes.split(',')]:
        for layout in args.layouts.split(','):
            result = run_case(layout, classes, args, data, work)
            print(json.dumps(result), flush=True)
            results.append(result)
    with open(os.path.join(args.output_dir, 'scale.json'), 'w') as out:
        json.dump({'machine': machine, 'results': results}, out, indent=2)
    text = report(results, machine)
    with open(os.path.join(args.output_dir, 'scale.md'), 'w') as out:
        out.write(text)
    print(text)
    if any('failed' in r for r in results):
        print('logs of every process: %s' % work)
        return 1
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
