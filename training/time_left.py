"""Elapsed and remaining time of a training run, for the end of the training log line.

The remaining time is what the steps still to train cost at the measured step
rate, plus what the validations and checkpoints still to come cost at the
measured cost of one (counted once one has been seen). The step rate leaves out
the time spent validating and saving, and, once the first line is logged, the
first steps (graph compilation, warm-up of the input pipeline).

Typical use (training/trainer.py):
    clock = TimeLeft(step, last_step, {'validation': 2000, 'checkpoint': 10000})
    ... save ...; clock.paused('checkpoint', seconds)
    logging.info(line + clock.suffix(step))   # ', 12m05s elapsed, 1h03m left'
"""
import time


def format_duration(seconds):
    """45s, 12m05s, 1h03m, 2d04h: two units at most, the larger first."""
    seconds = int(round(max(seconds, 0)))
    if seconds < 60:
        return '%ds' % seconds
    if seconds < 3600:
        return '%dm%02ds' % divmod(seconds, 60)
    if seconds < 86400:
        return '%dh%02dm' % (seconds // 3600, seconds % 3600 // 60)
    return '%dd%02dh' % (seconds // 86400, seconds % 86400 // 3600)


def occurrences(step, last_step, interval):
    """How many times an every-`interval` event still happens after `step`: at each
    multiple of `interval` in (step, last_step], and once more at `last_step` when it
    is not a multiple (the trainer validates and saves there too)."""
    if step >= last_step:
        return 0
    count = last_step // interval - step // interval
    return count + (1 if last_step % interval else 0)


class TimeLeft(object):
    """Measures a run from construction on; `suffix(step)` ends the training line."""

    def __init__(self, step, last_step, intervals, clock=time.time):
        """
        Args:
          step: the global step training starts (or resumes) at.
          last_step: the global step it stops at.
          intervals: {kind: interval in steps} of the pauses to expect, e.g.
            {'validation': --validate_interval, 'checkpoint': --ckpt_interval}.
          clock: seconds (tests pass their own).
        """
        self._clock = clock
        self._start = clock()
        self._last_step = last_step
        self._intervals = dict(intervals)
        self._pauses = {kind: [0, 0.0] for kind in intervals}  # count, seconds
        self._anchor = (self._start, step, 0.0)  # time, step, paused seconds so far
        self._measured = False

    def _paused_total(self):
        return sum(seconds for _, seconds in self._pauses.values())

    def paused(self, kind, seconds):
        """Records one pause of `kind` (a validation, a checkpoint) and its length."""
        self._pauses[kind][0] += 1
        self._pauses[kind][1] += seconds

    def remaining(self, step):
        """Seconds to last_step from `step`, or None before any step was measured."""
        now = self._clock()
        since, from_step, paused_then = self._anchor
        if step <= from_step:
            return None
        if not self._measured:
            # From the next line on, the rate leaves out the first steps' warm-up.
            self._anchor = (now, step, self._paused_total())
            self._measured = True
        training = (now - since) - (self._paused_total() - paused_then)
        left = (self._last_step - step) * max(training, 0.0) / (step - from_step)
        for kind, (count, seconds) in self._pauses.items():
            if count:
                left += seconds / count * occurrences(step, self._last_step,
                                                      self._intervals[kind])
        return left

    def suffix(self, step):
        """', 12m05s elapsed, 1h03m left' (', ... left' unknown until a step is measured)."""
        left = self.remaining(step)
        return ', %s elapsed, %s left' % (format_duration(self._clock() - self._start),
                                          '?' if left is None else format_duration(left))
