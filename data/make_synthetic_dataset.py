"""Writes the synthetic face dataset in insightface's folder layout.

The folder holds what an insightface dataset holds, so every tool that reads a
real one (data/mx2tfrecords.py, the `.bin` loader, training) reads it too:

    train.rec, train.idx  record 0: header, labels [num_images + 1, end key];
                          keys 1..num_images: JPEG images, label = identity;
                          then one record per identity, labels [first key, last key + 1].
    property              "num_classes,height,width"
    lfw.bin (or --val_names)  pickle protocol 2 of (list of JPEG bytes, list of bool):
                          pair k is images 2k, 2k + 1; 10 folds, each its same-identity
                          pairs then as many different-identity pairs (LFW's order).
    synthetic.json        the flags, and which held-out identities each pair shows.

Verification identities are held out: drawn from their own seed stream, so they
never appear in train.rec, but from the same distribution as the training ones.

Output is a pure function of the flags (for given numpy and TensorFlow
versions): every identity and every image has its own seed (see
data/synthetic/identities.py), whatever --num_workers, and JPEGs are encoded by
TensorFlow in a private graph. The folder is written under a temporary name and renamed into
place at the end, so an interrupted run leaves no half dataset behind. --overwrite
replaces only what an earlier run wrote (the files its synthetic.json implies); a
folder holding anything else is refused.

Usage:
    python3 data/make_synthetic_dataset.py --output_dir ./datasets/synthetic \
        --num_identities 500 --images_per_identity 10 --num_val_identities 50 \
        --num_val_pairs 600 --image_size 112,112 --seed 0
"""
import json
import os
import re
import shutil
import sys
import time

if __name__ == '__main__' and not __package__:  # run as a file: see data/as_module.py
    import as_module
    as_module.rerun_as_module(__file__)

# First: silences TensorFlow's logs before anything below imports it.
from data import quiet  # noqa: E402
import numpy as np  # noqa: E402

from data import cli, image_ops  # noqa: E402
from data.progress import ProgressBar  # noqa: E402
from data.safe_files import (PENDING_NAME, check_holds_only, move_into_place,  # noqa: E402
                             pending_names)
from data.synthetic import identities, render  # noqa: E402
from data.synthetic.insightface_files import NUM_FOLDS, write_bin, write_train  # noqa: E402
from data.synthetic.jpeg_encoder import JpegEncoder  # noqa: E402
from data.synthetic.render_workers import Renderer  # noqa: E402

# Demo defaults: a few seconds to generate. Held-out verification improves more
# with the number of identities than with images per identity, hence 500 x 10.
DEFAULTS = {
    'num_identities': 500,
    'images_per_identity': 10,
    'num_val_identities': 50,
    'num_val_pairs': 600,
    'image_size': (112, 112),
    'seed': 0,
    'val_names': ('lfw',),
    'jpeg_quality': 90,
}
_VAL_NAME = re.compile(r'^[A-Za-z0-9_]+$')
GENERATOR = 'data/make_synthetic_dataset.py'  # synthetic.json's `generator`
PROG = 'make_synthetic_dataset'  # label of the progress bar
RECORD_NAME = 'synthetic.json'
_TRAIN_FILES = ('train.rec', 'train.idx', 'property', RECORD_NAME)  # and one <name>.bin per set
_NOT_OURS = ('make_synthetic_dataset.py did not write (its %s lists what it wrote)'
             % RECORD_NAME)


