"""The worker's side of a boss session (client/session.py), driven through its real socket code.

A session runs run_session() on one end of a socketpair, followed by end_session() as the
message port does once the handshake is over; the test plays the boss on the other end. File
transfers go through the real FileHandler on another socketpair. The worker itself is a small
stand-in with the attributes the session code uses, and `encode` is replaced by a fake that
writes a small result (no ffmpeg), optionally held until the test lets it go.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from tests.conftest import poll_for

import ffdt.client.session as session_mod
from ffdt.client.session import (MAX_WAIT_RETRY, MIN_WAIT_RETRY, BossSession, FileHandler, Worker, end_session,
                                 run_session)
from ffdt.common.audit_events import Event
from ffdt.common.config import WAIT_RETRY
from ffdt.common.errors import ConnectionClosed, FFmpegError, ProtocolError, RequestRejected
from ffdt.common.protocol import Msg, Role, client_hello, expect, recv_msg, send_msg
from ffdt.common.settings import Settings

IO_WAIT = 5.0            # every blocking call here gives up after this long
DATA = bytes(range(256)) * 64          # a chunk's bytes (16 KiB)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------- the stand-in worker

class Places(threading.BoundedSemaphore):
    """worker.hand, counting the places held so a test can check each one comes back."""

    def __init__(self, value: int) -> None:
        super().__init__(value)
        self._count = threading.Lock()
        self.held = 0

    def acquire(self, blocking: bool = True, timeout: float | None = None) -> bool:
        got = super().acquire(blocking, timeout)
        if got:
            with self._count:
                self.held += 1
        return got

    def release(self, n: int = 1) -> None:
        super().release(n)             # BoundedSemaphore: raises on a place given back twice
        with self._count:
            self.held -= n


@dataclass(frozen=True)
class StandInConfig:
    slots: int = 1
    prefetch: int = 0
    bars: bool = False
    threads: int = 0
    tools: Any = None
    tls_server: Any = None
    early_encodes: bool = False        # (their own tests below turn it on)


class StandInWorker:
    """What run_session, the handlers and the file port use of a Worker, without a tracker."""
    session = Worker.session           # the real lookup of a session by id and key

    def __init__(self, root: Path, slots: int = 1, prefetch: int = 0, early: bool = False) -> None:
        self.cfg = StandInConfig(slots=slots, prefetch=prefetch, early_encodes=early)
        self.root = root
        self.hand = Places(slots + prefetch)
        self.encode_slots = threading.BoundedSemaphore(slots)
        self.lock = threading.Lock()
        self.busy = 0
        self.queued = 0
        self.reserved = 0
        self.sessions: dict[str, BossSession] = {}
        self.reports: list[tuple[Event, dict[str, Any]]] = []

    def report(self, s: BossSession, event: Event, **fields: Any) -> None:
        self.reports.append((event, fields))


@dataclass
class StandInServer:
    worker: StandInWorker


class FakeEncoder:
    """Replaces client.session.encode: writes a small result, or waits for `gate` first."""

    def __init__(self) -> None:
        self.calls: list[int] = []
        self.fed: dict[int, bytes] = {}      # what an early encode read from its arrival, by chunk
        self.cancelled: list[int] = []       # chunks whose encode was stopped by its cancel
        self.started = threading.Event()
        self.gate = threading.Event()
        self.gate.set()

    def __call__(self, tools: Any, settings: Settings, a: Any, threads: int,
                 on_frames: Callable[[int], None], on_sample: Callable[[], None] | None = None,
                 arriving: Any = None) -> tuple[int, str] | None:
        self.calls.append(a.chunk)
        self.started.set()
        if arriving is not None:            # read the chunk as ffmpeg would, from the pipe
            read_end, write_end = os.pipe()
            threading.Thread(target=arriving.feed, args=(write_end,), daemon=True).start()
            with os.fdopen(read_end, "rb") as pipe:
                self.fed[a.chunk] = pipe.read()
        if on_sample is not None:          # as encode() does once the result's start is written
            a.sample_path.write_bytes(sample_of(a.chunk))
            a.sample = len(sample_of(a.chunk)), sha(sample_of(a.chunk))
            on_sample()
        deadline, pause = time.monotonic() + IO_WAIT, threading.Event()
        while not self.gate.is_set() and not a.cancel.is_set() and time.monotonic() < deadline:
            pause.wait(0.01)           # a fake ffmpeg, checking its cancel switch as the real one does
        if arriving is None:
            a.input.unlink(missing_ok=True)    # as encode() does, whatever happens
        if a.cancel.is_set():
            self.cancelled.append(a.chunk)
            return None
        data = b"result of chunk %d\n" % a.chunk * 40
        a.output.write_bytes(data)
        return len(data), sha(data)


def result_of(chunk: int) -> bytes:
    return b"result of chunk %d\n" % chunk * 40


def sample_of(chunk: int) -> bytes:
    return result_of(chunk)[:100]


# ---------------------------------------------------------------- sessions and file connections

@dataclass
class Running:
    """A session being served, and the boss's end of its message connection."""
    worker: StandInWorker
    s: BossSession
    boss: socket.socket
    task: Any                   # conftest Task: run_session, then end_session

    def next(self, *kinds: Msg) -> dict[str, Any]:
        return expect(self.boss, *kinds)

    def send(self, kind: Msg, **fields: Any) -> None:
        send_msg(self.boss, kind, **fields)

    def sync(self) -> None:
        """Return once the session has handled everything sent before: a boss-only message type
        from the boss is answered with `error`, in order."""
        send_msg(self.boss, Msg.DONE, chunk=0, size=1, sha256="0" * 64, frames=1, seconds=0.0)
        err = expect(self.boss, Msg.ERROR)
        assert err["in_reply_to"] == "done"


