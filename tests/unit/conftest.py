"""Unit-test fixtures: the repo on sys.path, socket pairs with timeouts, background threads.

Unit tests run no ffmpeg and start no processes. They use socket.socketpair(), and listening
sockets on 127.0.0.1 port 0 where the code under test connects by address (the boss's link, the
in-process tracker).
"""
from __future__ import annotations

import socket
import sys
import threading
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

IO_WAIT = 5.0   # every blocking call in a unit test gives up after this long


class Task:
    """A function running in a thread; join() returns its result or re-raises its exception."""

    def __init__(self, fn: Callable[..., Any], *args: Any) -> None:
        self.result: Any = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(fn, args), daemon=True)
        self.thread.start()

    def _run(self, fn: Callable[..., Any], args: tuple) -> None:
        try:
            self.result = fn(*args)
        except BaseException as exc:   # handed to the test thread by join()
            self.error = exc

    def join(self, timeout: float = IO_WAIT) -> Any:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), f"background task still running after {timeout}s"
        if self.error is not None:
            raise self.error
        return self.result


@pytest.fixture
def background() -> Iterator[Callable[..., Task]]:
    """start(fn, *args) runs fn in a thread; every thread is joined (with a timeout) at teardown."""
    tasks: list[Task] = []

    def start(fn: Callable[..., Any], *args: Any) -> Task:
        task = Task(fn, *args)
        tasks.append(task)
        return task

    yield start
    for task in tasks:
        task.thread.join(IO_WAIT)
    assert not any(t.thread.is_alive() for t in tasks), "a background task outlived its test"


@pytest.fixture
def sock_pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    """Two connected sockets, each with a timeout so a broken test fails instead of hanging."""
    a, b = socket.socketpair()
    a.settimeout(IO_WAIT)
    b.settimeout(IO_WAIT)
    try:
        yield a, b
    finally:
        a.close()
        b.close()