def make_dataset(output_dir, num_identities=DEFAULTS['num_identities'],
                 images_per_identity=DEFAULTS['images_per_identity'],
                 num_val_identities=DEFAULTS['num_val_identities'],
                 num_val_pairs=DEFAULTS['num_val_pairs'], image_size=DEFAULTS['image_size'],
                 seed=DEFAULTS['seed'], val_names=DEFAULTS['val_names'],
                 jpeg_quality=DEFAULTS['jpeg_quality'], overwrite=False, preview_path=None,
                 log=None, num_workers=1, progress=False):
    """Generates and writes a complete synthetic dataset folder.

    Args:
      output_dir: folder to create (its parent must be writable).
      num_identities: training identities (classes), >= 1.
      images_per_identity: training images per identity, >= 1.
      num_val_identities: held-out identities per verification set, >= 2.
      num_val_pairs: pairs per verification set, a positive multiple of 20
        (10 folds, each half same, half different).
      image_size: (height, width), each >= 8.
      seed: int >= 0; the output is a pure function of the arguments.
      val_names: names of the verification sets; each becomes <name>.bin with its
        own held-out identities.
      jpeg_quality: 1..100.
      overwrite: replace the dataset an earlier run wrote in output_dir instead
        of failing; a folder holding anything else is refused all the same.
      preview_path: if set, a PNG contact sheet (8 identities x 8 images) is
        written there.
      log: callable taking the closing summary line ("wrote ..."), or None.
      num_workers: rendering processes; 1 renders in this process. The output
        is the same for any value.
      progress: show a progress bar (data.progress.ProgressBar) on stderr.
    Returns:
      dict of what was written: 'output_dir', 'num_images', 'num_classes',
      'bin_paths', 'seconds', 'images_per_second'.
    Raises:
      ValueError: on a bad argument (one-line message naming it), if
        output_dir exists and overwrite is False, or if it holds anything an
        earlier run did not write.
    """
    config = _check_config(output_dir, num_identities, images_per_identity, num_val_identities,
                           num_val_pairs, image_size, seed, val_names, jpeg_quality, overwrite,
                           num_workers)
    log = log or (lambda line: None)
    output_dir = os.path.abspath(output_dir)
    parent = os.path.dirname(output_dir)
    if not os.path.isdir(parent):
        os.makedirs(parent)
    staging = os.path.join(parent, '.%s.tmp-%d' % (os.path.basename(output_dir), os.getpid()))
    if os.path.exists(staging):
        shutil.rmtree(staging)
    os.makedirs(staging)
    total = (config['num_identities'] * config['images_per_identity'] +
             len(config['val_names']) * 2 * config['num_val_pairs'])
    start = time.time()
    renderer = encoder = None
    try:
        # Workers are forked before the encoder's session exists.
        renderer = Renderer(config['seed'], config['image_size'], config['num_workers'])
        encoder = JpegEncoder(config['jpeg_quality'])
        with ProgressBar(total, PROG, enabled=progress) as bar:
            write_train(staging, config, encoder, renderer, bar)
            pair_plans = {}
            for index, name in enumerate(config['val_names']):
                # Each .bin has its own held-out pool: seed streams 2, 3, ...
                pair_plans[name] = write_bin(staging, name, identities.VAL_STREAM + index,
                                             config, encoder, renderer, bar)
        _write_json(os.path.join(staging, RECORD_NAME), config, pair_plans)
        if preview_path:
            _write_preview(preview_path, config, encoder)
        _move_into_place(staging, output_dir)
    finally:
        for resource in (encoder, renderer):
            if resource is not None:
                resource.close()
        shutil.rmtree(staging, ignore_errors=True)  # gone already unless we failed
    seconds = time.time() - start
    log('wrote %s: %d images in %.1f s (%.0f images/s)' % (
        output_dir, total, seconds, total / max(seconds, 1e-9)))
    return {
        'output_dir': output_dir,
        'num_images': config['num_identities'] * config['images_per_identity'],
        'num_classes': config['num_identities'],
        'bin_paths': [os.path.join(output_dir, name + '.bin') for name in config['val_names']],
        'seconds': seconds,
        'images_per_second': total / max(seconds, 1e-9),
    }