def serve(worker: StandInWorker, s: BossSession) -> None:
    """What the message port does with a session once its handshake is done."""
    try:
        run_session(worker, s)         # type: ignore[arg-type]
    finally:
        end_session(worker, s)         # type: ignore[arg-type]


@pytest.fixture
def encoder(monkeypatch: pytest.MonkeyPatch) -> FakeEncoder:
    fake = FakeEncoder()
    monkeypatch.setattr(session_mod, "encode", fake)
    return fake


@pytest.fixture
def start(tmp_path: Path, background, encoder) -> Iterator[Callable[..., Running]]:
    """start(worker=None, slots=1, prefetch=0): a session served in a thread; the test is its boss."""
    opened: list[socket.socket] = []
    count = iter(range(1, 100))

    def make(worker: StandInWorker | None = None, *, slots: int = 1, prefetch: int = 0, samples: bool = False,
             early: bool = False, reuse: bool = False) -> Running:
        worker = worker or StandInWorker(tmp_path, slots, prefetch, early)
        boss, port = socket.socketpair()
        boss.settimeout(IO_WAIT)
        port.settimeout(IO_WAIT)
        opened.extend((boss, port))
        n = next(count)
        d = tmp_path / f"s{n}"
        d.mkdir()
        s = BossSession(f"{n:016x}", f"{n:032x}", "alice", "job1", Settings(), d, port, samples=samples,
                        reuse=reuse)
        with worker.lock:
            worker.sessions[s.id] = s
        return Running(worker, s, boss, background(serve, worker, s))

    yield make
    for sock in opened:
        sock.close()


@contextlib.contextmanager
def file_port(background, worker: StandInWorker) -> Iterator[tuple[socket.socket, Any]]:
    """A connection to the worker's file port, served by the real FileHandler, hello done."""
    conn, port = socket.socketpair()
    conn.settimeout(IO_WAIT)

    def handle() -> None:
        try:
            FileHandler(port, ("127.0.0.1", 40000), StandInServer(worker))
        finally:
            port.close()                # as socketserver does after each request

    handler = background(handle)
    try:
        client_hello(conn, Role.BOSS, "alice")
        yield conn, handler
    finally:
        conn.close()
        handler.join()


def put(background, run: Running, chunk: int, data: bytes = DATA) -> None:
    with file_port(background, run.worker) as (conn, _):
        send_msg(conn, Msg.PUT, session=run.s.id, key=run.s.key, chunk=chunk, size=len(data), sha256=sha(data))
        expect(conn, Msg.OK)
        conn.sendall(data)
        assert expect(conn, Msg.OK)["sha256"] == sha(data)


def assign(run: Running, chunk: int, data: bytes = DATA) -> None:
    run.send(Msg.ASSIGN, chunk=chunk, size=len(data), sha256=sha(data), frames=25)


def chunk_files(run: Running, chunk: int) -> list[str]:
    """The session's files for a chunk, whatever the worker names them (chunk_NNNNN.*)."""
    return sorted(p.name for p in run.s.dir.glob(f"chunk_{chunk:05d}.*")) if run.s.dir.exists() else []


def parts_left(root: Path) -> list[Path]:
    return sorted(root.rglob("*.part"))


def assert_session_gone(run: Running) -> None:
    assert not run.s.dir.exists(), "the session's files were not removed"
    assert run.s.id not in run.worker.sessions
    assert run.worker.hand.held == 0, f"{run.worker.hand.held} place(s) in hand never given back"


# ---------------------------------------------------------------- the normal cycle

