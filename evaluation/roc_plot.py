"""ROC curves of verification results, one PNG per dataset (drawn by png_figure).

Typical use:
    curves = [RocCurve('InsightFace_iter_2000.ckpt', result.fpr, result.tpr, result.accuracy)]
    png = render_roc('lfw', curves)
    with open(plot_path('plots', 'lfw'), 'wb') as out:
        out.write(png)
"""
import collections
import os

from evaluation.png_figure import render_png

RocCurve = collections.namedtuple('RocCurve', [
    'label',     # str, e.g. the checkpoint's file name
    'fpr',       # float [T], mean test-fold false positive rate per threshold
    'tpr',       # float [T], mean test-fold true positive rate per threshold
    'accuracy',  # float, the 10-fold accuracy shown in the legend
])


def plot_path(plot_dir, dataset):
    """Where the ROC of `dataset` goes: <plot_dir>/roc_<dataset>.png."""
    return os.path.join(plot_dir, 'roc_%s.png' % dataset)


def render_roc(dataset, curves):
    """Draws one ROC curve per checkpoint.

    Args:
      dataset: the dataset name, for the title.
      curves: list of RocCurve.
    Returns:
      bytes, a PNG image (the caller writes it where and how it likes).
    """
    def draw(axes):
        for curve in curves:
            axes.plot(curve.fpr, curve.tpr, linewidth=1.5,
                      label='%s (accuracy %.5f)' % (curve.label, curve.accuracy))
        axes.plot([0, 1], [0, 1], color='grey', linestyle=':', linewidth=1)
        axes.set_xlim(0.0, 1.0)
        axes.set_ylim(0.0, 1.02)
        axes.set_xlabel('false positive rate')
        axes.set_ylabel('true positive rate')
        axes.set_title('ROC on %s (10-fold, flip-summed embeddings)' % dataset)
        axes.grid(True, alpha=0.3)
        axes.legend(loc='lower right', fontsize='small')

    return render_png(draw)
