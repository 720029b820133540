"""eval_ijb.py's speed and memory: the network alone against the whole evaluation, the
release scaled up, and the protocol at IJB-C's size.

Three measurements, each in a fresh process (its peak resident memory is its own):

  network   the checkpoint's inference graph (the one eval_ijb.py runs) and export_model.py's
            frozen graph of it, on random 112x112 crops at --batch_size: crops/s after a
            warm-up batch, the speed the evaluation cannot beat;
  release   eval_ijb.py on --ijb_root copied --scale times (the meta files repeated with
            template, media and image names made distinct; the crops are symbolic links, so
            every copy decodes and aligns for real): wall time, the time spent embedding,
            crops/s while embedding (each image and its mirror are two crops), peak RSS of
            the main process and of a worker, and TAR@FAR (each copy scores its own pairs,
            so every scale gives the same table);
  protocol  ijb_protocol.verify on random embeddings in IJB-C's shape (469,375 images,
            23,124 templates, 15,658,489 pairs, D 512): time and peak RSS of what follows the
            embedding. It needs about 5 GB.

Usage (prints a Markdown table; --json keeps the numbers):
    python3 test/benchmark/bench_ijb.py --ckpt_file output/lfw/ckpt \\
        --ijb_root ../shared/data/ijb_like_dev --net_input_size 56,56 --scale 1,8
"""
import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

_HERE = os.path.dirname(os.path.abspath(__file__))
_ROOT = os.path.dirname(os.path.dirname(_HERE))
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from data import quiet  # noqa: E402,F401  (first: TensorFlow's logs silenced)
import numpy as np  # noqa: E402

MB = 1e6
IJBC_SIZE = {'images': 469375, 'templates': 23124, 'pairs': 15658489, 'genuine': 19557}
EMBEDDING_SIZE = 512


def _peak_rss_mb(who=resource.RUSAGE_SELF):
    return resource.getrusage(who).ru_maxrss * 1024 / MB  # Linux reports KiB


def _network_input(text):
    return [int(v) for v in text.split(',')] if text else None


# ---------------------------------------------------------------------------
# network: the inference graph and the frozen graph alone
# ---------------------------------------------------------------------------
def _crops_per_s(run_batch, batch, batches):
    crops = np.random.RandomState(0).randint(0, 256, (batch, 112, 112, 3)).astype(np.uint8)
    run_batch(crops)  # warm-up: graph optimisation, first allocations
    start = time.time()
    for _ in range(batches):
        run_batch(crops)
    return batch * batches / (time.time() - start)


def child_network(args):
    import export_model
    from devices import runtime
    from evaluation import ijb_models
    runtime.init()
    size = _network_input(args.net_input_size)
    checkpoint = ijb_models.resolve(args.ckpt_file)
    result = {}
    with ijb_models.Runners([checkpoint], args.batch_size, size, 'cpu') as runners:
        run_batch, batch = runners.open(checkpoint)
        result['checkpoint_crops_per_s'] = _crops_per_s(run_batch, batch, args.batches)
    out = tempfile.mkdtemp(prefix='bench_ijb_export_')
    try:
        flags = ['--ckpt_file', checkpoint.path, '--format', 'pb', '--output_dir', out,
                 '--overwrite', '--batch_size', str(args.batch_size)]
        if size:
            flags += ['--net_input_size', ','.join(str(v) for v in size)]
        if export_model.main(flags) != 0:
            raise RuntimeError('export_model.py %s failed' % ' '.join(flags))
        frozen = ijb_models.resolve(os.path.join(out, export_model.FROZEN_GRAPH))
        with ijb_models.Runners([frozen], args.batch_size, None, 'cpu') as runners:
            run_batch, batch = runners.open(frozen)
            result['frozen_batch'] = batch
            result['frozen_crops_per_s'] = _crops_per_s(run_batch, batch, args.batches)
    finally:
        shutil.rmtree(out, ignore_errors=True)
    return result


