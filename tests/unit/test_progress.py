"""The boss's rate and ETA (client/progress.py): the cluster's pace over a window, not the last
jump of a chunk's frames."""
from __future__ import annotations

import pytest

from ffdt.client.progress import Rate, clock


def test_the_rate_is_the_pace_over_the_window():
    rate = Rate(window=20.0)
    assert rate.add(0, 1000, now=0.0) == (0.0, None)           # no pace yet: no ETA
    assert rate.add(100, 1000, now=10.0) == (10.0, 90.0)
    # a chunk's 200 frames counted at once moves the pace, not to 200 fps
    fps, left = rate.add(300, 1000, now=11.0)
    assert fps == pytest.approx(300 / 11) and left == pytest.approx(700 / fps)
    fps, _ = rate.add(400, 1000, now=40.0)       # the readings older than 20 s drop out (the last two stay)
    assert fps == pytest.approx(100 / 29)


@pytest.mark.parametrize("seconds,shown", [(None, "--:--"), (0.2, "0:00"), (75, "1:15"), (3725.4, "1:02:05")])
def test_eta_reads_as_a_clock(seconds, shown):
    assert clock(seconds) == shown
