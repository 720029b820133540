"""LFW's own folds: a verification .bin of one fold of `pairs.txt`, and a training folder
of the people in no held-out fold.

LFW's View 2 `pairs.txt` (http://vis-www.cs.umass.edu/lfw/pairs.txt) holds 10
folds that share no person, each with 300 same-person lines `name n1 n2` then
300 different-person lines `name1 n1 name2 n2` (images `name/name_%04d.jpg`).
The LFW recipe validates on fold 5 and trains on everyone who is not in folds
5 to 10, so training and validation never share a person:

    python3 data/lfw_pairs.py --pairs_txt pairs.txt --image_dir lfw_112 --fold 5 \\
        --output datasets/lfw/lfw_dev.bin --train_dir lfw_112_train --hold_out 5-10

The .bin is insightface's layout (see make_pairs.py), the fold's pairs
ordered so that each tenth of it holds as many same as different pairs (the
protocol scores tenths); the training folder holds symbolic links to the
people's folders, for folder2tfrecords.py.

Exit status: 0 done; 2 bad input (one line on stderr naming it).
"""
import argparse
import os
import sys

if __name__ == '__main__' and not __package__:  # run as a file: see data/as_module.py
    import as_module
    as_module.rerun_as_module(__file__)

# First: silences TensorFlow's logs before anything below imports it.
from data import quiet  # noqa: E402
from data.image_files import ImageFolderError  # noqa: E402
from data.make_pairs import NROF_FOLDS, PairsError, encoded_images, write_bin  # noqa: E402

PROG = 'lfw_pairs'


def read_pairs_txt(path):
    """[fold: [(name1, number1, name2, number2, issame)]] of an LFW pairs.txt.

    Raises:
      PairsError: a line that is not LFW's format (named with its number).
    """
    try:
        with open(path) as pairs_file:
            lines = [line.split() for line in pairs_file if line.strip()]
    except (IOError, OSError) as error:
        raise PairsError('--pairs_txt %s: cannot read (%s)' % (path, error.strerror or error))
    try:
        num_folds, per_kind = int(lines[0][0]), int(lines[0][1])
    except (IndexError, ValueError):
        raise PairsError('%s line 1: expected "<folds> <pairs per kind>", e.g. "10 300"' % path)
    if len(lines) != 1 + num_folds * 2 * per_kind:
        raise PairsError('%s: %d pair lines; "%d %d" on line 1 means %d'
                         % (path, len(lines) - 1, num_folds, per_kind,
                            num_folds * 2 * per_kind))
    folds = []
    for fold in range(num_folds):
        pairs = []
        for index in range(2 * per_kind):
            number = 1 + fold * 2 * per_kind + index
            fields = lines[number]
            try:
                if index < per_kind and len(fields) == 3:
                    pairs.append((fields[0], int(fields[1]), fields[0], int(fields[2]), True))
                elif index >= per_kind and len(fields) == 4:
                    pairs.append((fields[0], int(fields[1]), fields[2], int(fields[3]), False))
                else:
                    raise ValueError()
            except ValueError:
                raise PairsError('%s line %d: expected "%s"' % (
                    path, number + 1, 'name n1 n2' if index < per_kind else
                    'name1 n1 name2 n2'))
        folds.append(pairs)
    return folds


def in_tenths(pairs):
    """The same pairs, then the different ones, dealt so each tenth holds both equally."""
    same = [p for p in pairs if p[4]]
    different = [p for p in pairs if not p[4]]
    if len(same) != len(different) or len(same) % NROF_FOLDS:
        raise PairsError('a fold of %d same and %d different pairs cannot be split into %d '
                         'equal tenths' % (len(same), len(different), NROF_FOLDS))
    step = len(same) // NROF_FOLDS
    ordered = []
    for tenth in range(NROF_FOLDS):
        ordered += same[tenth * step:(tenth + 1) * step]
        ordered += different[tenth * step:(tenth + 1) * step]
    return ordered