def _check_config(output_dir, num_identities, images_per_identity, num_val_identities,
                  num_val_pairs, image_size, seed, val_names, jpeg_quality, overwrite,
                  num_workers):
    """Validates the arguments of make_dataset; returns them as a dict."""
    def integer(name, value, minimum):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
            raise ValueError('%s=%r: expected an integer >= %d' % (name, value, minimum))
        return int(value)

    if isinstance(image_size, str):
        image_size = image_ops.parse_image_size(image_size)
    image_size = tuple(image_size)
    if len(image_size) != 2 or not all(isinstance(s, (int, np.integer)) and s >= 8
                                       for s in image_size):
        raise ValueError('image_size=%r: expected (height, width), both integers >= 8'
                         % (image_size,))
    if isinstance(val_names, str):
        val_names = [n for n in val_names.split(',') if n]
    val_names = tuple(val_names)
    if not val_names or len(set(val_names)) != len(val_names) or not all(
            _VAL_NAME.match(n) for n in val_names):
        raise ValueError('val_names=%r: expected distinct names of letters, digits and _, '
                         'e.g. lfw,cfp_fp' % (','.join(val_names),))
    num_val_pairs = integer('num_val_pairs', num_val_pairs, 2 * NUM_FOLDS)
    if num_val_pairs % (2 * NUM_FOLDS):
        raise ValueError('num_val_pairs=%d: expected a multiple of %d (%d folds, each half '
                         'same and half different pairs)' % (num_val_pairs, 2 * NUM_FOLDS,
                                                              NUM_FOLDS))
    quality = integer('jpeg_quality', jpeg_quality, 1)
    if quality > 100:
        raise ValueError('jpeg_quality=%d: expected an integer in 1..100' % quality)
    _check_output(output_dir, overwrite)
    return {
        'num_identities': integer('num_identities', num_identities, 1),
        'images_per_identity': integer('images_per_identity', images_per_identity, 1),
        'num_val_identities': integer('num_val_identities', num_val_identities, 2),
        'num_val_pairs': num_val_pairs,
        'image_size': (int(image_size[0]), int(image_size[1])),
        'seed': integer('seed', seed, 0),
        'val_names': val_names,
        'jpeg_quality': quality,
        'num_workers': integer('num_workers', num_workers, 1),
    }


def _ours(name):
    """A name this tool writes: a doctored record cannot point outside the folder."""
    return name in _TRAIN_FILES or (name.endswith('.bin') and bool(_VAL_NAME.match(name[:-4])))


def recorded_files(output_dir):
    """The files an earlier run wrote in output_dir, as its synthetic.json says (and, after
    an interrupted replacement, its journal); set() if none."""
    names = {name for name in pending_names(output_dir) if name == PENDING_NAME or _ours(name)}
    try:
        with open(os.path.join(output_dir, RECORD_NAME)) as record_file:
            record = json.load(record_file)
    except (IOError, OSError, ValueError):
        return names
    if not isinstance(record, dict) or record.get('generator') != GENERATOR:
        return names
    val_names = record.get('val_names')
    return names | set(_TRAIN_FILES) | {
        name + '.bin' for name in (val_names if isinstance(val_names, list) else [])
        if isinstance(name, str) and _ours(name + '.bin')}


def _check_output(output_dir, overwrite):
    """Refuses a folder holding anything an earlier run did not write, whatever the flags,
    and an existing folder without overwrite (an empty one is fine with it)."""
    if not os.path.lexists(output_dir):
        return
    if not os.path.isdir(output_dir):
        raise ValueError('output_dir %s exists and is not a folder' % output_dir)
    check_holds_only(output_dir, recorded_files(output_dir), 'output_dir', _NOT_OURS)
    if not overwrite:
        raise ValueError('output_dir %s already exists; remove it or pass --overwrite'
                         % output_dir)


def _write_json(path, config, pair_plans):
    record = dict(config)
    del record['num_workers']  # does not change the output
    record['image_size'] = list(config['image_size'])
    record['val_names'] = list(config['val_names'])
    record['val_sets'] = pair_plans
    record['generator'] = GENERATOR  # with val_names, the record of the files written
    with open(path, 'w') as out:
        json.dump(record, out, indent=1, sort_keys=True)
        out.write('\n')


def _write_preview(path, config, encoder):
    """Contact sheet: one row per training identity (at most 8), 8 images each."""
    items = [(identity, j) for identity in range(min(8, config['num_identities']))
             for j in range(8)]
    images = render.render_images(config['seed'], identities.TRAIN_STREAM, items,
                                  config['image_size'])
    with open(path, 'wb') as out:
        out.write(encoder.encode_png(render.contact_sheet(images, columns=8)))


