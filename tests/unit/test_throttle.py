"""Failed logins slow the next ones (tracker/throttle.py), by address, never locking a user out
from everywhere."""
from __future__ import annotations

from ffdt.tracker.throttle import FIRST_WAIT, FREE_FAILURES, MAX_USER_DELAY, MAX_WAIT, USER_DELAY_STEP, WINDOW, LoginThrottle


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_few_failures_are_free_then_each_one_doubles_the_wait():
    clock = Clock()
    t = LoginThrottle(clock)
    for _ in range(FREE_FAILURES - 1):
        t.failed("alice", "10.0.0.9")
    assert t.wait_needed("10.0.0.9") == 0
    t.failed("alice", "10.0.0.9")
    assert t.wait_needed("10.0.0.9") == FIRST_WAIT
    t.failed("alice", "10.0.0.9")
    assert t.wait_needed("10.0.0.9") == 2 * FIRST_WAIT
    for _ in range(30):
        t.failed("alice", "10.0.0.9")
    assert t.wait_needed("10.0.0.9") == MAX_WAIT
    clock.now += MAX_WAIT
    assert t.wait_needed("10.0.0.9") == 0          # a wait, not a lockout


def test_guessing_from_one_address_does_not_lock_the_user_out_elsewhere():
    t = LoginThrottle(Clock())
    for _ in range(20):
        t.failed("alice", "10.0.0.9")
    assert t.wait_needed("10.0.0.9") > 0
    assert t.wait_needed("192.168.1.4") == 0                    # alice from her own machine
    # the user's failures from everywhere only delay the answer to a failure, up to a bound
    assert t.failed("alice", "192.168.1.4") == MAX_USER_DELAY


def test_failures_expire():
    clock = Clock()
    t = LoginThrottle(clock)
    for _ in range(FREE_FAILURES):
        t.failed("alice", "10.0.0.9")
    assert t.wait_needed("10.0.0.9") == FIRST_WAIT
    clock.now += WINDOW + 1
    assert t.wait_needed("10.0.0.9") == 0
    assert t.failed("alice", "10.0.0.9") == USER_DELAY_STEP   # one recent failure of alice's: a short delay
