"""`make bench`: measures this project on this machine; writes JSON and a Markdown table.

Runs each measurement of sections.py in its own process with this Python (so
the TensorFlow of the calling environment is measured), then writes
<output_dir>/bench_tf<version>.json and .md and prints the table. With
--report it instead renders several such JSON files side by side (Makefile:
TF 2.x next to TF 1.15).

    python test/benchmark/bench.py --quick            # about 4 minutes on 2 cores
    python test/benchmark/bench.py                    # full: longer, steadier figures
    python test/benchmark/bench.py --report output/bench/bench_tf*.json
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

_HERE = os.path.dirname(os.path.abspath(__file__))
_ROOT = os.path.dirname(os.path.dirname(_HERE))

# Section runs per mode: (label, section, options). Sizes are data, not code.
MODES = {
    'quick': [
        ('data', 'data', ['--num_identities', '50', '--images_per_identity', '8',
                          '--eval_pairs', '160', '--pipeline_batches', '30', '--warmup', '5',
                          '--conversion_images', '20000',
                          '--repeats', '3', '--matmul_sizes', '1024,2048',
                          '--matmul_seconds', '1']),
        ('train_d50', 'train', ['--depth', '50', '--warmup', '0', '--steps', '2',
                                '--inference_batches', '2']),
        ('train_d18', 'train', ['--depth', '18', '--warmup', '1', '--steps', '3',
                                '--inference_batches', '3']),
        ('train_d50_bfloat16', 'train', ['--depth', '50', '--warmup', '1', '--steps', '2',
                                         '--inference_batches', '2', '--cpu_bfloat16']),
        ('eval_memory', 'eval_memory', ['--depth', '18']),
        ('export_d18', 'export', ['--depth', '18', '--inference_batches', '3']),
        ('export_d50', 'export', ['--depth', '50', '--inference_batches', '2']),
    ],
    'full': [
        ('data', 'data', ['--num_identities', '500', '--images_per_identity', '8',
                          '--eval_pairs', '6000', '--pipeline_batches', '200',
                          '--conversion_images', '100000',
                          '--warmup', '20', '--repeats', '7', '--matmul_sizes', '1024,2048,4096',
                          '--matmul_seconds', '3']),
        ('train_d50', 'train', ['--depth', '50', '--warmup', '3', '--steps', '20',
                                '--inference_batches', '10']),
        ('train_d18', 'train', ['--depth', '18', '--warmup', '3', '--steps', '30',
                                '--inference_batches', '10']),
        ('train_d50_bfloat16', 'train', ['--depth', '50', '--warmup', '3', '--steps', '20',
                                         '--inference_batches', '10', '--cpu_bfloat16']),
        ('eval_memory', 'eval_memory', ['--depth', '18']),
        ('export_d18', 'export', ['--depth', '18', '--inference_batches', '20']),
        ('export_d50', 'export', ['--depth', '50', '--inference_batches', '10']),
    ],
}


def run_sections(mode, work_dir, device=None):
    results = {}
    for label, section, options in MODES[mode]:
        out = os.path.join(work_dir, label + '.json')
        command = [sys.executable, os.path.join(_HERE, 'sections.py'), section,
                   '--work_dir', work_dir, '--json', out] + options
        if device and section == 'train':
            command += ['--device', device]
        print('[bench] %s ...' % label, file=sys.stderr, flush=True)
        start = time.time()
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL=os.environ.get('TF_CPP_MIN_LOG_LEVEL', '2'))
        completed = subprocess.run(command, cwd=_ROOT, env=env, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, universal_newlines=True)
        if completed.returncode != 0:
            print(completed.stdout[-4000:], file=sys.stderr)
            raise SystemExit('bench: section %s failed (exit %d); its output is above'
                             % (label, completed.returncode))
        with open(out) as result:
            results[label] = json.load(result)
        print('[bench] %s done in %.0f s' % (label, time.time() - start), file=sys.stderr,
              flush=True)
    return results


def _fraction(results, label, matmul='matmul'):
    return results[label]['achieved_gflops'] / results['data'][matmul]['gflops']


# (row label, how to read it from a run's results, format). A row whose value is
# missing in a run prints '-'.
ROWS = [
    ('Matmul peak, float32 (GFLOP/s)', lambda r: r['data']['matmul']['gflops'], '%.0f'),
    ('Matmul peak, bfloat16 (GFLOP/s)', lambda r: r['data']['matmul_bfloat16']['gflops'],
     '%.0f'),
    ('Train d50 b32 (images/s, incl. input)', lambda r: r['train_d50']['images_per_s'], '%.2f'),
    ('Train d50 b32 (GFLOP/s achieved)', lambda r: r['train_d50']['achieved_gflops'], '%.0f'),
    ('Train d50 b32 (fraction of matmul peak)', lambda r: _fraction(r, 'train_d50'), '%.0f%%'),
    ('Train d50 b32 (peak RSS, MB)', lambda r: r['train_d50']['peak_rss_mb'], '%.0f'),
    ('Train d18 b32 (images/s, incl. input)', lambda r: r['train_d18']['images_per_s'], '%.2f'),
    ('Train d18 b32 (GFLOP/s achieved)', lambda r: r['train_d18']['achieved_gflops'], '%.0f'),
    ('Train d18 b32 (fraction of matmul peak)', lambda r: _fraction(r, 'train_d18'), '%.0f%%'),
    ('Train d18 b32 (peak RSS, MB)', lambda r: r['train_d18']['peak_rss_mb'], '%.0f'),
    ('Train d50 b32 bfloat16 (images/s, incl. input)',
     lambda r: r['train_d50_bfloat16']['images_per_s'], '%.2f'),
    ('Train d50 b32 bfloat16 (fraction of bfloat16 matmul peak)',
     lambda r: _fraction(r, 'train_d50_bfloat16', 'matmul_bfloat16'), '%.0f%%'),
    ('Train d50 b32 bfloat16 (peak RSS, MB)',
     lambda r: r['train_d50_bfloat16']['peak_rss_mb'], '%.0f'),
    ('Inference d50 b32 (images/s)', lambda r: r['train_d50']['inference']['images_per_s'],
     '%.1f'),
    ('Inference d18 b32 (images/s)', lambda r: r['train_d18']['inference']['images_per_s'],
     '%.1f'),
    ('Validation d50: weights into its float32 session (s)',
     lambda r: r['train_d50']['inference']['load_weights_s'], '%.2f'),
    ('Input pipeline, flip (images/s)',
     lambda r: r['data']['pipeline']['flip']['images_per_second'], '%.0f'),
    ('Input pipeline, flip+augment (images/s)',
     lambda r: r['data']['pipeline']['flip+augment']['images_per_second'], '%.0f'),
    ('Read .rec (images/s)', lambda r: r['data']['conversion']['read_images_per_s'], '%.0f'),
    ('mx2tfrecords, 1 worker (images/s)',
     lambda r: r['data']['conversion']['convert_images_per_s'], '%.0f'),
    ('mx2tfrecords time / read time', lambda r: r['data']['conversion']['convert_x_read'],
     '%.1fx'),
    ('verification.evaluate, 6,000 pairs (s)', lambda r: r['data']['verification']['median_s'],
     '%.3f'),
    ('Evaluation: images in the .bin', lambda r: r['eval_memory']['images'], '%d'),
    ('Evaluation: decoded uint8 images (MB)', lambda r: r['eval_memory']['uint8_images_mb'],
     '%.0f'),
    ('Evaluation: peak RSS (MB)', lambda r: r['eval_memory']['peak_rss_mb'], '%.0f'),
    ('Evaluation: peak RSS growth while loading and embedding the set (MB)',
     lambda r: r['eval_memory']['peak_rss_mb'] - max(r['eval_memory']['baseline_rss_mb'], r[
         'eval_memory'].get('peak_before_load_rss_mb', 0.0)), '%.0f'),
    ('Evaluation: float64 copies the original held (MB)',
     lambda r: r['eval_memory']['original_float64_mb'], '%.0f'),
] + [('%s d%d b%d (images/s)' % (engine, depth, batch),
      lambda r, d=depth, b=batch, k=key: r['export_d%d' % d][k][str(b)], '%.1f')
     for depth in (18, 50) for batch in (1, 32)
     for engine, key in (('Frozen graph in TensorFlow', 'frozen'),
                          ('ONNX model in onnxruntime', 'onnx'))]


def _cell(run, read, fmt):
    try:
        value = read(run['results'])
    except (KeyError, TypeError, ZeroDivisionError):
        return '-'
    return fmt % (value * 100 if fmt.endswith('%%') else value)


def markdown(runs):
    """A Markdown table with one column per run (each a dict with 'results', 'mode')."""
    header = ['Measure'] + ['TF %s%s, Python %s (%s)' % (
        run['results']['data']['machine']['tensorflow'],
        ' oneDNN build' if run['results']['data']['machine'].get('onednn_build') else '',
        run['results']['data']['machine']['python'], run['mode']) for run in runs]
    lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
    for label, read, fmt in ROWS:
        lines.append('| ' + ' | '.join([label] + [_cell(run, read, fmt) for run in runs]) + ' |')
    machine = runs[0]['results']['data']['machine']
    lines.append('')
    lines.append('Machine: %s, %s logical CPUs (%s usable), %s GiB; %s; oneDNN setting %s.'
                 % (machine['cpu'], machine['logical_cpus'], machine['usable_cpus'],
                    machine['memory_gib'], machine['os'], machine['TF_ENABLE_ONEDNN_OPTS']))
    return '\n'.join(lines) + '\n'


def _write(path, text):
    temp = path + '.tmp'
    with open(temp, 'w') as out:
        out.write(text)
    os.rename(temp, path)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--quick', action='store_true',
                        help='small data and few steps: about 4 minutes on 2 cores')
    parser.add_argument('--output_dir', default=os.path.join(_ROOT, 'output', 'bench'),
                        help='where bench_tf<version>.json/.md go; default %(default)s')
    parser.add_argument('--device', default=None,
                        help="train_nets.py's --device for the training sections "
                             '(default: its own choice, NPU > GPU > CPU)')
    parser.add_argument('--report', nargs='+', metavar='JSON',
                        help='only render these result files side by side, to stdout')
    args = parser.parse_args(argv)
    if args.report:
        runs = []
        for path in args.report:
            with open(path) as source:
                runs.append(json.load(source))
        sys.stdout.write(markdown(runs))
        return 0
    mode = 'quick' if args.quick else 'full'
    start = time.time()
    work_dir = tempfile.mkdtemp(prefix='bench_')
    try:
        results = run_sections(mode, work_dir, args.device)
    finally:
        subprocess.call(['rm', '-rf', work_dir])
    run = {'mode': mode, 'seconds': time.time() - start, 'results': results,
           'date': time.strftime('%Y-%m-%d %H:%M:%S')}
    version = results['data']['machine']['tensorflow']
    if not os.path.isdir(args.output_dir):
        os.makedirs(args.output_dir)
    base = os.path.join(args.output_dir, 'bench_tf%s' % version)
    _write(base + '.json', json.dumps(run, indent=2, sort_keys=True) + '\n')
    table = markdown([run])
    _write(base + '.md', table)
    sys.stdout.write(table)
    print('[bench] %s mode finished in %.0f s; wrote %s.json and .md'
          % (mode, run['seconds'], base), file=sys.stderr)
    return 0


if __name__ == '__main__':
    sys.exit(main())