# ---------------------------------------------------------------------------
# release: eval_ijb.py on the release copied `scale` times
# ---------------------------------------------------------------------------
def scaled_release(source, target, scale, out):
    """Writes `source` repeated `scale` times under `out`: copy k's images are
    k_<name> (links to the originals), its templates and media ids + k * offset."""
    from evaluation import ijb_meta
    os.makedirs(os.path.join(out, ijb_meta.IMAGE_DIR))
    os.makedirs(os.path.join(out, ijb_meta.META_DIR))
    media = open(ijb_meta.meta_path(source, target, ijb_meta.TEMPLATE_MEDIA)).read().split('\n')
    points = open(ijb_meta.meta_path(source, target, ijb_meta.LANDMARKS)).read().split('\n')
    pairs = open(ijb_meta.meta_path(source, target, ijb_meta.PAIRS)).read().split('\n')
    rows = [line.split() for line in media if line.strip()]
    offset = 10 ** len(str(max(max(int(r[1]), int(r[2])) for r in rows)))
    names = [r[0] for r in rows]
    for k in range(scale):
        for name in names:
            os.symlink(os.path.abspath(ijb_meta.image_file(source, name)),
                       ijb_meta.image_file(out, '%d_%s' % (k, name)))
    with open(ijb_meta.meta_path(out, target, ijb_meta.TEMPLATE_MEDIA), 'w') as f:
        for k in range(scale):
            for name, template, medium in rows:
                f.write('%d_%s %d %d\n' % (k, name, int(template) + k * offset,
                                           int(medium) + k * offset))
    with open(ijb_meta.meta_path(out, target, ijb_meta.LANDMARKS), 'w') as f:
        for k in range(scale):
            for line in points:
                if line.strip():
                    f.write('%d_%s\n' % (k, line))
    with open(ijb_meta.meta_path(out, target, ijb_meta.PAIRS), 'w') as f:
        for k in range(scale):
            for line in pairs:
                if line.strip():
                    a, b, label = line.split()
                    f.write('%d %d %s\n' % (int(a) + k * offset, int(b) + k * offset, label))
    return len(names) * scale


def child_release(args):
    import eval_ijb
    from evaluation import ijb_embed
    timing = {}
    embed = ijb_embed.embed_release

    def timed_embed(*a, **k):  # the embedding phase alone, inside the whole run
        start = time.time()
        try:
            return embed(*a, **k)
        finally:
            timing['embed_s'] = time.time() - start

    eval_ijb.ijb_embed.embed_release = timed_embed
    scale = int(args.scale)
    report = os.path.join(args.work_dir, 'ijb_%d.json' % scale)
    flags = ['--ckpt_file', args.ckpt_file, '--ijb_root', args.release, '--target', args.target,
             '--batch_size', str(args.batch_size), '--output_json', report, '--overwrite',
             '--device', 'cpu']
    if args.net_input_size:
        flags += ['--net_input_size', args.net_input_size]
    if args.num_workers is not None:
        flags += ['--num_workers', str(args.num_workers)]
    start = time.time()
    if eval_ijb.main(flags) != 0:
        raise RuntimeError('eval_ijb.py %s failed' % ' '.join(flags))
    wall = time.time() - start
    with open(report) as f:
        payload = json.load(f)
    images = payload['counts']['images']
    return {'scale': scale, 'images': images, 'pairs': payload['counts']['pairs'],
            'wall_s': wall, 'embed_s': timing['embed_s'],
            'embed_crops_per_s': 2 * images / timing['embed_s'],
            'whole_run_crops_per_s': 2 * images / wall,
            'tar_at_far': payload['results'][0]['tar_at_far_percent'],
            'peak_rss_mb': _peak_rss_mb(), 'worker_peak_rss_mb':
                _peak_rss_mb(resource.RUSAGE_CHILDREN)}


# ---------------------------------------------------------------------------
# protocol: pooling, scoring and the ROC at IJB-C's size
# ---------------------------------------------------------------------------
def child_protocol(args):
    from evaluation import ijb_meta, ijb_protocol
    rng = np.random.RandomState(0)
    n, count = IJBC_SIZE['images'], IJBC_SIZE['templates']
    templates = np.sort(rng.randint(0, count, n)).astype(np.int64)
    templates[:count] = np.arange(count)  # every template has an image
    templates.sort()
    medias = templates * 100 + rng.randint(0, 8, n)  # a few media per template
    pairs = IJBC_SIZE['pairs']
    labels = np.zeros(pairs, np.int64)
    labels[rng.choice(pairs, IJBC_SIZE['genuine'], replace=False)] = 1
    meta = ijb_meta.IJBMeta(image_names=None, landmarks=None,
                            detector_scores=rng.uniform(0.5, 1.0, n).astype(np.float32),
                            templates=templates, medias=medias,
                            t1=rng.randint(0, count, pairs).astype(np.int64),
                            t2=rng.randint(0, count, pairs).astype(np.int64),
                            labels=labels, image_lines=None)
    # float32 drawn directly: a float64 draw and a cast would set the peak before verify.
    normal = np.random.default_rng(0).standard_normal
    embeddings = normal((n, EMBEDDING_SIZE), dtype=np.float32)
    flipped = normal((n, EMBEDDING_SIZE), dtype=np.float32)
    before = _peak_rss_mb()
    start = time.time()
    ijb_protocol.verify(meta, embeddings, flipped)
    return {'images': n, 'templates': count, 'pairs': pairs, 'verify_s': time.time() - start,
            'inputs_peak_rss_mb': before, 'peak_rss_mb': _peak_rss_mb()}


CHILDREN = {'network': child_network, 'release': child_release, 'protocol': child_protocol}


