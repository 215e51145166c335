"""The tracker's connection loop and request handlers (tracker/server.py), over real sockets.

A TrackerServer runs in-process on 127.0.0.1 port 0 (as `boss --local` starts one), with an
in-memory audit and a fake clock; clients log in with the real SCRAM client (common/auth.py).
TrackerState and ScramLogin on their own are covered by test_state.py and test_auth.py.
"""
from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from tests.conftest import poll_for

from ffdt.common.auth import login
from ffdt.common.errors import AuthError, ConnectionClosed, ProtocolError, RequestRejected
from ffdt.common.protocol import Msg, Role, client_hello, expect, recv_msg, send_msg
from ffdt.tracker.audit import MemoryAudit
from ffdt.tracker.auth import create_user
from ffdt.tracker.server import TrackerContext, TrackerServer
from ffdt.tracker.state import TrackerState
from ffdt.tracker.store import Store

IO_WAIT = 5.0              # every blocking call here gives up after this long
ITERATIONS = 4096          # the least scramp allows; keeps logins fast
PASSWORD = "correct horse battery staple"
SECRET = bytes(range(32))


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Tracker:
    server: TrackerServer
    audit: MemoryAudit
    state: TrackerState
    addr: tuple[str, int]

    def events(self, name: str) -> list[dict[str, Any]]:
        return [e for e in list(self.audit.events) if e["event"] == name]


@pytest.fixture
def tracker(tmp_path: Path) -> Iterator[Tracker]:
    store = Store(tmp_path / "tracker.db")
    for user, role in (("alice", "boss"), ("bob", "boss"), ("walt", "worker")):
        create_user(store, user, role, PASSWORD, iterations=ITERATIONS)
    audit, state = MemoryAudit(), TrackerState(clock=FakeClock())
    server = TrackerServer(("127.0.0.1", 0), TrackerContext(state, store, audit, SECRET))
    # a short poll interval: stop() waits for serve_forever to notice, each test's teardown
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), name="test-tracker", daemon=True)
    thread.start()
    try:
        yield Tracker(server, audit, state, ("127.0.0.1", server.server_address[1]))
    finally:
        server.stop()
        thread.join(IO_WAIT)
        store.close()


@pytest.fixture
def connect(tracker: Tracker) -> Iterator[Callable[..., socket.socket]]:
    """connect(role, user=None): a connection after hello; logged in as `user` if given."""
    opened: list[socket.socket] = []

    def make(role: Role = Role.BOSS, user: str | None = None) -> socket.socket:
        sock = socket.create_connection(tracker.addr, timeout=IO_WAIT)
        sock.settimeout(IO_WAIT)
        opened.append(sock)
        client_hello(sock, role, user or "test")
        if user is not None:
            login(sock, user, PASSWORD)
        return sock

    yield make
    for sock in opened:
        sock.close()


def call(sock: socket.socket, kind: Msg, **fields: Any) -> dict[str, Any]:
    """One request and its reply, whatever its type."""
    send_msg(sock, kind, **fields)
    return recv_msg(sock)


def refused(sock: socket.socket, kind: Msg, **fields: Any) -> str:
    """Send a request that must be refused with `error`; returns the reason."""
    reply = call(sock, kind, **fields)
    assert reply["type"] is Msg.ERROR, reply
    assert reply["in_reply_to"] == kind.value
    return reply["reason"]


def usable(sock: socket.socket) -> bool:
    return call(sock, Msg.PING)["type"] is Msg.PONG


def closed(sock: socket.socket) -> bool:
    try:
        recv_msg(sock)
    except (ConnectionClosed, ProtocolError):
        return True
    return False


def start_job(sock: socket.socket, **fields: Any) -> str:
    return expect_reply(sock, Msg.JOB_START, Msg.JOB, input="/home/alice/movie.mkv", **fields)["job"]


def expect_reply(sock: socket.socket, kind: Msg, reply: Msg, **fields: Any) -> dict[str, Any]:
    send_msg(sock, kind, **fields)
    return expect(sock, reply)


REGISTER = dict(host="127.0.0.1", msg_port=9100, file_port=9101, slots=2, ffmpeg="ffmpeg 6.1",
                encoders=["libx264"])


# ---------------------------------------------------------------- before login

