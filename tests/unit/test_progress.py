"""The boss's rate and ETA (client/progress.py): the cluster's pace over a window, not the last
jump of a chunk's frames."""
from __future__ import annotations

import pytest

from ffdt.client import progress
from ffdt.client.progress import PhaseProgress, Rate, clock


def test_the_rate_is_the_pace_over_the_window():
    rate = Rate(window=20.0)
    assert rate.add(0, 1000, now=0.0) == (0.0, None)           # no pace yet: no ETA
    assert rate.add(100, 1000, now=10.0) == (10.0, 90.0)
    # a chunk's 200 frames counted at once moves the pace, not to 200 fps
    fps, left = rate.add(300, 1000, now=11.0)
    assert fps == pytest.approx(300 / 11) and left == pytest.approx(700 / fps)
    fps, _ = rate.add(400, 1000, now=40.0)       # the readings older than 20 s drop out (the last two stay)
    assert fps == pytest.approx(100 / 29)


def test_no_eta_from_the_first_few_frames():
    """The first progress of a chunk is a frame or two: an ETA from them read 1:30:31 for a job
    that took 12 s."""
    rate = Rate(window=20.0)
    rate.add(0, 5400, now=0.0)
    fps, left = rate.add(2, 5400, now=1.0)
    assert fps == pytest.approx(2.0) and left is None
    assert rate.add(2, 5400, now=4.0)[1] is None
    fps, left = rate.add(102, 5400, now=5.0)
    assert fps == pytest.approx(102 / 5) and left == pytest.approx((5400 - 102) / fps)


@pytest.mark.parametrize("seconds,shown", [(None, "--:--"), (0.2, "0:00"), (75, "1:15"), (3725.4, "1:02:05")])
def test_eta_reads_as_a_clock(seconds, shown):
    assert clock(seconds) == shown


class Lines:
    def __init__(self) -> None:
        self.lines: list[dict] = []

    def emit(self, event: str, **fields) -> None:
        self.lines.append({"event": event, **fields})


def test_a_phase_says_how_far_it_is_at_most_once_a_second(monkeypatch):
    now = [100.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: now[0])
    out = Lines()
    shown = PhaseProgress("probe", "reading the input", bars=False, json_out=out)
    shown.update(5.0, 0.0)                  # no total (no duration in the container): nothing to say
    shown.update(10.0, 600.0)
    now[0] += 0.5
    shown.update(20.0, 600.0)               # within the second: not said
    now[0] += 0.6
    shown.update(30.0, 600.0)
    shown.close()
    assert out.lines == [{"event": "phase_progress", "phase": "probe", "done": 10.0, "total": 600.0},
                         {"event": "phase_progress", "phase": "probe", "done": 30.0, "total": 600.0}]