def _child(section, args, **extra):
    """Runs one measurement in a fresh process; returns its JSON."""
    out = os.path.join(args.work_dir, '%s.json' % section)
    command = [sys.executable, os.path.abspath(__file__), '--child', section, '--child_json', out,
               '--work_dir', args.work_dir, '--batch_size', str(args.batch_size),
               '--batches', str(args.batches), '--target', args.target]
    for flag in ('ckpt_file', 'ijb_root', 'net_input_size', 'num_workers'):
        if getattr(args, flag) is not None:
            command += ['--' + flag, str(getattr(args, flag))]
    for flag, value in extra.items():
        command += ['--' + flag, str(value)]
    print('[bench_ijb] %s %s ...' % (section, ' '.join('%s=%s' % kv for kv in extra.items())),
          file=sys.stderr, flush=True)
    subprocess.run(command, check=True)
    with open(out) as f:
        return json.load(f)


def report(results):
    lines = []
    network = results.get('network')
    if network:
        lines += ['| network alone (random crops, batch %d) | crops/s |' % network['batch'],
                  '|---|---|',
                  '| checkpoint, inference graph (what eval_ijb.py runs) | %.1f |'
                  % network['checkpoint_crops_per_s'],
                  '| export_model.py frozen graph | %.1f |' % network['frozen_crops_per_s'], '']
    releases = results.get('releases')
    if releases:
        lines += ['| copies | images | pairs | wall s | embedding s | crops/s embedding '
                  '| of the network | peak RSS MB (main / worker) | TAR@FAR 1e-4 / 1e-3 / 1e-2 |',
                  '|---|---|---|---|---|---|---|---|---|']
        for r in releases:
            share = ('%.0f %%' % (100 * r['embed_crops_per_s'] / network['checkpoint_crops_per_s'])
                     if network else '-')
            tars = r['tar_at_far']
            lines.append('| %d | %d | %d | %.1f | %.1f | %.1f | %s | %.0f / %.0f | %s / %s / %s |'
                         % (r['scale'], r['images'], r['pairs'], r['wall_s'], r['embed_s'],
                            r['embed_crops_per_s'], share, r['peak_rss_mb'],
                            r['worker_peak_rss_mb'], tars['1e-4'], tars['1e-3'], tars['1e-2']))
        lines.append('')
    protocol = results.get('protocol')
    if protocol:
        lines += ['| protocol at IJB-C size | images | templates | pairs | s | peak RSS MB '
                  '(inputs alone) |', '|---|---|---|---|---|---|',
                  '| ijb_protocol.verify | %d | %d | %d | %.1f | %.0f (%.0f) |'
                  % (protocol['images'], protocol['templates'], protocol['pairs'],
                     protocol['verify_s'], protocol['peak_rss_mb'],
                     protocol['inputs_peak_rss_mb'])]
    return '\n'.join(lines)


def get_parser():
    parser = argparse.ArgumentParser(prog='bench_ijb.py', description=__doc__.split('\n')[0])
    parser.add_argument('--ckpt_file', help='checkpoint prefix or folder (network, release)')
    parser.add_argument('--ijb_root', help='the release to copy (release)')
    parser.add_argument('--target', default='IJBC')
    parser.add_argument('--net_input_size', default=None, help='e.g. 56,56')
    parser.add_argument('--batch_size', type=int, default=64)
    parser.add_argument('--batches', type=int, default=20, help='timed batches (network)')
    parser.add_argument('--num_workers', type=int, default=None)
    parser.add_argument('--scale', default='1,8', help='copies of the release, comma-separated')
    parser.add_argument('--sections', default='network,release,protocol')
    parser.add_argument('--work_dir', default=None, help='default: a temporary folder')
    parser.add_argument('--json', default=None, help='also write the numbers here')
    parser.add_argument('--child', choices=sorted(CHILDREN), help=argparse.SUPPRESS)
    parser.add_argument('--child_json', help=argparse.SUPPRESS)
    parser.add_argument('--release', help=argparse.SUPPRESS)
    return parser


def parse_args(argv=None):
    return get_parser().parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if args.child:
        result = CHILDREN[args.child](args)
        with open(args.child_json, 'w') as f:
            json.dump(result, f)
        return 0
    own_dir = args.work_dir is None
    args.work_dir = args.work_dir or tempfile.mkdtemp(prefix='bench_ijb_')
    sections = args.sections.split(',')
    results = {}
    try:
        if 'network' in sections:
            results['network'] = _child('network', args)
            results['network']['batch'] = args.batch_size
        if 'release' in sections:
            results['releases'] = []
            for scale in [int(s) for s in args.scale.split(',')]:
                release = os.path.join(args.work_dir, 'release_x%d' % scale)
                scaled_release(args.ijb_root, args.target, scale, release)
                results['releases'].append(_child('release', args, scale=scale,
                                                  release=release))
                shutil.rmtree(release)
        if 'protocol' in sections:
            results['protocol'] = _child('protocol', args)
    finally:
        if own_dir:
            shutil.rmtree(args.work_dir, ignore_errors=True)
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(results, f, indent=1, sort_keys=True)
    print(report(results))
    return 0


if __name__ == '__main__':
    sys.exit(main())