@pytest.mark.parametrize("kind, fields", [
    (Msg.REGISTER, REGISTER),
    (Msg.HEARTBEAT, {"busy": 0}),
    (Msg.JOB_START, {"input": "movie.mkv"}),
    (Msg.WORKERS, {"job": "abc", "count": 1, "encoder": "libx264"}),
    (Msg.EVENT, {"job": "abc", "event": "chunk_done", "chunk": 1}),
    (Msg.JOB_END, {"job": "abc", "status": "done"}),
])
def test_a_request_before_login_gets_authenticate_first_and_the_connection_stays(
        tracker, connect, kind, fields):
    sock = connect(Role.ADMIN)
    assert refused(sock, kind, **fields) == "authenticate first"
    assert usable(sock)                               # ping needs no login
    assert not tracker.state.live_workers(60.0)
    assert [e["event"] for e in tracker.audit.events] == []   # nothing done, nothing logged


def test_after_a_refusal_the_same_connection_can_log_in_and_be_served(tracker, connect):
    sock = connect(Role.BOSS)
    assert refused(sock, Msg.JOB_START, input="movie.mkv") == "authenticate first"
    login(sock, "alice", PASSWORD)
    job = start_job(sock)
    [started] = tracker.events("job_started")
    assert (started["job"], started["user"], started["input"]) == (job, "alice", "movie.mkv")


def test_auth_finish_without_auth_start_is_refused_and_the_connection_stays(tracker, connect):
    sock = connect(Role.BOSS)
    assert refused(sock, Msg.AUTH_FINISH, data="c=biws,r=abc,p=abc") == "send auth_start first"
    assert usable(sock)
    login(sock, "alice", PASSWORD)                    # and a proper login still works


def test_a_user_claiming_another_role_is_refused_audited_and_disconnected(tracker, connect):
    sock = connect(Role.BOSS)
    with pytest.raises(AuthError, match="may not act as boss"):
        login(sock, "walt", PASSWORD)                 # a worker account saying hello as a boss
    assert closed(sock)
    [failed] = tracker.events("auth_failed")
    assert (failed["user"], failed["role"], failed["reason"]) == ("walt", "boss", "user has role worker")
    assert not tracker.events("auth_ok")


# ---------------------------------------------------------------- unknown and unexpected messages

def test_a_second_hello_is_refused_and_the_connection_stays(connect):
    sock = connect(Role.BOSS, "alice")
    err = call(sock, Msg.HELLO, version=1, role="boss", name="again")
    assert (err["type"], err["reason"], err["in_reply_to"]) == (Msg.ERROR, "unexpected message", "hello")
    assert usable(sock)


def test_a_message_type_the_tracker_does_not_know_is_refused_and_the_connection_stays(connect):
    sock = connect(Role.BOSS, "alice")
    body = b'{"type":"teleport","to":"mars"}'
    sock.sendall(len(body).to_bytes(4, "big") + body)
    err = recv_msg(sock)
    assert err["type"] is Msg.ERROR and "teleport" in err["reason"]
    assert err["in_reply_to"] in ("?", "teleport")    # PROTOCOL.md says "?"; the tracker echoes the type
    assert usable(sock)


def test_a_known_type_the_tracker_does_not_serve_is_refused_and_the_connection_stays(connect):
    sock = connect(Role.WORKER, "walt")
    assert refused(sock, Msg.REQUEST, count=1) == "unexpected message"    # a message-port type
    assert usable(sock)


# ---------------------------------------------------------------- events

@pytest.mark.parametrize("name", ["chunk_teleported", "job_finished", "auth_ok", "protocol_error", "CHUNK_DONE"])
def test_an_unknown_or_tracker_only_event_is_refused_and_the_connection_stays_usable(tracker, connect, name):
    sock = connect(Role.BOSS, "alice")
    job = start_job(sock)
    assert refused(sock, Msg.EVENT, job=job, event=name, chunk=3) == f"unknown event {name!r}"
    assert call(sock, Msg.EVENT, job=job, event="chunk_done", chunk=3, worker="w@h:1", frames=25,
                seconds=1.5)["type"] is Msg.OK
    assert [e["event"] for e in tracker.audit.events if e.get("job") == job] == ["job_started", "chunk_done"]
    [done] = tracker.events("chunk_done")
    assert (done["by"], done["chunk"], done["worker"], done["frames"], done["seconds"]) == \
        ("boss", 3, "w@h:1", 25, 1.5)


def test_a_boss_may_not_report_events_for_another_bosses_job(tracker, connect):
    job = start_job(connect(Role.BOSS, "alice"))
    bob = connect(Role.BOSS, "bob")
    assert refused(bob, Msg.EVENT, job=job, event="chunk_failed", chunk=0, detail="lies") == \
        "no such job for this boss"
    assert usable(bob)
    assert not tracker.events("chunk_failed")


