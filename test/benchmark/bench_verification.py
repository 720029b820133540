"""Times `verification.evaluate` on an LFW-sized set of random unit embeddings.

Not collected by pytest. Usage (from the repository root):
    .venv/bin/python test/benchmark/bench_verification.py --output bench.json
"""
import argparse
import json
import os
import platform
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
import verification  # noqa: E402  (needs the repository root on sys.path)

NOISE = 2.2  # per-dimension noise added to each view; gives ~97.5% accuracy


def parse_arguments(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--pairs', type=int, default=6000, help='number of pairs (LFW: 6000)')
    parser.add_argument('--dim', type=int, default=512, help='embedding size')
    parser.add_argument('--folds', type=int, default=verification.NROF_FOLDS,
                        help='cross-validation folds')
    parser.add_argument('--repeats', type=int, default=7, help='timed runs; the median is reported')
    parser.add_argument('--seed', type=int, default=0, help='random seed of the embeddings')
    parser.add_argument('--output', default=None,
                        help='JSON file for the result; if left as None, only printed')
    return parser.parse_args(argv)


def random_pair_set(nrof_pairs, dim, seed):
    """float32 [2 * nrof_pairs, dim] unit rows (same pairs correlated) and bool issame."""
    rng = np.random.RandomState(seed)
    issame = rng.rand(nrof_pairs) < 0.5
    first = rng.randn(nrof_pairs, dim).astype(np.float32)
    second = np.where(issame[:, None], first, rng.randn(nrof_pairs, dim).astype(np.float32))
    embeddings = np.empty((2 * nrof_pairs, dim), np.float32)
    embeddings[0::2] = first + NOISE * rng.randn(nrof_pairs, dim).astype(np.float32)
    embeddings[1::2] = second + NOISE * rng.randn(nrof_pairs, dim).astype(np.float32)
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    return embeddings, issame


def main(argv):
    args = parse_arguments(argv)
    embeddings, issame = random_pair_set(args.pairs, args.dim, args.seed)
    verification.evaluate(embeddings, issame, args.folds)  # warm-up
    seconds = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        _, _, accuracy, val, _, far = verification.evaluate(embeddings, issame, args.folds)
        seconds.append(time.perf_counter() - start)
    result = {
        'benchmark': 'verification.evaluate',
        'pairs': args.pairs, 'dim': args.dim, 'folds': args.folds, 'repeats': args.repeats,
        'median_seconds': float(np.median(seconds)), 'min_seconds': float(np.min(seconds)),
        'accuracy': float(np.mean(accuracy)), 'val': float(val), 'far': float(far),
        'python': platform.python_version(), 'numpy': np.__version__,
    }
    print('evaluate: %d pairs x %d-d, %d folds: median %.4f s over %d runs (min %.4f s)'
          % (args.pairs, args.dim, args.folds, result['median_seconds'], args.repeats,
             result['min_seconds']))
    if args.output:
        with open(args.output, 'w') as f:
            json.dump(result, f, indent=2, sort_keys=True)
    return result


if __name__ == '__main__':
    main(sys.argv[1:])