def fold_bin(folds, fold, image_dir, output):
    """Writes fold `fold` (1-based) as a .bin; returns the number of pairs."""
    if not 1 <= fold <= len(folds):
        raise PairsError('--fold %d: pairs.txt has folds 1 to %d' % (fold, len(folds)))
    pairs = in_tenths(folds[fold - 1])
    names = sorted(set(p[0] for p in pairs) | set(p[2] for p in pairs))
    index = {name: i for i, name in enumerate(names)}
    # make_pairs' identities: (name, [paths]); an image is (identity index, path index).
    paths = {name: {} for name in names}
    for first, n1, second, n2, _ in pairs:
        for name, number in ((first, n1), (second, n2)):
            paths[name].setdefault(number, os.path.join(image_dir, name, '%s_%04d.jpg'
                                                         % (name, number)))
    identities = [(name, [paths[name][n] for n in sorted(paths[name])]) for name in names]
    position = {name: {n: i for i, n in enumerate(sorted(paths[name]))} for name in names}
    as_images = [((index[a], position[a][na]), (index[b], position[b][nb]), same)
                 for a, na, b, nb, same in pairs]
    for name, files in identities:
        for path in files:
            if not os.path.isfile(path):
                raise ImageFolderError('%s not found: pairs.txt names it; --image_dir should '
                                       'hold LFW as <name>/<name>_<number>.jpg' % path)
    write_bin(output, as_images, encoded_images(identities, as_images))
    return len(pairs)


def link_train_people(folds, held_out, image_dir, train_dir):
    """Links into train_dir every person of image_dir in none of the held-out folds."""
    excluded = set()
    for fold in held_out:
        for first, _, second, _, _ in folds[fold - 1]:
            excluded.update((first, second))
    os.makedirs(train_dir)
    kept = 0
    for name in sorted(os.listdir(image_dir)):
        if name not in excluded and os.path.isdir(os.path.join(image_dir, name)):
            os.symlink(os.path.abspath(os.path.join(image_dir, name)),
                       os.path.join(train_dir, name))
            kept += 1
    return kept, len(excluded)


def _fold_range(text):
    first, _, last = text.partition('-')
    return list(range(int(first), int(last or first) + 1))


def get_parser():
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split('\n')[0])
    parser.add_argument('--pairs_txt', required=True, help="LFW's View 2 pairs.txt")
    parser.add_argument('--image_dir', required=True,
                        help='LFW prepared by prepare_faces.py: <name>/<name>_<number>.jpg')
    parser.add_argument('--fold', type=int, default=5, help='the fold to write (1-10)')
    parser.add_argument('--output', required=True, help='the .bin to write')
    parser.add_argument('--train_dir', default=None,
                        help='also make this folder of links to the people of no held-out fold')
    parser.add_argument('--hold_out', type=_fold_range, default=None,
                        help='folds kept out of --train_dir, e.g. 5-10; default: --fold alone')
    quiet.add_flag(parser)
    return parser


def main(argv=None):
    args = get_parser().parse_args(argv)
    try:
        for path in [args.output] + ([args.train_dir] if args.train_dir else []):
            if os.path.exists(path):
                raise PairsError('%s exists; give a new name' % path)
        folds = read_pairs_txt(args.pairs_txt)
        held_out = args.hold_out or [args.fold]
        if any(not 1 <= f <= len(folds) for f in held_out):
            raise PairsError('--hold_out %s: pairs.txt has folds 1 to %d'
                             % (','.join(map(str, held_out)), len(folds)))
        count = fold_bin(folds, args.fold, args.image_dir, args.output)
        if args.train_dir:
            kept, excluded = link_train_people(folds, held_out, args.image_dir, args.train_dir)
    except (PairsError, ImageFolderError, OSError) as error:
        sys.stderr.write('%s: error: %s\n' % (PROG, error))
        return 2
    sys.stderr.write('%s: wrote fold %d (%d pairs) to %s\n' % (PROG, args.fold, count,
                                                               args.output))
    if args.train_dir:
        sys.stderr.write('%s: linked %d people (not the %d of folds %s) into %s\n'
                         % (PROG, kept, excluded, ','.join(map(str, held_out)),
                            args.train_dir))
    return 0


if __name__ == '__main__':
    sys.exit(main())