def test_put_assign_done_get_collected_end(background, start, encoder):
    run = start()
    assert run.next(Msg.REQUEST)["count"] == 1
    put(background, run, 0)
    [uploaded] = chunk_files(run, 0)
    assert (run.s.dir / uploaded).read_bytes() == DATA
    assign(run, 0)
    assert run.next(Msg.PROGRESS) == {"type": Msg.PROGRESS, "chunk": 0, "frames": 0}
    done = run.next(Msg.DONE)
    result = result_of(0)
    assert (done["chunk"], done["size"], done["sha256"], done["frames"]) == (0, len(result), sha(result), 25)
    assert isinstance(done["seconds"], float)
    assert run.next(Msg.REQUEST)["count"] == 1            # the place is free again: ask for more
    assert encoder.calls == [0]
    [output] = chunk_files(run, 0)                       # the result only: the input is gone
    assert (run.s.dir / output).read_bytes() == result

    with file_port(background, run.worker) as (conn, handler):
        send_msg(conn, Msg.GET, session=run.s.id, key=run.s.key, chunk=0)
        header = expect(conn, Msg.FILE)
        assert (header["size"], header["sha256"]) == (len(result), sha(result))
        got = b""
        while len(got) < len(result) and (part := conn.recv(len(result) - len(got))):
            got += part
        assert got == result
    run.send(Msg.COLLECTED, chunk=0)
    run.sync()
    assert chunk_files(run, 0) == [] and not run.s.work       # our copy is dropped
    assert [e for e, _ in run.worker.reports] == [Event.CHUNK_ENCODED]

    run.send(Msg.END)
    run.next(Msg.BYE)
    assert run.task.join() is None                       # a normal end, not an error
    with pytest.raises(ConnectionClosed):
        recv_msg(run.boss)
    assert_session_gone(run)


def get_file(background, run: Running, chunk: int, **extra: Any) -> bytes:
    with file_port(background, run.worker) as (conn, handler):
        send_msg(conn, Msg.GET, session=run.s.id, key=run.s.key, chunk=chunk, **extra)
        header = expect(conn, Msg.FILE)
        got = b""
        while len(got) < header["size"] and (part := conn.recv(header["size"] - len(got))):
            got += part
        assert sha(got) == header["sha256"]
        return got


def test_a_boss_that_asked_for_samples_gets_one_before_the_result(background, start, encoder):
    """`sample` comes before `done`; `get` with sample=true sends the sample, without it the
    result; `collected` drops both."""
    run = start(samples=True)
    run.next(Msg.REQUEST)
    encoder.gate.clear()                 # the encode goes on after its sample
    put(background, run, 0)
    assign(run, 0)
    run.next(Msg.PROGRESS)
    said = run.next(Msg.SAMPLE)
    assert (said["chunk"], said["size"], said["sha256"]) == (0, len(sample_of(0)), sha(sample_of(0)))
    assert get_file(background, run, 0, sample=True) == sample_of(0)
    encoder.gate.set()
    run.next(Msg.DONE)
    run.next(Msg.REQUEST)
    assert get_file(background, run, 0) == result_of(0)
    run.send(Msg.COLLECTED, chunk=0)
    run.sync()
    assert chunk_files(run, 0) == []         # result and sample
    run.send(Msg.END)
    run.next(Msg.BYE)


def test_a_file_port_request_with_a_wrong_key_is_refused(background, start):
    run = start()
    run.next(Msg.REQUEST)
    with file_port(background, run.worker) as (conn, _):
        send_msg(conn, Msg.PUT, session=run.s.id, key="f" * 32, chunk=0, size=len(DATA), sha256=sha(DATA))
        err = expect(conn, Msg.ERROR)
        assert (err["reason"], err["in_reply_to"]) == ("unknown session", "put")
    assert chunk_files(run, 0) == [] and not parts_left(run.worker.root)


# ---------------------------------------------------------------- cancel

