"""Progress bars on stderr for the data tools: tqdm on a terminal, plain lines elsewhere."""
import sys

from tqdm import tqdm

# Off a terminal, ProgressBar prints plain lines, at most one per PLAIN_INTERVAL seconds.
PLAIN_INTERVAL = 5.0
PLAIN_FORMAT = '{desc}: {n}/{total}{unit} ({percentage:.1f}%), {rate_noinv_fmt}, ETA {remaining}'


class _PlainLines(object):
    """A file for tqdm off a terminal: each redraw becomes one line, blank ones are dropped.

    tqdm redraws in place with carriage returns, which a log file or a pipe shows as
    one ever-growing line; grep and tests want whole lines.
    """

    def __init__(self, stream):
        self._stream = stream

    def write(self, text):
        line = text.replace('\r', '').rstrip()  # tqdm pads a shorter redraw with spaces
        if line:
            self._stream.write(line + '\n')

    def flush(self):
        self._stream.flush()


class ProgressBar(object):
    """A tqdm progress bar on stderr; a context manager that closes it.

    On a terminal, tqdm's bar. Elsewhere (a log file, a pipe) a plain line at most
    every PLAIN_INTERVAL seconds and one at the end, e.g.
        mx2tfrecords: 6/6 images (100.0%), 1523.51 images/s, ETA 00:00
    Leaving the `with` block by an exception adds nothing (a terminal's bar is
    cleared), so the error message stays the tool's last line.
    """

    def __init__(self, total, label, unit='images', enabled=True, stream=None):
        stream = stream or sys.stderr
        self._plain = not (hasattr(stream, 'isatty') and stream.isatty())
        if self._plain:
            # delay: no "0/N" line at the start, which a run failing at once would print;
            # miniters=1: lines come from the clock alone, never from tqdm's monitor thread.
            options = dict(file=_PlainLines(stream), bar_format=PLAIN_FORMAT, leave=False,
                           mininterval=PLAIN_INTERVAL, delay=PLAIN_INTERVAL, miniters=1,
                           smoothing=0)  # the average rate: what a log reader compares
        else:
            options = dict(file=stream, dynamic_ncols=True)
        self._bar = tqdm(total=total, desc=label, unit=' ' + unit, disable=not enabled,
                         **options)

    def update(self, count):
        """Counts `count` more items done."""
        self._bar.update(count)

    def close(self, completed=True):
        """Shows the final count if completed (else clears a terminal's bar), then closes."""
        bar = self._bar
        if not bar.disable:
            if not completed:
                bar.leave = False
            elif self._plain and bar.last_print_n != bar.n:  # the final line, once
                bar.refresh()
        bar.close()

    def __enter__(self):
        return self

    def __exit__(self, error_type, unused_error, unused_traceback):
        self.close(completed=error_type is None)
