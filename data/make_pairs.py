"""Makes an insightface verification set (.bin) from a folder of faces, one folder per person.

    DIR/<identity>/<image>.jpg|.jpeg|.png  ->  my_val.bin

The .bin has the pickle layout of insightface's lfw.bin: (list of encoded
images, list of bools), pair i being images 2i and 2i+1; insightface's loader,
the original InsightFace_TF's and this project's read it, so train_nets.py
(--eval_datasets my_val) and eval_ckpt_file.py score it with the 10-fold
protocol. The protocol's folds are contiguous runs of pairs, so the pairs are
laid out fold by fold, each fold holding --num_pairs / 20 same-person pairs
then as many different-person pairs. With --split_identities every person
belongs to one fold only (LFW's own folds are made that way), so the
threshold a fold is scored at was chosen on other people.

Same-person pairs are drawn identity by identity in turn (a person with many
images does not dominate), without repeats; different-person pairs join two
random people. Every image used is decoded (the training decoder) and must
have one size, as in folder2tfrecords.py (--image_size, --resize).

Usage:
    python3 data/make_pairs.py --image_dir my_faces --output datasets/my_val.bin \\
        --num_pairs 600 --seed 0 --split_identities

An existing --output is only replaced with --overwrite, and only if this tool
wrote it: the .bin gets a hidden record beside it (`.my_val.bin.written.json`,
its size and SHA-256; data/safe_files.py), and a file without one, such as a
downloaded lfw.bin, is refused.

Exit status: 0 done; 2 bad input or output (one line on stderr).
"""
import argparse
import os
import pickle
import random
import sys

if __name__ == '__main__' and not __package__:  # run as a file: see data/as_module.py
    import as_module
    as_module.rerun_as_module(__file__)

# First: silences TensorFlow's logs before anything below imports it.
from data import quiet  # noqa: E402
from data.image_files import (  # noqa: E402
    ImageChecker, ImageFolderError, add_image_dir_flags, scan_identities)
from data.safe_files import (  # noqa: E402
    OutputError, check_output, write_atomically, write_recorded)
from data.cli import positive_int  # noqa: E402
from data.eval_data_reader import NROF_FOLDS  # noqa: E402

PICKLE_PROTOCOL = 2  # readable by Python 2 tools too, as insightface's own files
PROG = 'make_pairs'


class PairsError(ValueError):
    """Pairs that cannot be made from the folder; one line."""


def assign_folds(identities, split, rng):
    """The identities (indices) each fold draws from: all of them, or a disjoint share.

    Split: people are shuffled, then each goes to the fold with the fewest
    images so far, so the folds hold about as many images each.
    """
    indices = list(range(len(identities)))
    if not split:
        return [indices] * NROF_FOLDS
    rng.shuffle(indices)
    indices.sort(key=lambda i: -len(identities[i][1]))  # large first, ties in shuffled order
    folds, images = [[] for _ in range(NROF_FOLDS)], [0] * NROF_FOLDS
    for index in indices:
        fold = images.index(min(images))
        folds[fold].append(index)
        images[fold] += len(identities[index][1])
    return folds


def _same_pairs(identities, members, count, used, rng):
    """`count` new same-person pairs from the identities `members`, one person at a time."""
    queues = {}
    for i in members:
        n = len(identities[i][1])
        pairs = [(i, a, b) for a in range(n) for b in range(a + 1, n) if (i, a, b) not in used]
        rng.shuffle(pairs)
        if pairs:
            queues[i] = pairs
    order = sorted(queues)
    rng.shuffle(order)
    chosen = []
    while len(chosen) < count and order:
        for i in list(order):
            if len(chosen) == count:
                break
            pair = queues[i].pop()
            used.add(pair)
            chosen.append(((i, pair[1]), (i, pair[2])))
            if not queues[i]:
                order.remove(i)
    return chosen


def _different_pairs(identities, members, count, used, rng):
    """`count` new different-person pairs among `members` (rejection sampling)."""
    chosen, attempts = [], 0
    while len(chosen) < count and attempts < 100 * count + 1000:
        attempts += 1
        i, j = rng.sample(members, 2)
        a, b = rng.randrange(len(identities[i][1])), rng.randrange(len(identities[j][1]))
        key = (min((i, a), (j, b)), max((i, a), (j, b)))
        if key not in used:
            used.add(key)
            chosen.append(((i, a), (j, b)))
    return chosen


