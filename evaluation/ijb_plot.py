"""The ROC plot of IJB-B/IJB-C 1:1 verification, as insightface's eval_ijbc.py draws it.

Log-scaled FAR from 1e-6 to 1e-1 (ticks at each decade), TAR from 0.3 to 1 (lower when a
curve lies below 0.3 there, as an untrained network's does), a dashed grid, one curve per
checkpoint labelled with its AUC (drawn by png_figure, off-screen).

IJB-C's ROC has a point per distinct score of 15.7 M pairs; more than MAX_POINTS points
are thinned to those nearest a log-spaced FAR grid that is much finer than a pixel.

Typical use:
    png = render_roc('IJBC', [RocCurve('r100', curve.fpr, curve.tpr, curve.auc)])
"""
import collections
import math

import numpy as np

from evaluation.ijb_protocol import FARS
from evaluation.png_figure import render_png

MAX_POINTS = 20000
ZERO_FAR = 1e-7  # where the TAR at FAR 0 is drawn: left of the plot's 1e-6
_TAR_FLOOR = 0.3  # the reference's lower TAR limit

RocCurve = collections.namedtuple('RocCurve', [
    'label',  # str, e.g. the checkpoint's file name
    'fpr',    # float [K], FAR, increasing (ijb_protocol.roc)
    'tpr',    # float [K], TAR
    'auc',    # float, area under the curve
])


def thin(fpr, tpr, max_points=MAX_POINTS):
    """The points of a ROC to draw on a log FAR axis: at most ~2 * max_points + 1.

    Of the points at FAR 0 (off a log axis) the last, the highest TAR, stays, moved to
    a FAR left of the plot (ZERO_FAR, or a tenth of the smallest FAR above 0 if that is
    smaller), so that a set with few impostor pairs shows its TAR there as a line from
    the left edge. Of more than max_points others, for each FAR of a log-spaced grid the
    last point at or below it and the first above it stay, so the drawn curve keeps its
    corners to within the grid's spacing (a factor 10 ** (7 / max_points)).
    """
    fpr, tpr = np.asarray(fpr, np.float64), np.asarray(tpr, np.float64)
    shown = fpr > 0
    zero_tpr = tpr[~shown][-1:]
    fpr, tpr = fpr[shown], tpr[shown]
    if fpr.size > max_points:
        grid = np.logspace(-7, 0, max_points)
        above = np.searchsorted(fpr, grid, side='right')
        keep = np.unique(np.clip(np.concatenate([above - 1, above]), 0, fpr.size - 1))
        fpr, tpr = fpr[keep], tpr[keep]
    floor = min(ZERO_FAR, fpr[0] / 10.0) if fpr.size else ZERO_FAR
    return (np.concatenate([np.full(zero_tpr.size, floor), fpr]),
            np.concatenate([zero_tpr, tpr]))


def render_roc(target, curves):
    """Draws the curves.

    Args:
      target: 'IJBC' or 'IJBB', for the title.
      curves: list of RocCurve.
    Returns:
      bytes, a PNG image.
    """
    low, high = FARS[0], FARS[-1]

    def draw(axes):
        floor = _TAR_FLOOR
        for curve in curves:
            fpr, tpr = thin(curve.fpr, curve.tpr)
            axes.plot(fpr, tpr, linewidth=1,
                      label='[%s (AUC = %0.4f %%)]' % (curve.label, curve.auc * 100))
            seen = tpr[fpr <= high]  # the curve rises: its lowest visible TAR is there
            if seen.size:
                floor = min(floor, math.floor(seen.min() * 10) / 10.0)
        axes.set_xscale('log')
        axes.set_xlim(low, high)
        axes.set_ylim(floor, 1.0)
        axes.set_xticks(list(FARS))
        axes.set_yticks(np.linspace(floor, 1.0, int(round((1.0 - floor) * 10)) + 1))
        axes.grid(linestyle='--', linewidth=1)
        axes.set_xlabel('False Positive Rate')
        axes.set_ylabel('True Positive Rate')
        axes.set_title('ROC on %s (1:1 verification)' % target)
        axes.legend(loc='lower right', fontsize='small')

    return render_png(draw)