def cancel_during_upload(background, run: Running) -> None:
    """Upload chunk 0 and, halfway through the bytes, have the boss cancel it on the message port."""
    with file_port(background, run.worker) as (conn, handler):
        send_msg(conn, Msg.PUT, session=run.s.id, key=run.s.key, chunk=0, size=len(DATA), sha256=sha(DATA))
        expect(conn, Msg.OK)
        conn.sendall(DATA[:len(DATA) // 2])
        poll_for(lambda: parts_left(run.worker.root), IO_WAIT, "the upload to reach the disk", interval=0.01)
        run.send(Msg.CANCEL, chunk=0)
        run.sync()                                     # the cancel has been handled, the upload goes on
        conn.sendall(DATA[len(DATA) // 2:])
        with contextlib.suppress(ConnectionClosed, ProtocolError):
            recv_msg(conn)                             # whatever the worker makes of the rest
        handler.join()


def test_cancel_during_the_upload_removes_the_uploaded_bytes(background, start, encoder):
    run = start()
    run.next(Msg.REQUEST)
    cancel_during_upload(background, run)
    run.send(Msg.WAIT, retry_after=0.05)               # what the reference boss answers: the chunk went elsewhere
    run.next(Msg.REQUEST)
    assert encoder.calls == []
    assert chunk_files(run, 0) == [], "a cancelled chunk's upload is kept on disk"


def test_cancel_during_the_upload_means_that_chunk_is_not_encoded(background, start, encoder):
    run = start()
    run.next(Msg.REQUEST)
    cancel_during_upload(background, run)
    assign(run, 0)                                     # the boss's assign crossed its cancel
    reply = run.next(Msg.REQUEST, Msg.FAILED, Msg.PROGRESS, Msg.DONE)
    assert reply["type"] in (Msg.REQUEST, Msg.FAILED), f"the cancelled chunk was started: {reply}"
    assert encoder.calls == []


def test_cancel_of_a_prefetched_chunk_waiting_for_the_encoder(background, start, encoder, monkeypatch):
    monkeypatch.setattr(session_mod, "ENCODER_WAIT_POLL", 0.02)
    encoder.gate.clear()                               # chunk 0 encodes until we say so
    run = start(slots=1, prefetch=1)
    run.next(Msg.REQUEST)
    run.next(Msg.REQUEST)
    for chunk in (0, 1):
        put(background, run, chunk)
        assign(run, chunk)
    assert run.next(Msg.PROGRESS)["chunk"] == 0
    assert encoder.started.wait(IO_WAIT)
    run.send(Msg.CANCEL, chunk=1)                      # taken away before it started
    assert run.next(Msg.REQUEST)["count"] == 1         # its place in hand is asked for again
    assert chunk_files(run, 1) == []
    assert run.worker.hand.held == 2                   # chunk 0 and the new request
    encoder.gate.set()
    done = run.next(Msg.DONE)
    assert done["chunk"] == 0 and encoder.calls == [0]  # chunk 1 never reached the encoder


def encoding_chunk_0(background, start, encoder):
    """A session whose chunk 0 is uploaded, assigned and inside the (held) encoder."""
    encoder.gate.clear()
    run = start()
    run.next(Msg.REQUEST)
    put(background, run, 0)
    assign(run, 0)
    run.next(Msg.PROGRESS)
    assert encoder.started.wait(IO_WAIT)
    return run


def test_cancel_of_a_running_encode_sends_no_done(background, start, encoder):
    run = encoding_chunk_0(background, start, encoder)
    run.send(Msg.CANCEL, chunk=0)
    assert run.next(Msg.REQUEST, Msg.DONE, Msg.FAILED)["type"] is Msg.REQUEST
    assert chunk_files(run, 0) == []
    assert run.worker.hand.held == 1
    assert not run.worker.reports                      # no chunk_encoded for it


def test_a_failed_encode_sends_ffmpegs_last_line_without_our_paths(background, start, monkeypatch):
    names = []

    def failing(tools, settings, a, threads, on_frames, on_sample=None, arriving=None):
        names.append(a.input.name)
        a.input.unlink(missing_ok=True)
        raise FFmpegError(["ffmpeg", "-i", str(a.input)], 1,
                          f"some noise\n{a.input}: Invalid data found when processing input")
    monkeypatch.setattr(session_mod, "encode", failing)
    run = start()
    run.next(Msg.REQUEST)
    put(background, run, 0)
    assign(run, 0)
    run.next(Msg.PROGRESS)
    failed = run.next(Msg.FAILED)
    assert (failed["chunk"], failed["reason"]) == (0, f"{names[0]}: Invalid data found when processing input")
    assert str(run.s.dir) not in failed["reason"] and names[0].startswith("chunk_00000.")
    assert run.next(Msg.REQUEST)["count"] == 1
    assert [(e, f["detail"]) for e, f in run.worker.reports] == [(Event.CHUNK_FAILED, failed["reason"])]
    assert not run.s.work and run.worker.hand.held == 1


def test_session_closed_while_encoding_stops_the_encode_and_frees_its_place(background, start, encoder):
    run = encoding_chunk_0(background, start, encoder)
    run.boss.close()
    with pytest.raises(ConnectionClosed):
        run.task.join()
    assert not run.s.dir.exists() and run.s.id not in run.worker.sessions
    poll_for(lambda: run.worker.hand.held == 0, IO_WAIT, "the encode's place to come back", interval=0.01)
    assert run.worker.busy == 0 and not run.worker.reports     # cancelled, not encoded


@pytest.mark.parametrize("fields", [
    {"chunk": 0, "size": 1, "frames": 25},                       # no sha256
    {"chunk": -1, "size": 1, "sha256": "0" * 64, "frames": 25},  # index out of range
    {"chunk": "0", "size": 1, "sha256": "0" * 64, "frames": 25},  # index not an int
])
def test_a_malformed_assign_ends_the_session_and_gives_its_place_back(start, fields):
    run = start()
    run.next(Msg.REQUEST)
    run.send(Msg.ASSIGN, **fields)
    with pytest.raises(ProtocolError):
        run.task.join()
    assert_session_gone(run)


# ---------------------------------------------------------------- answers to requests never sent

@pytest.mark.parametrize("extra", [Msg.ASSIGN, Msg.WAIT, Msg.END])
def test_a_reply_to_a_request_never_sent_ends_the_session(background, start, extra):
    run = start()
    run.next(Msg.REQUEST)
    run.send(Msg.WAIT, retry_after=MAX_WAIT_RETRY)     # answers the one request; the next is 10 s away
    fields = {"chunk": 0, "size": len(DATA), "sha256": sha(DATA), "frames": 25} if extra is Msg.ASSIGN else \
        {"retry_after": 0.05} if extra is Msg.WAIT else {}
    run.send(extra, **fields)                          # answers nothing
    with pytest.raises(ProtocolError, match="never sent"):
        run.task.join()
    with pytest.raises(ConnectionClosed):              # closed without a reply (no bye, no request)
        recv_msg(run.boss)
    assert_session_gone(run)


def test_an_answer_while_every_place_is_held_elsewhere_is_a_protocol_error(background, start, tmp_path):
    worker = StandInWorker(tmp_path)
    assert worker.hand.acquire(blocking=False)         # another boss's session holds the only place
    run = start(worker)
    run.send(Msg.WAIT, retry_after=0.05)               # no request went out from this session
    with pytest.raises(ProtocolError, match="never sent"):
        run.task.join()
    assert worker.hand.held == 1                       # the other session's place was not given away


# ---------------------------------------------------------------- transfers cut short

def test_file_connection_closed_mid_upload_leaves_nothing_and_the_session_goes_on(background, start, encoder):
    run = start()
    run.next(Msg.REQUEST)
    with file_port(background, run.worker) as (conn, handler):
        send_msg(conn, Msg.PUT, session=run.s.id, key=run.s.key, chunk=0, size=len(DATA), sha256=sha(DATA))
        expect(conn, Msg.OK)
        conn.sendall(DATA[:1000])
        poll_for(lambda: parts_left(run.worker.root), IO_WAIT, "the upload to reach the disk", interval=0.01)
        conn.close()
        handler.join()
    assert not parts_left(run.worker.root) and chunk_files(run, 0) == []
    assign(run, 0)                                     # a boss that did not notice
    failed = run.next(Msg.FAILED)
    assert (failed["chunk"], failed["reason"]) == (0, "chunk bytes were not received")
    assert run.next(Msg.REQUEST)["count"] == 1         # the place comes back and is asked for again
    assert encoder.calls == [] and run.worker.hand.held == 1


def test_session_closed_mid_upload_gives_places_back_and_leaves_no_part_file(background, start):
    run = start(slots=1, prefetch=1)
    run.next(Msg.REQUEST)
    run.next(Msg.REQUEST)
    assert run.worker.hand.held == 2
    with file_port(background, run.worker) as (conn, handler):
        send_msg(conn, Msg.PUT, session=run.s.id, key=run.s.key, chunk=0, size=len(DATA), sha256=sha(DATA))
        expect(conn, Msg.OK)
        conn.sendall(DATA[:1000])
        poll_for(lambda: parts_left(run.worker.root), IO_WAIT, "the upload to reach the disk", interval=0.01)
        run.boss.close()                               # the boss goes away mid-transfer
        with pytest.raises(ConnectionClosed):
            run.task.join()
        assert_session_gone(run)
        conn.sendall(DATA[1000:])                      # the rest still arrives on the file port
        with pytest.raises((ConnectionClosed, ProtocolError)):
            recv_msg(conn)                             # ... and is not acknowledged
        handler.join()
    assert not parts_left(run.worker.root), "a .part file outlived its session"
    assert not any(run.worker.root.rglob("chunk_*")), "a chunk file outlived its session"


# ---------------------------------------------------------------- wait and end

def test_wait_gives_the_place_back_to_another_session(background, start, tmp_path, monkeypatch):
    monkeypatch.setattr(session_mod, "WAIT_RETRY", 0.02)     # how often a session without a place retries
    worker = StandInWorker(tmp_path)                   # one place in hand for both bosses
    first = start(worker)
    first.next(Msg.REQUEST)
    second = start(worker)                             # finds no place: keeps trying
    assert worker.hand.held == 1
    first.send(Msg.WAIT, retry_after=MAX_WAIT_RETRY)   # first asks again only in 10 s
    assert second.next(Msg.REQUEST)["count"] == 1      # the place it gave back went to the other boss
    second.send(Msg.END)
    second.next(Msg.BYE)
    second.task.join()
    assert worker.hand.held == 0


def test_after_wait_the_next_request_comes_after_retry_after(start):
    run = start()
    run.next(Msg.REQUEST)
    sent = time.monotonic()
    run.send(Msg.WAIT, retry_after=0.3)
    run.next(Msg.REQUEST)
    assert time.monotonic() - sent >= 0.3 * 0.9
    assert run.worker.hand.held == 1


@pytest.mark.parametrize("retry_after, delay", [
    (0.3, 0.3), (0.0, MIN_WAIT_RETRY), (0.001, MIN_WAIT_RETRY), (-5.0, MIN_WAIT_RETRY),
    (60.0, MAX_WAIT_RETRY), (1e9, MAX_WAIT_RETRY), (3, 3.0),
    ("soon", WAIT_RETRY), (True, WAIT_RETRY), (None, WAIT_RETRY)])
def test_retry_after_is_clamped(start, monkeypatch, retry_after, delay):
    asked = []
    monkeypatch.setattr(session_mod, "ask_later", lambda worker, s, d: asked.append(d))
    assert (MIN_WAIT_RETRY, MAX_WAIT_RETRY) == (0.05, 10.0)
    run = start()
    run.next(Msg.REQUEST)
    run.send(Msg.WAIT, retry_after=retry_after)
    run.sync()
    assert asked == [delay]
    assert run.worker.hand.held == 0                   # nothing held while waiting


def test_end_is_answered_with_bye_and_ends_the_session(start):
    run = start(slots=2, prefetch=1)
    for _ in range(3):
        run.next(Msg.REQUEST)
    run.send(Msg.END)
    run.next(Msg.BYE)
    assert run.task.join() is None
    with pytest.raises(ConnectionClosed):
        recv_msg(run.boss)
    assert_session_gone(run)                           # the two requests still open gave their places back


def test_unknown_and_unexpected_messages_get_error_and_the_session_goes_on(start):
    run = start()
    run.next(Msg.REQUEST)
    body = b'{"type":"teleport"}'
    run.boss.sendall(len(body).to_bytes(4, "big") + body)
    err = run.next(Msg.ERROR)
    assert err["in_reply_to"] == "teleport"
    run.send(Msg.PROGRESS, chunk=0, frames=3)          # a worker's message, from the boss
    err = run.next(Msg.ERROR)
    assert (err["reason"], err["in_reply_to"]) == ("unexpected message", "progress")
    run.send(Msg.ERROR, reason="odd", in_reply_to="request")   # never answered
    run.send(Msg.END)
    run.next(Msg.BYE)                                  # the very next message: no error for the error
    assert run.task.join() is None


# ---------------------------------------------------------------- a boss filling the disk

class Usage:
    def __init__(self, free: int) -> None:
        self.free = free


def test_uploads_at_once_reserve_their_space_before_their_bytes_come(background, start, monkeypatch):
    """Before: the free-space check ran before any byte arrived and reserved nothing, so 8 uploads
    of 40 MiB at once were all accepted on a 400 MiB disk."""
    run = start(slots=1, prefetch=1)
    room_for_one = session_mod.DISK_HEADROOM + 3 * len(DATA) + 1
    monkeypatch.setattr(session_mod.shutil, "disk_usage", lambda path: Usage(room_for_one))
    with file_port(background, run.worker) as (first, _):
        send_msg(first, Msg.PUT, session=run.s.id, key=run.s.key, chunk=0, size=len(DATA), sha256=sha(DATA))
        expect(first, Msg.OK)
        first.sendall(DATA[:100])                       # the first upload is under way
        with file_port(background, run.worker) as (second, _):
            send_msg(second, Msg.PUT, session=run.s.id, key=run.s.key, chunk=1, size=len(DATA),
                     sha256=sha(DATA))
            err = expect(second, Msg.ERROR)
            assert "disk nearly full" in err["reason"]
        first.sendall(DATA[100:])
        assert expect(first, Msg.OK)["sha256"] == sha(DATA)
    assert run.worker.reserved == 0
    put(background, run, 1)                             # its reservation is given back


def test_an_upload_never_assigned_is_removed(background, start, monkeypatch):
    monkeypatch.setattr(session_mod, "UPLOAD_EXPIRY", 0.2)
    run = start()
    assert run.next(Msg.REQUEST)["count"] == 1
    put(background, run, 3)
    assert chunk_files(run, 3)
    time.sleep(0.3)
    put(background, run, 4)                             # the next upload finds it expired
    assert not chunk_files(run, 3) and 3 not in run.s.received
    assign(run, 3)                                      # too late: the bytes are gone
    failed = run.next(Msg.FAILED)
    assert failed["chunk"] == 3 and "not received" in failed["reason"]


def test_no_more_uploads_wait_unassigned_than_the_worker_has_places(background, start):
    run = start(slots=1, prefetch=1)
    put(background, run, 0)
    put(background, run, 1)
    with file_port(background, run.worker) as (conn, _):
        send_msg(conn, Msg.PUT, session=run.s.id, key=run.s.key, chunk=2, size=len(DATA), sha256=sha(DATA))
        assert "already wait for their assign" in expect(conn, Msg.ERROR)["reason"]
    assert not chunk_files(run, 2)


# ---------------------------------------------------------------- encoding while the bytes arrive

@contextlib.contextmanager
def upload_in_halves(background, run: Running, chunk: int = 0, data: bytes = DATA, sent_sha: str | None = None
                     ) -> Iterator[socket.socket]:
    """A put whose first half is sent before the block runs and the second half after."""
    with file_port(background, run.worker) as (conn, handler):
        send_msg(conn, Msg.PUT, session=run.s.id, key=run.s.key, chunk=chunk, size=len(data),
                 sha256=sent_sha or sha(data))
        expect(conn, Msg.OK)
        conn.sendall(data[:len(data) // 2])
        yield conn
        conn.sendall(data[len(data) // 2:])
        with contextlib.suppress(ConnectionClosed, ProtocolError, RequestRejected):
            recv_msg(conn)
        handler.join()


def test_a_free_encoder_starts_on_the_upload_and_reports_only_after_the_assign(background, start, encoder):
    run = start(early=True)
    run.next(Msg.REQUEST)
    with upload_in_halves(background, run):
        assert encoder.started.wait(IO_WAIT), "no encode began while the bytes arrived"
    assert poll_for(lambda: 0 in encoder.fed, IO_WAIT, "the encoder to read its input") is not False
    assert encoder.fed[0] == DATA, "the encoder read other bytes than the upload's"
    run.sync()                        # nothing said of it before its assign: no progress, no done
    assign(run, 0)
    assert run.next(Msg.PROGRESS)["frames"] == 0
    done = run.next(Msg.DONE)
    assert (done["chunk"], done["sha256"], done["frames"]) == (0, sha(result_of(0)), 25)
    assert run.next(Msg.REQUEST)["count"] == 1
    assert encoder.calls == [0], "the chunk was encoded twice"
    assert [p.name for p in run.s.dir.iterdir()] == [p.name for p in run.s.dir.glob("*.out.mkv")], \
        "the input was not removed once assigned"
    run.send(Msg.END)
    run.next(Msg.BYE)
    run.task.join()
    assert_session_gone(run)


def test_an_assign_for_a_frame_range_stops_the_early_encode_and_encodes_from_the_file(background, start, encoder):
    encoder.gate.clear()              # the early encode would run until stopped
    run = start(early=True)
    run.next(Msg.REQUEST)
    with upload_in_halves(background, run):
        assert encoder.started.wait(IO_WAIT)
    run.send(Msg.ASSIGN, chunk=0, size=len(DATA), sha256=sha(DATA), frames=10, skip=5, limit=10)
    poll_for(lambda: len(encoder.calls) == 2, IO_WAIT, "the assign's own encode")
    encoder.gate.set()
    assert run.next(Msg.PROGRESS)["frames"] == 0
    assert run.next(Msg.DONE)["frames"] == 10
    run.next(Msg.REQUEST)
    assert 0 not in run.s.early and run.worker.busy == 0
    run.send(Msg.END)
    run.next(Msg.BYE)
    run.task.join()
    assert_session_gone(run)


def test_an_upload_that_fails_its_hash_stops_the_early_encode_and_says_nothing(background, start, encoder):
    encoder.gate.clear()
    run = start(early=True)
    run.next(Msg.REQUEST)
    with upload_in_halves(background, run, sent_sha="0" * 64):
        assert encoder.started.wait(IO_WAIT)
    poll_for(lambda: run.worker.busy == 0, IO_WAIT, "the early encode to stop")
    assert encoder.cancelled == [0], "the encode of bytes that failed their hash was not stopped"
    run.sync()                        # no progress, no done, no failed for a chunk never assigned
    assert not run.s.early and chunk_files(run, 0) == [] and not parts_left(run.worker.root)
    assert run.worker.encode_slots.acquire(blocking=False), "the early encode kept the encoder"
    run.worker.encode_slots.release()
    encoder.gate.set()
    put(background, run, 0)           # the same place, uploaded again: encoded and reported
    assign(run, 0)
    run.next(Msg.PROGRESS)
    assert run.next(Msg.DONE)["sha256"] == sha(result_of(0))


def test_a_cancel_during_the_upload_stops_the_early_encode(background, start, encoder):
    encoder.gate.clear()
    run = start(early=True)
    run.next(Msg.REQUEST)
    cancel_during_upload(background, run)
    poll_for(lambda: run.worker.busy == 0, IO_WAIT, "the early encode to stop")
    run.send(Msg.WAIT, retry_after=0.05)
    run.next(Msg.REQUEST)
    assert not run.s.early and chunk_files(run, 0) == []


def test_a_prefetched_upload_does_not_take_the_encoder(background, start, encoder):
    """With the encoder busy, an upload waits for its assign and its turn, as without early encodes."""
    encoder.gate.clear()
    run = start(early=True, prefetch=1)
    run.next(Msg.REQUEST)
    run.next(Msg.REQUEST)
    put(background, run, 0)
    assign(run, 0)
    run.next(Msg.PROGRESS)
    put(background, run, 1, DATA[::-1])
    assert encoder.calls == [0] and not run.s.early
    encoder.gate.set()
    run.send(Msg.ASSIGN, chunk=1, size=len(DATA), sha256=sha(DATA[::-1]), frames=25)
    dones = {}
    while len(dones) < 2:
        msg = run.next(Msg.PROGRESS, Msg.DONE, Msg.REQUEST)
        if msg["type"] is Msg.DONE:
            dones[msg["chunk"]] = msg
    assert encoder.calls == [0, 1]


def test_the_session_ending_during_an_early_encode_frees_everything(background, start, encoder):
    encoder.gate.clear()
    run = start(early=True)
    run.next(Msg.REQUEST)
    with upload_in_halves(background, run):
        assert encoder.started.wait(IO_WAIT)
    run.boss.close()
    with pytest.raises(ConnectionClosed):
        run.task.join()
    poll_for(lambda: run.worker.busy == 0, IO_WAIT, "the early encode to stop")
    assert not run.worker.reports                     # cancelled, not encoded
    assert_session_gone(run)


# ---------------------------------------------------------------- file connections kept for the next transfer

def put_on(conn: socket.socket, run: Running, chunk: int, data: bytes = DATA) -> None:
    send_msg(conn, Msg.PUT, session=run.s.id, key=run.s.key, chunk=chunk, size=len(data), sha256=sha(data))
    expect(conn, Msg.OK)
    conn.sendall(data)
    assert expect(conn, Msg.OK)["sha256"] == sha(data)


def closed_by_worker(conn: socket.socket) -> bool:
    try:
        return recv_msg(conn) is None
    except ConnectionClosed:
        return True


def test_a_session_that_asked_keeps_its_file_connection_for_the_next_transfer(background, start, encoder):
    run = start(reuse=True, prefetch=1)
    run.next(Msg.REQUEST)
    run.next(Msg.REQUEST)
    with file_port(background, run.worker) as (conn, handler):
        put_on(conn, run, 0)
        put_on(conn, run, 1, DATA[::-1])          # the same connection, a second upload
        assert len(run.s.kept) == 1
        send_msg(conn, Msg.GET, session=run.s.id, key=run.s.key, chunk=7)
        assert expect_error(conn)["reason"] == "no result for chunk 7"
        assert closed_by_worker(conn), "a connection stayed open after an error"
    assert sorted(chunk_files(run, 0) + chunk_files(run, 1)) == ["chunk_00000.in.mkv", "chunk_00001.in.mkv"]
    assert not run.s.kept


def expect_error(conn: socket.socket) -> dict[str, Any]:
    msg = recv_msg(conn)
    assert msg["type"] is Msg.ERROR
    return msg


def test_without_asking_a_file_connection_carries_one_transfer(background, start, encoder):
    run = start(prefetch=1)
    run.next(Msg.REQUEST)
    with file_port(background, run.worker) as (conn, handler):
        put_on(conn, run, 0)
        assert closed_by_worker(conn)
    assert not run.s.kept


def test_a_kept_connection_serves_only_its_own_session(background, start, encoder, tmp_path):
    worker = StandInWorker(tmp_path, 1, 1)
    run, other = start(worker, reuse=True), start(worker, reuse=True)
    run.next(Msg.REQUEST)             # (the other session gets no place: the test never uploads to it)
    with file_port(background, worker) as (conn, handler):
        put_on(conn, run, 0)
        send_msg(conn, Msg.PUT, session=other.s.id, key=other.s.key, chunk=0, size=len(DATA), sha256=sha(DATA))
        assert expect_error(conn)["reason"] == "this connection is another session's"
        assert closed_by_worker(conn)
    assert chunk_files(other, 0) == []


def test_kept_connections_are_few_and_end_with_the_session(background, start, encoder):
    run = start(reuse=True, slots=2, prefetch=1)
    for _ in range(3):
        run.next(Msg.REQUEST)
    with contextlib.ExitStack() as stack:
        conns = [stack.enter_context(file_port(background, run.worker))[0] for _ in range(3)]
        for i, conn in enumerate(conns):
            put_on(conn, run, i, DATA + bytes([i]))
            # (a connection is kept just after its last reply went out)
            poll_for(lambda: len(run.s.kept) == min(i + 1, 2), IO_WAIT, f"{min(i + 1, 2)} kept", interval=0.01)
        assert closed_by_worker(conns[2]), "more connections kept open than MAX_KEPT_FILE_CONNECTIONS"
        assert len(run.s.kept) == session_mod.MAX_KEPT_FILE_CONNECTIONS == 2
        run.boss.close()                           # the session ends: so do its kept connections
        with pytest.raises(ConnectionClosed):
            run.task.join()
        assert closed_by_worker(conns[0]) and closed_by_worker(conns[1])
    assert_session_gone(run)


@pytest.mark.parametrize("early", [False, True], ids=["file", "early"])
def test_a_cancel_of_a_result_spares_an_upload_of_the_same_chunk_that_overtook_it(background, start, encoder,
                                                                                    early):
    """The boss rejects a result with `cancel` and retries the chunk here: the new upload, on the
    file port, may land before the cancel on the message port is read."""
    run = start(early=early)
    run.next(Msg.REQUEST)
    put(background, run, 0)
    assign(run, 0)
    run.next(Msg.PROGRESS)
    run.next(Msg.DONE)
    run.next(Msg.REQUEST)
    put(background, run, 0, DATA[::-1])            # the retry's bytes first ...
    run.send(Msg.CANCEL, chunk=0)                  # ... then the cancel of the rejected result
    run.sync()
    assert not (run.s.dir / "chunk_00000.1.out.mkv").exists(), "the rejected result was kept"   # (the first assignment's)
    run.send(Msg.ASSIGN, chunk=0, size=len(DATA), sha256=sha(DATA[::-1]), frames=25)
    assert run.next(Msg.PROGRESS, Msg.FAILED)["type"] is Msg.PROGRESS, "the retry's upload was thrown away"
    assert run.next(Msg.DONE)["chunk"] == 0