def make_pairs(identities, num_pairs, seed, split=False):
    """The pairs of a verification set, fold by fold.

    Args:
      identities: scan_identities output.
      num_pairs: a multiple of 2 * NROF_FOLDS.
      seed: random seed (same seed, same folder: same pairs).
      split: no identity in two folds.
    Returns:
      [((identity, image index), (identity, image index), issame)] in .bin order.
    Raises:
      PairsError: too few people or images for the pairs asked for.
    """
    if num_pairs % (2 * NROF_FOLDS):
        raise PairsError('--num_pairs %d: expected a multiple of %d (%d folds, each half '
                         'same-person, half different-person pairs)'
                         % (num_pairs, 2 * NROF_FOLDS, NROF_FOLDS))
    rng = random.Random(seed)
    per_kind = num_pairs // (2 * NROF_FOLDS)
    folds = assign_folds(identities, split, rng)
    used, pairs = set(), []
    for fold, members in enumerate(folds):
        where = 'fold %d' % (fold + 1) if split else 'the folder'
        if len(members) < 2:
            raise PairsError('%s has %d person(s); different-person pairs need two: give more '
                             'identities%s' % (where, len(members),
                                               ' or leave out --split_identities' if split else ''))
        same = _same_pairs(identities, members, per_kind, used, rng)
        if len(same) < per_kind:
            raise PairsError('--num_pairs %d needs %d same-person pairs per fold; %s has only %d '
                             'left (people with two or more images: %d); ask for fewer pairs or '
                             'add images' % (num_pairs, per_kind, where, len(same),
                                             sum(len(identities[i][1]) > 1 for i in members)))
        different = _different_pairs(identities, members, per_kind, used, rng)
        if len(different) < per_kind:
            raise PairsError('--num_pairs %d needs %d different-person pairs per fold; %s '
                             'yields only %d new ones; ask for fewer pairs or add images'
                             % (num_pairs, per_kind, where, len(different)))
        pairs.extend((a, b, True) for a, b in same)
        pairs.extend((a, b, False) for a, b in different)
    return pairs


def encoded_images(identities, pairs, image_size=None, resize=False):
    """The encoded bytes of every image the pairs use, checked: {(identity, index): bytes}.

    Raises:
      ImageFolderError: an unreadable image, or one of another size without resize.
    """
    needed = sorted(set(image for a, b, _ in pairs for image in (a, b)))
    checker = ImageChecker(image_size if resize else None)
    payloads = {}
    try:
        for identity, index in needed:
            path = identities[identity][1][index]
            payload, size = checker.check(path, image_size)
            image_size = image_size or size
            payloads[(identity, index)] = payload
    finally:
        checker.close()
    return payloads


def bin_bytes(pairs, payloads):
    """The insightface pickle: ([encoded images], [issame]) with pair i at 2i, 2i+1."""
    bins = [payloads[image] for a, b, _ in pairs for image in (a, b)]
    issame = [same for _, _, same in pairs]
    return pickle.dumps((bins, issame), protocol=PICKLE_PROTOCOL)


def write_bin(path, pairs, payloads):
    """Writes the insightface pickle of the pairs to `path`, atomically."""
    write_atomically(path, bin_bytes(pairs, payloads))


def get_parser():
    parser = argparse.ArgumentParser(
        prog=PROG, description='Make an insightface verification .bin (same/different pairs '
                               'in 10 folds) from a folder of faces, one folder per person.')
    add_image_dir_flags(parser)
    parser.add_argument('--output', required=True, help='the .bin to write, e.g. '
                                                        'datasets/my_val.bin')
    parser.add_argument('--num_pairs', type=positive_int, default=600,
                        help='pairs in all, a multiple of 20: half same-person, half '
                             'different-person, spread evenly over the 10 folds')
    parser.add_argument('--seed', type=int, default=0, help='random seed of the pairs')
    parser.add_argument('--split_identities', action='store_true',
                        help='put every person in one fold only (as LFW\'s folds)')
    parser.add_argument('--overwrite', action='store_true',
                        help='replace an existing --output that this tool wrote')
    quiet.add_flag(parser)
    return parser


def main(argv=None):
    """Runs the CLI; returns the exit status (0 done, 2 bad input or output)."""
    args = get_parser().parse_args(argv)
    try:
        if os.path.isdir(args.output):
            raise PairsError('--output %s is a folder; expected a .bin file name' % args.output)
        check_output(args.output, PROG, '--output', args.overwrite)
        if args.resize and args.image_size is None:
            raise PairsError('--resize needs --image_size (the size to resize to)')
        folder = os.path.dirname(os.path.abspath(args.output))
        if not os.path.isdir(folder):
            raise PairsError('--output %s: folder %s does not exist' % (args.output, folder))
        identities = scan_identities(args.image_dir)
        pairs = make_pairs(identities, args.num_pairs, args.seed, args.split_identities)
        payloads = encoded_images(identities, pairs, args.image_size, args.resize)
        # Checked again as it is replaced: it may have changed while the images decoded.
        write_recorded(args.output, bin_bytes(pairs, payloads), PROG, '--output',
                       args.overwrite)
    except (PairsError, ImageFolderError, OutputError, OSError) as error:
        sys.stderr.write('%s: error: %s\n' % (PROG, error))
        return 2
    people = len(set(image[0] for a, b, _ in pairs for image in (a, b)))
    sys.stderr.write('%s: wrote %d pairs (%d same-person) of %d images of %d people in %d '
                     'folds%s to %s\n' % (PROG, len(pairs), len(pairs) // 2, len(payloads),
                                          people, NROF_FOLDS, ', people split by fold'
                                          if args.split_identities else '', args.output))
    return 0


if __name__ == '__main__':
    sys.exit(main())
