"""The tracker's live workers and jobs (tracker/state.py), driven by a fake clock: no sleeping."""
from __future__ import annotations

import pytest

from ffdt.common.config import PEER_TTL
from ffdt.tracker.state import TrackerState, WorkerInfo

TTL = PEER_TTL


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def worker(name: str, *, encoders: tuple[str, ...] = ("libx264",), slots: int = 2, connection: int = 1
           ) -> WorkerInfo:
    host, port = "10.0.0.5", 9100
    return WorkerInfo(name=name, user=name.split("@")[0], host=host, msg_port=port, file_port=port + 1,
                      slots=slots, ffmpeg="ffmpeg 6.1", encoders=encoders, ticket_key=b"k" * 32,
                      connection=connection)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def state(clock) -> TrackerState:
    return TrackerState(clock=clock)


def names(workers: list[WorkerInfo]) -> list[str]:
    return [w.name for w in workers]


def test_registered_worker_is_live_and_stamped_with_the_clock(state, clock):
    state.register(worker("w1"))
    live = state.live_workers(TTL)
    assert names(live) == ["w1"]
    assert live[0].last_seen == clock.now          # stamped on registration, not taken from the caller


def test_worker_is_live_up_to_the_ttl_then_expires(state, clock):
    state.register(worker("w1"))
    clock.advance(TTL)
    assert names(state.live_workers(TTL)) == ["w1"]
    assert state.expire(TTL) == []
    clock.advance(0.5)
    assert state.live_workers(TTL) == []           # hidden even before the sweeper runs
    gone = state.expire(TTL)
    assert names(gone) == ["w1"]
    assert state.expire(TTL) == []                 # reported once
    assert state.live_workers(TTL) == []


def test_expire_removes_only_the_silent_ones(state, clock):
    state.register(worker("old"))
    clock.advance(TTL - 1)
    state.register(worker("new", connection=2))
    clock.advance(2)
    assert names(state.expire(TTL)) == ["old"]
    assert names(state.live_workers(TTL)) == ["new"]


def test_heartbeat_keeps_a_worker_alive(state, clock):
    state.register(worker("w1", connection=7))
    clock.advance(TTL - 1)
    assert state.heartbeat("w1", 7) is True
    clock.advance(TTL - 1)                         # 2*TTL-2 since registering, TTL-1 since the heartbeat
    assert state.expire(TTL) == []
    assert names(state.live_workers(TTL)) == ["w1"]


def test_heartbeat_from_another_connection_is_refused_and_does_not_refresh(state, clock):
    state.register(worker("w1", connection=7))
    clock.advance(TTL - 1)
    assert state.heartbeat("w1", 8) is False
    clock.advance(2)
    assert names(state.expire(TTL)) == ["w1"]      # the refused heartbeat kept nothing alive


def test_heartbeat_of_an_unknown_or_expired_worker_is_refused(state, clock):
    assert state.heartbeat("nobody", 1) is False
    state.register(worker("w1", connection=1))
    clock.advance(TTL + 1)
    state.expire(TTL)
    assert state.heartbeat("w1", 1) is False       # must register again


def test_reregistering_over_a_new_connection_takes_the_name_over(state):
    state.register(worker("w1", connection=1))
    state.register(worker("w1", connection=2))
    assert state.heartbeat("w1", 1) is False
    assert state.heartbeat("w1", 2) is True
    assert len(state.live_workers(TTL)) == 1


def test_drop_needs_the_owning_connection(state):
    state.register(worker("w1", connection=1))
    state.register(worker("w1", connection=2))     # the worker reconnected before the old socket closed
    assert state.drop("w1", 1) is False            # the old connection's cleanup must not remove it
    assert names(state.live_workers(TTL)) == ["w1"]
    assert state.drop("w1", 2) is True
    assert state.live_workers(TTL) == []
    assert state.drop("w1", 2) is False


def test_live_workers_filters_by_encoder(state):
    state.register(worker("x264-only", encoders=("libx264", "aac")))
    state.register(worker("vp9-too", encoders=("libx264", "libvpx-vp9"), connection=2))
    assert names(state.live_workers(TTL, encoder="libvpx-vp9")) == ["vp9-too"]
    assert sorted(names(state.live_workers(TTL, encoder="libx264"))) == ["vp9-too", "x264-only"]
    assert state.live_workers(TTL, encoder="libsvtav1") == []
    assert len(state.live_workers(TTL)) == 2       # no filter


def test_live_workers_honours_the_exclude_set(state):
    for i, n in enumerate(("a", "b", "c")):
        state.register(worker(n, connection=i))
    assert sorted(names(state.live_workers(TTL, exclude=frozenset({"a", "c"})))) == ["b"]
    assert state.live_workers(TTL, exclude=frozenset({"a", "b", "c"})) == []


def test_live_workers_lists_the_most_slots_first(state):
    state.register(worker("small", slots=1, connection=1))
    state.register(worker("big", slots=8, connection=2))
    state.register(worker("mid", slots=4, connection=3))
    for _ in range(5):                             # the shuffle must never beat the slot order
        assert names(state.live_workers(TTL)) == ["big", "mid", "small"]


def test_wait_for_workers(state):
    assert state.wait_for_workers(1, timeout=0.05) is False
    state.register(worker("w1"))
    assert state.wait_for_workers(1, timeout=0.05) is True
    assert state.wait_for_workers(2, timeout=0.05) is False


def test_a_registration_wakes_a_waiter(state, background):
    waiter = background(state.wait_for_workers, 1, 5.0)
    state.register(worker("w1"))
    assert waiter.join() is True


# ---------------------------------------------------------------- jobs

def test_started_job_belongs_to_its_boss(state, clock):
    job = state.start_job("alice", "movie.mp4")
    assert (job.boss, job.input, job.started) == ("alice", "movie.mp4", clock.now)
    assert state.job(job.id, "alice") is job
    assert state.job(job.id, "mallory") is None


def test_job_ids_are_unique(state):
    ids = {state.start_job("alice", "m.mp4").id for _ in range(50)}
    assert len(ids) == 50


def test_unknown_job_is_adopted_by_the_boss_naming_it(state):
    """After a tracker restart a boss's job is unknown; its events should still be recorded."""
    adopted = state.job("feedc0ffee00", "alice")
    assert adopted is not None and adopted.boss == "alice" and adopted.id == "feedc0ffee00"
    assert state.job("feedc0ffee00", "alice") is adopted       # the same job from now on
    assert state.job("feedc0ffee00", "mallory") is None        # and nobody else's


def test_an_ended_job_is_refused_from_then_on(state):
    job = state.start_job("alice", "m.mp4")
    state.end_job(job.id)
    assert state.job(job.id, "alice") is None
    state.end_job("never-started")                 # harmless


def test_an_unknown_job_is_adopted_only_with_a_well_formed_id_and_within_the_bosss_limit(state):
    from ffdt.tracker.state import MAX_JOBS_PER_BOSS
    assert state.job("0123456789ab", "alice").input == "?"      # as after a tracker restart
    assert state.job("not-a-job-id", "alice") is None
    for i in range(MAX_JOBS_PER_BOSS - 1):
        assert state.job(f"{i:012x}", "alice") is not None
    assert state.job("ffffffffffff", "alice") is None and state.start_job("alice", "m.mp4") is None
    assert state.start_job("bob", "m.mp4") is not None          # another boss is not affected
