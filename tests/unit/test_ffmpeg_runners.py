"""The runners of common/ffmpeg.py with real child processes: what a child sees of our
environment, and how quickly a child ends when the boss is stopped."""
from __future__ import annotations

import threading
import time

import pytest

from common import ffmpeg
from common.errors import FFmpegError


def test_children_get_none_of_our_secrets(monkeypatch):
    """ffmpeg parses hostile bytes: what it can read of our environment must hold no password."""
    monkeypatch.setenv("FFDT_PASSWORD", "hunter2-secret")
    monkeypatch.setenv("SOME_TOKEN", "t0ken")
    seen = ffmpeg.run(["env"], timeout=10)
    with ffmpeg.run_lines(["env"], timeout=10) as lines:
        seen_streaming = "".join(lines)
    for text in (seen, seen_streaming):
        assert "hunter2-secret" not in text and "FFDT_" not in text and "t0ken" not in text
        assert "PATH=" in text


@pytest.mark.parametrize("streaming", [False, True], ids=["run", "run_lines"])
def test_kill_children_ends_a_child_another_thread_waits_on(streaming):
    """Ctrl-C/SIGTERM reach the main thread; a check waiting in a pool thread must not hold the
    exit up for the length of its deadline."""
    outcome: list[BaseException | str] = []

    def check() -> None:
        try:
            if streaming:
                with ffmpeg.run_lines(["sleep", "60"], timeout=120) as lines:
                    list(lines)
            else:
                ffmpeg.run(["sleep", "60"], timeout=120)
            outcome.append("finished")
        except FFmpegError as exc:
            outcome.append(exc)

    thread = threading.Thread(target=check)
    thread.start()
    time.sleep(0.3)
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        with ffmpeg.children_killed_on_error():
            raise KeyboardInterrupt
    thread.join(10)
    assert not thread.is_alive() and time.monotonic() - started < 5
    assert isinstance(outcome[0], FFmpegError)


def test_a_child_past_its_deadline_is_killed():
    started = time.monotonic()
    with pytest.raises(FFmpegError, match="no result after 0.5s"):
        ffmpeg.run(["sleep", "30"], timeout=0.5)
    assert time.monotonic() - started < 5
