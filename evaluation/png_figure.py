"""A matplotlib figure drawn off-screen and returned as PNG bytes, for the ROC plots.

matplotlib is imported only when a figure is drawn, with the non-interactive Agg
backend, so a tool run without a plot never needs it and plotting works on a
headless server; the figure is closed however drawing ends.

Typical use:
    png = render_png(lambda axes: axes.plot([0, 1], [0, 1]))
"""
import io

FIGURE_INCHES = (6, 5)
DPI = 100


def render_png(draw):
    """Runs draw(axes) on a new figure; returns the figure as PNG bytes."""
    import matplotlib
    matplotlib.use('Agg')
    from matplotlib import pyplot

    figure, axes = pyplot.subplots(figsize=FIGURE_INCHES, dpi=DPI)
    try:
        draw(axes)
        figure.tight_layout()
        buffer = io.BytesIO()
        figure.savefig(buffer, format='png')
    finally:
        pyplot.close(figure)
    return buffer.getvalue()
