"""The worker's life with the tracker (client/tracker_client.py): beat, and after a loss,
register again, spread out in time so a farm does not log in all at once."""
from __future__ import annotations

import threading
import time

import pytest

from ffdt.client import tracker_client
from ffdt.client.tracker_client import TrackerClient, keep_registered
from ffdt.common.errors import ConnectionClosed, PeerUnreachable, RequestRejected
from ffdt.common.protocol import Role


@pytest.fixture(autouse=True)
def quick_beats(monkeypatch):
    monkeypatch.setattr(tracker_client, "HEARTBEAT_INTERVAL", 0.01)


def run_loop(beats: list, registers: list, spread: float, until: float = 5.0) -> tuple[list[float], list[float]]:
    """Run keep_registered with scripted outcomes (an exception to raise, or None) until both
    scripts are used up; returns when each register call came, and when the loss was seen."""
    stopping = threading.Event()
    lost_at: list[float] = []
    called_at: list[float] = []

    def beat() -> None:
        outcome = beats.pop(0) if beats else None
        if not beats and not registers:
            stopping.set()
        if outcome is not None:
            lost_at.append(time.monotonic())
            raise outcome

    def register() -> None:
        called_at.append(time.monotonic())
        outcome = registers.pop(0)
        if outcome is not None:
            raise outcome

    thread = threading.Thread(target=keep_registered, args=(beat, register, stopping), kwargs={"spread": spread})
    thread.start()
    thread.join(until)
    stopping.set()
    thread.join(5)
    assert not thread.is_alive()
    return called_at, lost_at


def test_a_lost_tracker_is_registered_with_again_after_a_random_wait():
    waits = []
    for _ in range(12):
        called, lost = run_loop([None, ConnectionClosed("gone")], [None], spread=0.2)
        assert len(called) == 1
        waits.append(called[0] - lost[0])
    assert all(0 <= w < 0.2 + 0.1 for w in waits)
    assert max(waits) - min(waits) > 0.02, "the wait is drawn, not fixed: a farm's workers spread out"


def test_registration_is_retried_with_backoff_until_the_tracker_is_back():
    called, _ = run_loop([RequestRejected("unknown worker")], [PeerUnreachable("down"), None], spread=0.0)
    assert len(called) == 2 and called[1] - called[0] >= tracker_client.RECONNECT_BACKOFF_FIRST / 2 - 0.01


def test_a_heartbeat_never_logs_in_again():
    """A heartbeat on a lost connection fails at once: the worker registers again (one login),
    instead of logging in for a beat the restarted tracker would refuse, then again to register."""
    client = TrackerClient(("127.0.0.1", 9), "w", "pw", Role.WORKER, deadline=0.3)   # port 9: nothing listens
    with pytest.raises(ConnectionClosed):
        client.heartbeat(0)
    with pytest.raises(PeerUnreachable):                  # other calls do try to connect
        client.status()
