"""Failed logins slow the next ones down, and connections are capped per address.

Password guessing is refused per address, never per user: an attacker elsewhere cannot lock a
user out, only the addresses that guess wrong. A user's recent failures, from anywhere, delay the
answer to each further failure a little (guessing one user's password from many addresses).
"""
from __future__ import annotations

import threading
import time
from collections import deque
from typing import Callable

FREE_FAILURES = 5          # failures in WINDOW before a wait is imposed
WINDOW = 300.0             # seconds a failure counts for
FIRST_WAIT = 1.0           # the wait after FREE_FAILURES, doubling with each further failure
MAX_WAIT = 60.0
USER_DELAY_STEP = 0.1      # seconds added to each failed login's answer per recent failure of that user
MAX_USER_DELAY = 2.0
MAX_TRACKED = 100_000      # keys remembered at most (the oldest are forgotten)


class LoginThrottle:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._failures: dict[str, deque[float]] = {}

    def wait_needed(self, address: str) -> float:
        """Seconds before a login from `address` is taken (0: now)."""
        now = self._clock()
        with self._lock:
            return self._wait(f"a:{address}", now)

    def failed(self, user: str, address: str) -> float:
        """Count a failed login; returns how long to delay its answer."""
        now = self._clock()
        with self._lock:
            for key in (f"a:{address}", f"u:{user}"):
                self._failures.setdefault(key, deque(maxlen=64)).append(now)
            while len(self._failures) > MAX_TRACKED:
                self._failures.pop(next(iter(self._failures)))
            recent = self._recent(f"u:{user}", now)
        return min(MAX_USER_DELAY, USER_DELAY_STEP * recent)

    def _recent(self, key: str, now: float) -> int:
        times = self._failures.get(key)
        if not times:
            return 0
        while times and now - times[0] > WINDOW:
            times.popleft()
        return len(times)

    def _wait(self, key: str, now: float) -> float:
        n = self._recent(key, now)
        if n < FREE_FAILURES:
            return 0.0
        wait = min(MAX_WAIT, FIRST_WAIT * 2 ** (n - FREE_FAILURES))
        return max(0.0, self._failures[key][-1] + wait - now)