def test_a_worker_reports_events_under_its_own_registered_name(tracker, connect):
    sock = connect(Role.WORKER, "walt")
    name = expect_reply(sock, Msg.REGISTER, Msg.REGISTERED, **REGISTER)["worker"]
    assert name == "walt@127.0.0.1:9100"
    boss = connect(Role.BOSS, "alice")
    job = start_job(boss)
    assert [w["name"] for w in call(boss, Msg.WORKERS, job=job, count=1, encoder="libx264")["workers"]] == [name]
    assert call(sock, Msg.EVENT, job=job, event="chunk_encoded", chunk=2, worker="someone@else:1",
                seconds=0.5)["type"] is Msg.OK
    [encoded] = tracker.events("chunk_encoded")
    assert (encoded["worker"], encoded["by"], encoded["job"]) == (name, "worker", job)


def test_a_worker_reports_events_only_of_running_jobs_it_was_handed_to(tracker, connect):
    sock = connect(Role.WORKER, "walt")
    expect_reply(sock, Msg.REGISTER, Msg.REGISTERED, **REGISTER)
    boss = connect(Role.BOSS, "alice")
    job = start_job(boss)                       # walt was never handed to it
    for job_id in (job, "0123456789ab", "anyjob"):
        err = call(sock, Msg.EVENT, job=job_id, event="chunk_failed", chunk=0, detail="forged")
        assert err["type"] is Msg.ERROR and "no such job" in err["reason"]
    assert usable(sock) and not tracker.events("chunk_failed")


@pytest.mark.parametrize("extra", [{"frames": -1}, {"chunk": -5}, {"seconds": 1e300}, {"seconds": -1.0},
                                   {"frames": 10**12}])
def test_numbers_out_of_range_are_a_clean_protocol_error(tracker, connect, extra):
    sock = connect(Role.BOSS, "alice")
    job = start_job(sock)
    reply = call(sock, Msg.EVENT, job=job, event="chunk_done", worker="w@h:1", **{"chunk": 1, **extra})
    assert reply["type"] is Msg.ERROR and "out of range" in reply["reason"]
    assert not tracker.events("chunk_done")


def test_job_start_settings_are_bounded_in_the_audit_log(tracker, connect):
    sock = connect(Role.BOSS, "alice")
    job = start_job(sock, settings={"vcodec": "libx264", "note": "x" * 250_000, "crf": 23})
    [started] = [e for e in tracker.events("job_started") if e["job"] == job]
    assert started["settings"]["note"] == "x" * 200 and started["settings"]["crf"] == 23
    reply = call(connect(Role.BOSS, "alice"), Msg.JOB_START, input="a.mp4",
                 settings={f"k{i}": i for i in range(1000)})
    assert reply["type"] is Msg.ERROR and "settings" in reply["reason"]


# ---------------------------------------------------------------- jobs

def test_job_end_records_job_finished_and_a_second_job_end_leaves_the_connection_usable(tracker, connect):
    sock = connect(Role.BOSS, "alice")
    job = start_job(sock)
    assert call(sock, Msg.JOB_END, job=job, status="failed", detail="chunk_00003 failed 3 times",
                frames=250, seconds=12.5)["type"] is Msg.OK
    first = tracker.events("job_finished")[0]
    assert (first["job"], first["status"], first["detail"], first["frames"], first["seconds"]) == \
        (job, "failed", "chunk_00003 failed 3 times", 250, 12.5)
    # a finished job takes no more events, job_end included; the connection goes on
    assert call(sock, Msg.JOB_END, job=job, status="done")["type"] is Msg.ERROR
    assert call(sock, Msg.EVENT, job=job, event="chunk_done", chunk=1, worker="w@h:1")["type"] is Msg.ERROR
    assert usable(sock)
    assert tracker.events("job_finished") == [first] and not tracker.events("chunk_done")


def test_job_end_for_another_bosses_job_is_refused_and_the_job_goes_on(tracker, connect):
    alice = connect(Role.BOSS, "alice")
    job = start_job(alice)
    bob = connect(Role.BOSS, "bob")
    assert refused(bob, Msg.JOB_END, job=job, status="failed") == "no such job for this boss"
    assert usable(bob)
    assert not tracker.events("job_finished")
    assert call(alice, Msg.JOB_END, job=job, status="done")["type"] is Msg.OK
    assert [e["user"] for e in tracker.events("job_finished")] == ["alice"]


