"""What eval_ijb.py reports: the table (one row per checkpoint) and the JSON records.

The table is insightface's eval_ijbc.py table: TAR at FAR 1e-6 ... 1e-1 in percent with
two decimals, one row per checkpoint,

    checkpoint                target  TAR@FAR=1e-6  TAR@FAR=1e-5  ...  TAR@FAR=1e-1
    InsightFace_iter_2000.ckpt IJBC   85.10         91.52         ...  99.05

The JSON record of a row holds the same numbers as fractions and as the printed text.

Typical use:
    table = Table(['InsightFace_iter_2000.ckpt'])
    table.row('InsightFace_iter_2000.ckpt', 'IJBC', tars)
"""
import os
import sys

import numpy as np

from evaluation.ijb_protocol import FARS

FAR_LABELS = tuple(('%.0e' % far).replace('e-0', 'e-') for far in FARS)  # '1e-6', ...
COLUMNS = tuple('TAR@FAR=' + label for label in FAR_LABELS)


def percentages(tars):
    """The printed cells: 100 x each TAR, two decimals (eval_ijbc.py's '%.2f')."""
    return ['%.2f' % (tar * 100) for tar in tars]


class Table(object):
    """Prints the table row by row (the header with the first row), its first column
    sized from the labels known beforehand; keeps the printed lines."""

    def __init__(self, labels, out=None):
        self.out = out or sys.stdout
        self.first = max([len('checkpoint')] + [len(label) for label in labels])
        self.lines = []

    def _line(self, cells):
        text = '%-*s  %-6s' % (self.first, cells[0], cells[1])
        for cell in cells[2:]:
            text += '  %-12s' % cell
        self.lines.append(text.rstrip())
        self.out.write(self.lines[-1] + '\n')
        self.out.flush()

    def row(self, label, target, tars):
        if not self.lines:
            self._line(('checkpoint', 'target') + COLUMNS)
        self._line((label, target) + tuple(percentages(tars)))


def labels_of(paths):
    """Short names for the table: file names, or full paths if two would collide."""
    names = [os.path.basename(os.path.normpath(p)) for p in paths]
    return names if len(set(names)) == len(names) else list(paths)


def counts(meta):
    """{images, templates, media, pairs, genuine, impostor} of a release."""
    media = np.unique(np.stack([meta.templates, meta.medias], axis=1), axis=0).shape[0]
    genuine = int(meta.labels.sum())
    return {'images': len(meta.image_names), 'templates': int(np.unique(meta.templates).size),
            'media': int(media), 'pairs': int(meta.labels.size), 'genuine': genuine,
            'impostor': int(meta.labels.size) - genuine}


def result_record(label, model, tars, auc, source):
    """One row as JSON: the model, TAR@FAR as fractions and as printed, the AUC."""
    record = {'label': label, 'checkpoint': os.path.abspath(model.path), 'kind': model.kind,
              'sha256': model.sha256, 'embeddings_from': source,
              'tar_at_far': dict(zip(FAR_LABELS, [float(t) for t in tars])),
              'tar_at_far_percent': dict(zip(FAR_LABELS, percentages(tars))),
              'auc': float(auc)}
    if model.network is not None:
        record.update(net_depth=model.network.depth, variant=model.network.variant,
                      norm=model.network.norm)
    return record