def _move_into_place(staging, output_dir):
    """Moves the finished dataset into output_dir, its record last.

    An old folder is checked again first (it may have changed while
    rendering); only the files an earlier run recorded are replaced or deleted.
    """
    old = set()
    if os.path.exists(output_dir):
        old = recorded_files(output_dir)
        check_holds_only(output_dir, old, 'output_dir', _NOT_OURS)
    new = set(os.listdir(staging))
    move_into_place(staging, output_dir, sorted(new), stale=old - new - {PENDING_NAME},
                    last=RECORD_NAME)


def get_parser():
    """The command-line flags."""
    parser = cli.OneLineParser(description=__doc__.split('\n')[0])
    # Dataset size #
    parser.add_argument('--output_dir', type=str, required=True,
                        help='folder to create (must not exist unless --overwrite)')
    parser.add_argument('--num_identities', type=int, default=DEFAULTS['num_identities'],
                        help='training identities (classes); default %(default)s')
    parser.add_argument('--images_per_identity', type=int,
                        default=DEFAULTS['images_per_identity'],
                        help='training images per identity; default %(default)s')
    parser.add_argument('--num_val_identities', type=int, default=DEFAULTS['num_val_identities'],
                        help='held-out identities per .bin, never in train; >= 2; '
                             'default %(default)s')
    parser.add_argument('--num_val_pairs', type=int, default=DEFAULTS['num_val_pairs'],
                        help='pairs per .bin, a multiple of 20 (10 folds, half same); '
                             'default %(default)s')
    parser.add_argument('--val_names', type=str, default=','.join(DEFAULTS['val_names']),
                        help='comma-separated .bin names, each with its own held-out '
                             'identities; default %(default)s')
    # Images #
    parser.add_argument('--image_size', type=str, default='%d,%d' % DEFAULTS['image_size'],
                        help='height,width in pixels; default %(default)s')
    parser.add_argument('--jpeg_quality', type=int, default=DEFAULTS['jpeg_quality'],
                        help='JPEG quality 1..100; default %(default)s')
    parser.add_argument('--seed', type=int, default=DEFAULTS['seed'],
                        help='dataset seed (>= 0); same flags and seed give the same bytes; '
                             'default %(default)s')
    # Output #
    parser.add_argument('--overwrite', action='store_true',
                        help='replace the dataset this tool wrote in --output_dir (a folder '
                             'holding anything else is refused)')
    parser.add_argument('--preview_png', type=str, default=None,
                        help='also write a PNG contact sheet here; off if not given')
    parser.add_argument('--num_workers', type=int, default=0,
                        help='rendering processes; 0 = one per CPU core; the output is '
                             'the same for any value; default %(default)s')
    parser.add_argument('--quiet', action='store_true',
                        help='no progress bar (or lines) and no summary on stderr')
    quiet.add_flag(parser)
    return parser


def main(argv=None):
    """Entry point; returns the process exit status (0 ok, 2 bad flags)."""
    args = get_parser().parse_args(argv)
    log = None if args.quiet else (lambda line: print(line, file=sys.stderr))
    try:
        image_size = image_ops.parse_image_size(args.image_size)
        if args.num_workers < 0:
            raise ValueError('--num_workers=%d: expected an integer >= 0 (0 = one per CPU core)'
                             % args.num_workers)
        num_workers = args.num_workers or os.cpu_count() or 1
        make_dataset(args.output_dir, args.num_identities, args.images_per_identity,
                     args.num_val_identities, args.num_val_pairs, image_size, args.seed,
                     args.val_names, args.jpeg_quality, args.overwrite, args.preview_png, log,
                     num_workers, progress=not args.quiet)
    except ValueError as error:
        print('%s: error: %s' % (os.path.basename(sys.argv[0] or 'make_synthetic_dataset.py'),
                                 error), file=sys.stderr)
        return 2
    return 0


if __name__ == '__main__':
    sys.exit(main())