@pytest.mark.parametrize("role, user, kind, fields, reason", [
    (Role.WORKER, "walt", Msg.JOB_START, {"input": "x.mkv"}, "only a boss may do this"),
    (Role.WORKER, "walt", Msg.JOB_END, {"job": "abc", "status": "done"}, "only a boss may do this"),
    (Role.BOSS, "alice", Msg.REGISTER, REGISTER, "only a worker may do this"),
    (Role.BOSS, "alice", Msg.HEARTBEAT, {"busy": 0}, "only a worker may do this"),
])
def test_requests_from_the_wrong_role_are_refused_and_the_connection_stays(tracker, connect, role, user, kind,
                                                                         fields, reason):
    sock = connect(role, user)
    assert refused(sock, kind, **fields) == reason
    assert usable(sock)
    assert not tracker.events("job_started") and not tracker.events("register")


# ---------------------------------------------------------------- workers

def test_heartbeat_before_register_is_refused_as_not_registered(connect):
    sock = connect(Role.WORKER, "walt")
    assert refused(sock, Msg.HEARTBEAT, busy=0) == "not registered"
    expect_reply(sock, Msg.REGISTER, Msg.REGISTERED, **REGISTER)
    assert expect_reply(sock, Msg.HEARTBEAT, Msg.OK, busy=1)["type"] is Msg.OK


def test_a_bad_advertised_host_is_refused_and_the_connection_stays(tracker, connect):
    sock = connect(Role.WORKER, "walt")
    assert refused(sock, Msg.REGISTER, **{**REGISTER, "host": "evil host;rm -rf"}) == "bad advertised host"
    assert usable(sock) and not tracker.state.live_workers(60.0)


def test_a_registered_worker_that_disconnects_is_forgotten_and_audited(tracker, connect):
    sock = connect(Role.WORKER, "walt")
    expect_reply(sock, Msg.REGISTER, Msg.REGISTERED, **REGISTER)
    assert [w.name for w in tracker.state.live_workers(60.0)] == ["walt@127.0.0.1:9100"]
    sock.close()
    lost = poll_for(lambda: tracker.events("worker_lost"), IO_WAIT, "worker_lost in the audit", interval=0.01)
    assert (lost[0]["worker"], lost[0]["reason"]) == ("walt@127.0.0.1:9100", "disconnected")
    assert not tracker.state.live_workers(60.0)


def test_a_malformed_request_gets_error_then_the_connection_is_closed_and_audited(tracker, connect):
    sock = connect(Role.BOSS, "alice")
    job = start_job(sock)
    err = call(sock, Msg.WORKERS, job=job, count=0, encoder="libx264")     # count out of range
    assert err["type"] is Msg.ERROR and err["in_reply_to"] == "workers"
    assert closed(sock)
    [bad] = poll_for(lambda: tracker.events("protocol_error"), IO_WAIT, "protocol_error in the audit", interval=0.01)
    assert bad["user"] == "alice" and "count" in bad["reason"]


# ---------------------------------------------------------------- guessing and crowding

def test_password_guessing_from_one_address_is_slowed_to_a_crawl(tracker, connect):
    """Before: 127-156 guesses a second, with no slow-down."""
    from ffdt.tracker.throttle import FREE_FAILURES
    started, refusals = time.monotonic(), 0
    for i in range(FREE_FAILURES + 5):
        sock = connect(Role.BOSS)
        with pytest.raises((AuthError, RequestRejected)) as failed:
            login(sock, "alice", f"guess {i}")
        refusals += "too many failed logins" in str(failed.value)
    assert refusals >= 4, "after a few failures, an address must wait before it may guess again"
    assert len(tracker.events("auth_failed")) <= FREE_FAILURES + 1
    assert time.monotonic() - started < 10
    with pytest.raises((AuthError, RequestRejected), match="too many failed logins"):
        login(connect(Role.BOSS), "alice", PASSWORD)        # this address waits, whoever it is


def test_idle_connections_from_one_address_cannot_lock_out_the_others(tracker, connect):
    """Before: 1,022 logged-in idle connections filled the tracker for everyone."""
    from ffdt.tracker.server import MAX_OTHERS_PER_ADDRESS
    worker = connect(Role.WORKER, "walt")
    expect_reply(worker, Msg.REGISTER, Msg.REGISTERED, **REGISTER)     # a registered worker does not count
    crowd = [connect(Role.BOSS, "alice") for _ in range(MAX_OTHERS_PER_ADDRESS)]
    assert all(usable(sock) for sock in crowd[-3:])
    late = socket.create_connection(tracker.addr, timeout=IO_WAIT)
    try:
        assert late.recv(1) == b"", "one connection too many from this address is closed at once"
    finally:
        late.close()
    crowd.pop().close()
    assert poll_for(lambda: _can_connect(tracker), IO_WAIT, "a place once one connection closed")
    assert usable(worker)


