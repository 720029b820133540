"""Tests for training/time_left.py: the elapsed and remaining time that end the training line."""
import pytest

from training import time_left


class FakeClock(object):
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


@pytest.mark.parametrize('seconds, text', [
    (0, '0s'), (44.6, '45s'), (59.4, '59s'), (60, '1m00s'), (725, '12m05s'),
    (3599, '59m59s'), (3600, '1h00m'), (3780, '1h03m'), (86399, '23h59m'),
    (86400 + 4 * 3600 + 59, '1d04h'), (-3, '0s'),
])
def test_format_duration(seconds, text):
    assert time_left.format_duration(seconds) == text


@pytest.mark.parametrize('step, last_step, interval, count', [
    (0, 100, 20, 5),      # 20, 40, 60, 80, 100
    (0, 110, 20, 6),      # 20 ... 100, and the last step
    (20, 100, 20, 4),     # 20 itself is past
    (95, 100, 20, 1),
    (100, 100, 20, 0),
    (0, 10, 20, 1),       # only the last step
])
def test_occurrences(step, last_step, interval, count):
    assert time_left.occurrences(step, last_step, interval) == count


def test_rate_leaves_out_the_first_window_and_the_pauses():
    clock = FakeClock()
    timer = time_left.TimeLeft(0, 1000, {'validation': 500, 'checkpoint': 1000}, clock=clock)
    clock.now += 50.0  # 100 steps, 30 s of them warm-up: 0.5 s/step measured here
    assert timer.remaining(100) == pytest.approx(900 * 0.5)
    clock.now += 20.0  # 100 more steps at 0.2 s/step
    assert timer.remaining(200) == pytest.approx(800 * 0.2)
    clock.now += 20.0 + 60.0  # 100 steps, then a validation of 60 s
    timer.paused('validation', 60.0)
    # Still 0.2 s/step; validations still to come: at 500 and at 1000.
    assert timer.remaining(300) == pytest.approx(700 * 0.2 + 2 * 60.0)
    clock.now += 20.0 + 10.0
    timer.paused('checkpoint', 10.0)
    timer.paused('validation', 40.0)  # mean of the two: 50 s
    clock.now += 40.0
    assert timer.remaining(400) == pytest.approx(600 * 0.2 + 2 * 50.0 + 1 * 10.0)


def test_suffix():
    clock = FakeClock()
    timer = time_left.TimeLeft(200, 1200, {'validation': 2000, 'checkpoint': 10000}, clock=clock)
    assert timer.suffix(200) == ', 0s elapsed, ? left'  # nothing measured yet
    clock.now += 725.0
    assert timer.suffix(250) == ', 12m05s elapsed, 3h49m left'  # 950 steps at 14.5 s, warm-up in
    clock.now += 100.0  # measured from the previous line on: 100 s for 100 steps
    # 850 steps at 1 s; the last step's validation and save not seen yet.
    assert timer.suffix(350) == ', 13m45s elapsed, 14m10s left'
    assert timer.suffix(1200).endswith(', 0s left')
