"""`make bench-peer`: this port's training step beside insightface's PyTorch step, same run.

Times, each in its own process and interleaved over --rounds (the best run of
each is kept: other load only ever slows a run):

  tf_float32      the port's step (losses.objective at depth 50, ArcFace, weight decay,
                  momentum, BN updates) on constant in-graph inputs, float32
  tf_bfloat16     the same with train_nets.py's CPU bfloat16 (oneDNN rewrite)
  torch_float32   insightface's arcface_torch IResNet-50 + ArcFace (torch_reference.py)
  torch_bfloat16  the same under torch.autocast('cpu', dtype=torch.bfloat16)

with the machine's float32 and bfloat16 matmul rates (TensorFlow's own
matmul), and prints the ratios port / PyTorch. The PyTorch steps run in the
environment given by --peer_python (tools/bench_peer.sh builds .venv-peer with
CPU PyTorch); the TensorFlow steps run in this Python.

    python test/benchmark/bench_peer.py --peer_python .venv-peer/bin/python \\
        --output output/bench/peer.json
"""
import argparse
import json
import os
import subprocess
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
VARIANTS = ('tf_float32', 'tf_bfloat16', 'torch_float32', 'torch_bfloat16')


def _one(variant, args):
    """Runs one variant in this process; returns its result dict."""
    if variant.startswith('torch'):
        sys.path.insert(0, _HERE)
        import torch_reference
        step_s, version = torch_reference.time_step(
            variant == 'torch_bfloat16', args.batch_size, args.image_size, steps=args.steps,
            warmup=args.warmup)
        return {'variant': variant, 'framework': 'torch ' + version, 'step_s': step_s,
                'images_per_s': args.batch_size / step_s}
    if variant == 'matmul':
        import machine
        import tensorflow.compat.v1 as tf
        tf.disable_v2_behavior()
        return {'variant': variant, 'framework': 'tensorflow ' + tf.__version__,
                'float32_gflops': machine.matmul_peak((2048,), 2.0)['gflops'],
                'bfloat16_gflops': machine.matmul_peak((2048,), 2.0,
                                                       dtype='bfloat16')['gflops']}
    import bench_step_options
    result = bench_step_options.time_variant(
        'bfloat16' if variant == 'tf_bfloat16' else 'current', args.depth, args.batch_size,
        args.steps, args.warmup, args.image_size)
    result.update(variant=variant, framework='tensorflow ' + result['tensorflow'])
    return result


def _run(python, variant, args):
    command = [python, os.path.abspath(__file__), '--one', variant, '--steps', str(args.steps),
               '--warmup', str(args.warmup), '--batch_size', str(args.batch_size),
               '--image_size', str(args.image_size), '--depth', str(args.depth)]
    output = subprocess.check_output(command, universal_newlines=True,
                                     env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2'))
    return json.loads(output.strip().splitlines()[-1])


def report(best, matmul):
    """The Markdown lines of the comparison."""
    lines = ['| Step (depth 50, batch 32, 112x112, constant inputs) | framework | images/s '
             '(best round) | every round |', '|---|---|---|---|']
    for variant in VARIANTS:
        if variant in best:
            lines.append('| %s | %s | %.2f | %s |' % (
                variant, best[variant]['framework'], best[variant]['images_per_s'],
                ', '.join('%.2f' % rate for rate in best[variant]['rounds_images_per_s'])))
    for precision in ('float32', 'bfloat16'):
        ours, theirs = best.get('tf_' + precision), best.get('torch_' + precision)
        if ours and theirs:
            lines.append('| port / PyTorch, %s | | **%.2fx** | |'
                         % (precision, ours['images_per_s'] / theirs['images_per_s']))
    if matmul:
        lines.append('| matmul 2048, float32 / bfloat16 (GFLOP/s) | %s | %.0f / %.0f | |'
                     % (matmul['framework'], matmul['float32_gflops'],
                        matmul['bfloat16_gflops']))
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--peer_python', default=None,
                        help='Python of the PyTorch environment; none: TensorFlow only')
    parser.add_argument('--variants', default=','.join(VARIANTS))
    parser.add_argument('--depth', type=int, default=50)
    parser.add_argument('--batch_size', type=int, default=32)
    parser.add_argument('--image_size', type=int, default=112)
    parser.add_argument('--steps', type=int, default=6, help='timed steps per run')
    parser.add_argument('--warmup', type=int, default=2)
    parser.add_argument('--rounds', type=int, default=2)
    parser.add_argument('--output', default=None, help='JSON file for the results')
    parser.add_argument('--one', default=None, help=argparse.SUPPRESS)  # child process
    args = parser.parse_args(argv)
    if args.one:
        sys.path.insert(0, os.path.dirname(os.path.dirname(_HERE)))
        sys.path.insert(0, _HERE)
        print(json.dumps(_one(args.one, args)))
        return 0
    variants = [v for v in args.variants.split(',')
                if args.peer_python or not v.startswith('torch')]
    best = {}
    for _ in range(args.rounds):
        for variant in variants:
            python = args.peer_python if variant.startswith('torch') else sys.executable
            result = _run(python, variant, args)
            print('%-15s %.3f s/step  %.2f images/s' % (variant, result['step_s'],
                                                       result['images_per_s']), flush=True)
            rounds = best.get(variant, {}).get('rounds_images_per_s', [])
            if variant not in best or result['step_s'] < best[variant]['step_s']:
                best[variant] = result
            best[variant]['rounds_images_per_s'] = rounds + [result['images_per_s']]
    matmul = _run(sys.executable, 'matmul', args)
    text = '\n'.join(report(best, matmul))
    print(text)
    if args.output:
        with open(args.output, 'w') as out:
            json.dump({'results': best, 'matmul': matmul, 'markdown': text}, out, indent=2)
    return 0


if __name__ == '__main__':
    sys.exit(main())