def _can_connect(tracker) -> bool:
    sock = socket.create_connection(tracker.addr, timeout=IO_WAIT)
    try:
        client_hello(sock, Role.BOSS, "alice")
        return True
    except (ConnectionClosed, OSError):
        return False
    finally:
        sock.close()


def test_a_worker_the_boss_dropped_is_not_offered_to_that_job_again(tracker, connect):
    walt = connect(Role.WORKER, "walt")
    name = expect_reply(walt, Msg.REGISTER, Msg.REGISTERED, **REGISTER)["worker"]
    boss = connect(Role.BOSS, "alice")
    job, other = start_job(boss), start_job(boss)
    assert len(call(boss, Msg.WORKERS, job=job, count=1, encoder="libx264")["workers"]) == 1
    assert call(boss, Msg.EVENT, job=job, event="worker_dropped", worker=name, detail="returned 2 bad results"
                )["type"] is Msg.OK
    assert call(boss, Msg.WORKERS, job=job, count=1, encoder="libx264")["workers"] == []
    assert len(call(boss, Msg.WORKERS, job=other, count=1, encoder="libx264")["workers"]) == 1


# ---------------------------------------------------------------- status (admin)

def test_status_shows_workers_with_their_load_and_speed_and_jobs_with_their_progress(tracker, connect, tmp_path):
    create_user(tracker.server.ctx.store, "ada", "admin", PASSWORD, iterations=ITERATIONS)
    worker = connect(Role.WORKER, "walt")
    name = expect_reply(worker, Msg.REGISTER, Msg.REGISTERED, **REGISTER)["worker"]
    expect_reply(worker, Msg.HEARTBEAT, Msg.OK, busy=1)
    boss = connect(Role.BOSS, "alice")
    job = start_job(boss, frames=600)
    expect_reply(boss, Msg.WORKERS, Msg.WORKER_LIST, job=job, count=1, encoder="libx264")
    expect_reply(boss, Msg.EVENT, Msg.OK, job=job, event="chunk_done", chunk=0, worker=name, frames=150, seconds=5.0)
    # a worker's own chunk_done is logged but is not progress: only the boss counts results
    expect_reply(worker, Msg.EVENT, Msg.OK, job=job, event="chunk_done", chunk=1, frames=150, seconds=1.0)
    tracker.state._clock.now += 10            # type: ignore[attr-defined]
    admin = connect(Role.ADMIN, "ada")
    farm = expect_reply(admin, Msg.STATUS, Msg.FARM)
    [w] = farm["workers"]
    assert (w["name"], w["busy"], w["slots"], w["encoders"], w["fps"], w["chunks_done"], w["last_heartbeat"]) == \
        (name, 1, 2, ["libx264"], 30.0, 1, 10.0)
    [j] = farm["jobs"]
    assert (j["job"], j["boss"], j["input"], j["frames"], j["frames_done"], j["chunks_done"], j["workers"]) == \
        (job, "alice", "movie.mkv", 600, 150, 1, 1)
    assert j["seconds"] == 10.0 and farm["more"] == 0
    expect_reply(boss, Msg.JOB_END, Msg.OK, job=job, status="done")
    assert expect_reply(admin, Msg.STATUS, Msg.FARM)["jobs"] == []


@pytest.mark.parametrize("role, user", [(Role.BOSS, "alice"), (Role.WORKER, "walt")])
def test_status_is_for_admins_only(connect, role, user):
    sock = connect(role, user)
    assert refused(sock, Msg.STATUS) == "only an admin may do this"
    assert usable(sock)


def test_a_farm_too_big_for_one_frame_is_cut_and_says_how_much_more(tracker, connect):
    from ffdt.tracker.state import WorkerInfo
    create_user(tracker.server.ctx.store, "ada", "admin", PASSWORD, iterations=ITERATIONS)
    for i in range(3000):
        tracker.state.register(WorkerInfo(name=f"walt@10.0.{i // 250}.{i % 250}:9100", user="walt",
                                          host="10.0.0.1", msg_port=9100, file_port=9101, slots=1,
                                          ffmpeg="ffmpeg 5.1.9 " + "x" * 150, encoders=("libx264", "aac") * 40,
                                          ticket_key=b"k"))
    farm = expect_reply(connect(Role.ADMIN, "ada"), Msg.STATUS, Msg.FARM)
    assert 0 < len(farm["workers"]) < 3000 and farm["more"] == 3000 - len(farm["workers"])
    assert all(w["encoders"] == ["libx264"] * 40 for w in farm["workers"])   # the video encoders a job can use
