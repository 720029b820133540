"""ROC curves of verification results, one PNG per dataset.

matplotlib is imported only here and only when a plot is drawn, with the
non-interactive Agg backend, so evaluation without --plot_dir never needs it
and plotting works on a headless server.

Typical use:
    curves = [RocCurve('InsightFace_iter_2000.ckpt', result.fpr, result.tpr, result.accuracy)]
    png = render_roc('lfw', curves)
    with open(plot_path('plots', 'lfw'), 'wb') as out:
        out.write(png)
"""
import collections
import io
import os

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
    import matplotlib
    matplotlib.use('Agg')
    from matplotlib import pyplot

    figure, axes = pyplot.subplots(figsize=(6, 5), dpi=100)
    try:
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
        figure.tight_layout()
        buffer = io.BytesIO()
        figure.savefig(buffer, format='png')
    finally:
        pyplot.close(figure)
    return buffer.getvalue()
