"""The verification sets a tool scores (train_nets.py's validation, eval_ckpt_file.py):
found by name in a folder, decoded, and checked for the 10-fold protocol, all before any
graph is built, so that a set too small for the folds is refused up front and not at its
first use. Problems are one line (UsageError) naming the file and the flag. `log_result`
prints each score as the original did."""
import os

import numpy as np

from data import eval_data_reader
from data.cli import UsageError


def unique(names):
    """`names` without repeats, in their first order."""
    seen = set()
    return [n for n in names if not (n in seen or seen.add(n))]


def find(db_path, names):
    """[(name, path of <db_path>/<name>.bin)] for each distinct name; UsageError if missing."""
    found = []
    for name in unique(names):
        path = os.path.join(db_path, name + '.bin')
        if not os.path.isfile(path):
            raise UsageError('verification set %s not found (--eval_db_path %s, '
                             '--eval_datasets %s): expected an insightface .bin file'
                             % (path, db_path, name))
        found.append((name, path))
    return found


def load(bin_paths, image_size):
    """Decodes every .bin of find(); returns [(name, path, images, issame bool array)].

    Raises:
      UsageError: an unreadable or corrupt file, another image size, or too few
        pairs for the eval_data_reader.NROF_FOLDS folds.
    """
    sets = []
    folds = eval_data_reader.NROF_FOLDS
    for name, path in bin_paths:
        try:
            images, issame = eval_data_reader.load_bin(path, tuple(image_size))
        except ValueError as error:
            raise UsageError(str(error))
        if len(issame) < folds:
            raise UsageError('%s holds %d pairs; the %d-fold protocol needs at least %d '
                             '(--eval_datasets %s)' % (path, len(issame), folds, folds, name))
        sets.append((name, path, images, np.asarray(issame, bool)))
    return sets


def log_result(name, step, result, logger):
    """Logs the original's two lines for a verification.VerificationResult, e.g.
    '[lfw][2000]XNorm: 21.843718' and '[lfw][2000]Accuracy-Flip: 0.99517+-0.00359'."""
    logger.info('[%s][%d]XNorm: %f', name, step, result.xnorm)
    logger.info('[%s][%d]Accuracy-Flip: %1.5f+-%1.5f', name, step, result.accuracy,
                result.accuracy_std)
