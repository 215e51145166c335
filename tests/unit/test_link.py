"""The boss's side of a worker session (client/link.py), driven through its real sockets.

The test plays the worker: it listens on a message port and a file port on 127.0.0.1 (port 0),
answers the boss's hello and session with common.protocol, and then sends the worker's messages
in the orders under test. The boss is a real WorkerLink thread with a real Scheduler.
"""
from __future__ import annotations

import hashlib
import select
import socket
import struct
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from ffdt.client.link import MAX_REFUSALS, REFUSAL_BACKOFF, JobContext, WorkerLink, WorkerOffer, on_loopback
from ffdt.client.scheduler import Chunk, ChunkState, Manifest, Scheduler
from ffdt.common.audit_events import Event
from ffdt.common.errors import ConnectionClosed
from ffdt.common.protocol import Msg, Role, expect, recv_msg, send_msg, server_hello
from ffdt.common.settings import Settings
from ffdt.common.transfer import recv_file

IO_WAIT = 5.0            # every blocking call here gives up after this long
WORKER = "farm@127.0.0.1:1"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def listener() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    s.listen(8)
    s.settimeout(IO_WAIT)
    return s


def pending_connection(sock: socket.socket) -> bool:
    """Whether a connection is waiting to be accepted on a listening socket (no waiting)."""
    return bool(select.select([sock], [], [], 0)[0])


class FakeWorker:
    """The worker's two ports, played by the test thread."""

    def __init__(self) -> None:
        self.msg_listener, self.file_listener = listener(), listener()
        self.msg: socket.socket | None = None
        self.session_msg: dict[str, Any] | None = None

    def offer(self) -> WorkerOffer:
        return WorkerOffer(name=WORKER, host="127.0.0.1", msg_port=self.msg_listener.getsockname()[1],
                           file_port=self.file_listener.getsockname()[1], slots=1, ffmpeg="ffmpeg 6.1",
                           ticket={"boss": "alice", "job": "j1", "worker": WORKER, "expires": 1, "mac": "0" * 64})

    def accept_session(self, reuse: bool = False) -> socket.socket:
        """hello, session -> session_ok, as a real worker's message port does (reuse: it keeps
        file connections open for the next transfer, PROTOCOL.md 9)."""
        conn, _ = self.msg_listener.accept()
        conn.settimeout(IO_WAIT)
        server_hello(conn, "worker", {Role.BOSS})
        self.session_msg = recv_msg(conn)
        assert self.session_msg["type"] is Msg.SESSION
        send_msg(conn, Msg.SESSION_OK, session="5e55" * 4, key="ab" * 16, slots=1, worker=WORKER,
                 **({"reuse_file_connection": True} if reuse else {}))
        self.msg = conn
        return conn

    def accept_file(self) -> tuple[socket.socket, dict[str, Any]]:
        """One file-port connection: hello, then the boss's put or get."""
        conn, _ = self.file_listener.accept()
        conn.settimeout(IO_WAIT)
        server_hello(conn, "worker", {Role.BOSS})
        return conn, recv_msg(conn)

    def serve_put(self, dest: Path) -> dict[str, Any]:
        """Take one upload whole, as a healthy worker does; returns the put header."""
        conn, put = self.accept_file()
        with conn:
            take_upload(conn, put, dest)
        return put

    def close(self) -> None:
        for s in (self.msg, self.msg_listener, self.file_listener):
            if s is not None:
                s.close()


def take_upload(conn: socket.socket, put: dict[str, Any], dest: Path) -> None:
    assert put["type"] is Msg.PUT
    send_msg(conn, Msg.OK)
    recv_file(conn, dest, put["size"], put["sha256"])
    send_msg(conn, Msg.OK, sha256=put["sha256"])


def serve_get(conn: socket.socket, get: dict[str, Any], data: bytes) -> None:
    assert get["type"] is Msg.GET
    send_msg(conn, Msg.FILE, size=len(data), sha256=sha(data))
    conn.sendall(data)


class Recorder:
    """JobContext callbacks that remember what the link reported."""

    def __init__(self) -> None:
        self.events: list[tuple[Event, dict[str, Any]]] = []
        self.results: list[tuple[Chunk, bytes, str, float]] = []
        self.got_result = threading.Event()

    def report(self, event: Event, **fields: Any) -> None:
        self.events.append((Event(event), fields))

    def on_result(self, link: WorkerLink, chunk: Chunk, path: Path, sha256: str, seconds: float) -> None:
        self.results.append((chunk, path.read_bytes(), sha256, seconds))
        self.got_result.set()

    def named(self, event: Event) -> list[dict[str, Any]]:
        return [fields for e, fields in self.events if e is event]


@pytest.fixture
def worker():
    w = FakeWorker()
    yield w
    w.close()


@pytest.fixture
def chunks(tmp_path: Path) -> list[Chunk]:
    made = []
    for i in range(2):
        data = bytes([65 + i]) * (3000 + i)
        src = tmp_path / f"src_{i}.mkv"
        src.write_bytes(data)
        made.append(Chunk(Manifest(index=i, source=src, size=len(data), sha256=sha(data), frames=25, start=float(i))))
    return made


@pytest.fixture
def make_link(tmp_path: Path, worker: FakeWorker):
    links: list[WorkerLink] = []
    work = tmp_path / "work"
    work.mkdir()

    def make(sched: Scheduler, rec: Recorder, silence: float = IO_WAIT) -> WorkerLink:
        job = JobContext(name="alice", settings=Settings(), scheduler=sched, work_dir=work, report=rec.report,
                         on_result=rec.on_result, silence_timeout=silence)
        link = WorkerLink(job, worker.offer())
        links.append(link)
        link.start()
        return link

    yield make
    for link in links:
        link.close()
        link.join(IO_WAIT)
    assert not any(link.is_alive() for link in links), "a link outlived its test"


def finished(link: WorkerLink) -> bool:
    link.join(IO_WAIT)
    return not link.is_alive()


# ---------------------------------------------------------------- the normal cycle

def test_a_chunk_goes_out_by_put_comes_back_by_get_and_reaches_the_checker(worker, chunks, make_link, tmp_path):
    sched, rec = Scheduler(chunks[:1]), Recorder()
    link = make_link(sched, rec)
    msg = worker.accept_session()
    assert worker.session_msg is not None and worker.session_msg["ticket"]["job"] == "j1"

    send_msg(msg, Msg.REQUEST, count=1)
    put = worker.serve_put(tmp_path / "uploaded.mkv")       # the bytes come before the assign
    assert (put["session"], put["key"], put["chunk"]) == ("5e55" * 4, "ab" * 16, 0)
    assert (tmp_path / "uploaded.mkv").read_bytes() == chunks[0].source.read_bytes()
    assign = expect(msg, Msg.ASSIGN)
    assert (assign["chunk"], assign["size"], assign["sha256"], assign["frames"]) == \
        (0, chunks[0].size, chunks[0].sha256, 25)
    assert "skip" not in assign                              # a whole chunk
    assert chunks[0].state is ChunkState.ASSIGNED and chunks[0].workers == {WORKER}

    result = b"encoded chunk zero" * 100
    send_msg(msg, Msg.DONE, chunk=0, size=len(result), sha256=sha(result), frames=25, seconds=1.5)
    conn, get = worker.accept_file()
    with conn:
        assert get["type"] is Msg.GET and (get["session"], get["key"], get["chunk"]) == ("5e55" * 4, "ab" * 16, 0)
        send_msg(conn, Msg.FILE, size=len(result), sha256=sha(result))
        conn.sendall(result)
    assert expect(msg, Msg.COLLECTED)["chunk"] == 0
    assert rec.got_result.wait(IO_WAIT)
    [(chunk, data, digest, seconds)] = rec.results
    assert (chunk.index, data, digest, seconds) == (0, result, sha(result), 1.5)
    assert link.stats.bytes_sent == chunks[0].size and link.stats.bytes_received == len(result)

    # the checker accepts it; the job is complete, so the next request gets `end`
    sched.done(chunks[0], WORKER, tmp_path / "result.mkv", sha(result))
    send_msg(msg, Msg.REQUEST, count=1)
    expect(msg, Msg.END)
    send_msg(msg, Msg.BYE)
    assert finished(link)
    assert link.failure is None
    assert [e for e, _ in rec.events] == [Event.WORKER_JOINED, Event.CHUNK_ASSIGNED]


def sampling_session(worker, tmp_path):
    """The worker side of a session both sides want samples in, up to the first assign."""
    conn, _ = worker.msg_listener.accept()
    conn.settimeout(IO_WAIT)
    server_hello(conn, "worker", {Role.BOSS})
    assert recv_msg(conn)["samples"] is True          # the boss asks for them
    send_msg(conn, Msg.SESSION_OK, session="5e55" * 4, key="ab" * 16, slots=1, worker=WORKER, samples=True)
    worker.msg = conn
    send_msg(conn, Msg.REQUEST, count=1)
    worker.serve_put(tmp_path / "uploaded.mkv")
    expect(conn, Msg.ASSIGN)
    return conn


@pytest.mark.parametrize("here", [False, True])
def test_workers_on_this_machine_are_asked_for_samples_only_if_the_job_says_so(worker, chunks, tmp_path, here):
    """(boss --samples auto: a worker on a loopback address shares the boss's CPUs.)"""
    work = tmp_path / "work"
    work.mkdir()
    job = JobContext(name="alice", settings=Settings(), scheduler=Scheduler(chunks[:1]), work_dir=work,
                     report=Recorder().report, on_result=Recorder().on_result, silence_timeout=IO_WAIT,
                     on_sample=lambda link, chunk, path: None, samples_here=here)
    link = WorkerLink(job, worker.offer())
    link.start()
    try:
        conn, _ = worker.msg_listener.accept()
        conn.settimeout(IO_WAIT)
        server_hello(conn, "worker", {Role.BOSS})
        assert recv_msg(conn)["samples"] is here
        conn.close()
    finally:
        link.close()
        link.join(IO_WAIT)
    assert all(on_loopback(h) for h in ("127.0.0.1", "127.3.2.1", "::1", "[::1]", "::ffff:127.0.0.1", "localhost"))
    assert not on_loopback("10.77.1.2") and not on_loopback("worker.example")


@pytest.mark.parametrize("wanted", [True, False])
def test_a_sample_is_fetched_once_an_assignment_and_handed_to_the_checks(worker, chunks, tmp_path, wanted):
    """sample -> get {sample: true}; a second sample of the same assignment is not fetched; nor
    is one the job does not want (JobContext.wants_sample: the worker has more to do after it)."""
    sched, rec = Scheduler(chunks[:1]), Recorder()
    got: list[tuple[int, bytes]] = []
    asked: list[int] = []
    work = tmp_path / "work"
    work.mkdir()
    job = JobContext(name="alice", settings=Settings(), scheduler=sched, work_dir=work, report=rec.report,
                     on_result=rec.on_result, silence_timeout=IO_WAIT,
                     on_sample=lambda link, chunk, path: got.append((chunk.index, path.read_bytes())),
                     wants_sample=lambda link, chunk: asked.append(chunk.index) or wanted, samples_here=True)
    link = WorkerLink(job, worker.offer())
    link.start()
    try:
        conn = sampling_session(worker, tmp_path)
        sample = b"the start of a result" * 10
        for _ in range(2):
            send_msg(conn, Msg.SAMPLE, chunk=0, size=len(sample), sha256=sha(sample))
        if wanted:
            fetch, get = worker.accept_file()
            with fetch:
                assert get["type"] is Msg.GET and get["sample"] is True and get["chunk"] == 0
                send_msg(fetch, Msg.FILE, size=len(sample), sha256=sha(sample))
                fetch.sendall(sample)
        send_msg(conn, Msg.PROGRESS, chunk=0, frames=5)     # handled after both samples
        deadline = time.monotonic() + IO_WAIT
        while sched.chunks[0].progress != 5 and time.monotonic() < deadline:
            time.sleep(0.01)
        while wanted and not got and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.2)
        assert sched.chunks[0].progress == 5 and asked == [0]
        assert got == ([(0, sample)] if wanted else []) and not pending_connection(worker.file_listener)
        assert link.stats.bytes_received == (len(sample) if wanted else 0)
    finally:
        link.close()
        link.join(IO_WAIT)


# ---------------------------------------------------------------- refusals and broken transfers

def test_an_upload_refused_with_error_goes_back_uncounted_and_the_worker_waits(worker, chunks, make_link):
    sched, rec = Scheduler(chunks[:1]), Recorder()
    link = make_link(sched, rec)
    msg = worker.accept_session()
    send_msg(msg, Msg.REQUEST, count=1)
    conn, put = worker.accept_file()
    with conn:
        assert put["type"] is Msg.PUT
        send_msg(conn, Msg.ERROR, reason="disk nearly full on this worker (12 MiB free)", in_reply_to="put")
    reply = expect(msg, Msg.WAIT)
    assert reply["retry_after"] == REFUSAL_BACKOFF == 5.0
    assert chunks[0].state is ChunkState.PENDING and chunks[0].attempts == 0 and not chunks[0].workers
    assert link.stats.refusals == 1 and link.is_alive()
    [failed] = rec.named(Event.CHUNK_FAILED)
    assert failed["chunk"] == 0 and "disk nearly full" in failed["detail"]
    assert not rec.named(Event.CHUNK_ASSIGNED)


def test_after_max_refusals_the_worker_is_dropped_with_end(worker, chunks, make_link):
    sched, rec = Scheduler(chunks[:1]), Recorder()
    link = make_link(sched, rec)
    msg = worker.accept_session()
    for _ in range(MAX_REFUSALS):
        send_msg(msg, Msg.REQUEST, count=1)
        conn, _ = worker.accept_file()
        with conn:
            send_msg(conn, Msg.ERROR, reason="checksum mismatch", in_reply_to="put")
        assert expect(msg, Msg.WAIT)["retry_after"] == REFUSAL_BACKOFF
    send_msg(msg, Msg.REQUEST, count=1)
    expect(msg, Msg.END)
    send_msg(msg, Msg.BYE)
    assert finished(link)
    assert link.dropped and link.failure is None
    assert not pending_connection(worker.file_listener)     # no fourth upload was tried
    assert chunks[0].state is ChunkState.PENDING and chunks[0].attempts == 0
    assert [d["detail"] for d in rec.named(Event.WORKER_DROPPED)] == [f"refused {MAX_REFUSALS} chunks"]


def test_file_connection_closed_mid_upload_ends_the_link_and_requeues_the_chunk(worker, tmp_path, make_link):
    data = bytes(range(256)) * 8192                            # 2 MiB: still being sent when we hang up
    src = tmp_path / "big.mkv"
    src.write_bytes(data)
    chunk = Chunk(Manifest(index=0, source=src, size=len(data), sha256=sha(data), frames=25, start=0.0))
    sched, rec = Scheduler([chunk]), Recorder()
    link = make_link(sched, rec)
    msg = worker.accept_session()
    send_msg(msg, Msg.REQUEST, count=1)
    conn, _ = worker.accept_file()
    send_msg(conn, Msg.OK)
    assert conn.recv(1000)                                    # the bytes have started to flow
    conn.close()
    assert finished(link)
    assert link.failure                                       # the worker counts as lost
    assert chunk.state is ChunkState.PENDING and chunk.attempts == 0 and not chunk.workers
    assert chunk.losses and chunk.losses[0].startswith(WORKER)
    assert [f["worker"] for f in rec.named(Event.WORKER_LOST)] == [WORKER]
    assert [f["detail"] for f in rec.named(Event.CHUNK_FAILED)] == ["worker lost"]
    assert not rec.named(Event.CHUNK_ASSIGNED)
    with pytest.raises(ConnectionClosed):                     # no assign; the session is closed
        recv_msg(msg)


def test_a_wrong_checksum_echoed_after_the_upload_ends_the_link(worker, chunks, make_link, tmp_path):
    sched, rec = Scheduler(chunks[:1]), Recorder()
    link = make_link(sched, rec)
    msg = worker.accept_session()
    send_msg(msg, Msg.REQUEST, count=1)
    conn, put = worker.accept_file()
    with conn:
        send_msg(conn, Msg.OK)
        recv_file(conn, tmp_path / "up.mkv", put["size"], put["sha256"])
        send_msg(conn, Msg.OK, sha256="0" * 64)
    assert finished(link)
    assert "wrong checksum" in (link.failure or "")
    assert chunks[0].state is ChunkState.PENDING and chunks[0].attempts == 0
    with pytest.raises(ConnectionClosed):
        recv_msg(msg)                                         # never assigned


# ---------------------------------------------------------------- odd messages

def test_done_for_a_chunk_never_assigned_here_is_answered_with_cancel(worker, chunks, make_link):
    sched, rec = Scheduler(chunks), Recorder()
    link = make_link(sched, rec)
    msg = worker.accept_session()
    send_msg(msg, Msg.DONE, chunk=1, size=10, sha256="1" * 64, frames=25, seconds=0.5)
    assert expect(msg, Msg.CANCEL)["chunk"] == 1
    assert not pending_connection(worker.file_listener)      # the boss did not try to fetch it
    assert link.is_alive() and not rec.results
    assert all(c.state is ChunkState.PENDING for c in chunks)


def test_unknown_and_unexpected_messages_get_error_and_the_session_goes_on(worker, chunks, make_link):
    sched, rec = Scheduler(chunks), Recorder()
    link = make_link(sched, rec)
    msg = worker.accept_session()
    body = b'{"type":"teleport","to":"mars"}'                   # a type this boss does not know
    msg.sendall(struct.pack("!I", len(body)) + body)
    err = expect(msg, Msg.ERROR)
    assert err["in_reply_to"] == "teleport" and "teleport" in err["reason"]
    send_msg(msg, Msg.ASSIGN, chunk=0, size=1, sha256="0" * 64, frames=1)   # a boss's message, from a worker
    err = expect(msg, Msg.ERROR)
    assert (err["in_reply_to"], err["reason"]) == ("assign", "unexpected message")
    # still serving: a done for a chunk it does not hold is answered as usual
    send_msg(msg, Msg.DONE, chunk=0, size=10, sha256="1" * 64, frames=25, seconds=0.5)
    assert expect(msg, Msg.CANCEL)["chunk"] == 0
    assert link.is_alive() and link.failure is None


def test_an_error_from_the_worker_is_not_answered(worker, chunks, make_link):
    sched, rec = Scheduler(chunks), Recorder()
    link = make_link(sched, rec)
    msg = worker.accept_session()
    send_msg(msg, Msg.ERROR, reason="something odd", in_reply_to="collected")
    send_msg(msg, Msg.DONE, chunk=1, size=10, sha256="1" * 64, frames=25, seconds=0.5)
    assert expect(msg, Msg.CANCEL)["chunk"] == 1                # the next thing it says, not an error
    assert link.is_alive()


def test_failed_puts_the_chunk_back_and_counts_the_attempt(worker, chunks, make_link, tmp_path):
    sched, rec = Scheduler(chunks[:1]), Recorder()
    link = make_link(sched, rec)
    msg = worker.accept_session()
    send_msg(msg, Msg.REQUEST, count=1)
    worker.serve_put(tmp_path / "up.mkv")
    expect(msg, Msg.ASSIGN)
    send_msg(msg, Msg.FAILED, chunk=0, reason="Error while decoding stream #0:0")
    send_msg(msg, Msg.DONE, chunk=0, size=10, sha256="1" * 64, frames=25, seconds=0.5)
    assert expect(msg, Msg.CANCEL)["chunk"] == 0              # processed in order: no longer this worker's
    assert chunks[0].state is ChunkState.PENDING and chunks[0].attempts == 1
    assert chunks[0].errors == [f"{WORKER}: Error while decoding stream #0:0"]
    assert link.is_alive()


# ---------------------------------------------------------------- liveness

def test_a_silent_worker_is_given_up_and_its_chunk_requeued(worker, chunks, make_link, tmp_path):
    silence = 0.3
    sched, rec = Scheduler(chunks[:1]), Recorder()
    link = make_link(sched, rec, silence=silence)
    msg = worker.accept_session()
    send_msg(msg, Msg.REQUEST, count=1)
    worker.serve_put(tmp_path / "up.mkv")
    expect(msg, Msg.ASSIGN)
    quiet_from = time.monotonic()
    assert chunks[0].workers == {WORKER}
    # now say nothing: the link must give up on its own, without the connection closing
    assert finished(link)
    assert time.monotonic() - quiet_from >= silence * 0.8      # not before the silence ran out
    assert "silent" in (link.failure or "")
    assert chunks[0].state is ChunkState.PENDING and chunks[0].attempts == 0 and not chunks[0].workers
    assert [f["worker"] for f in rec.named(Event.WORKER_LOST)] == [WORKER]
    with pytest.raises(ConnectionClosed):                       # the boss hung up
        recv_msg(msg)


def test_a_worker_must_have_read_the_settings_as_sent():
    from ffdt.client.link import check_settings_echo
    from ffdt.common.errors import ProtocolError
    from ffdt.common.settings import Settings
    plain, tuned = Settings(crf=22.5, preset="slow"), Settings(tune="film", codec_params=(("ref", "2"),))
    check_settings_echo(plain, plain.to_wire())
    check_settings_echo(tuned, tuned.to_wire())
    check_settings_echo(plain, None)                   # an older worker: fine without tuning
    with pytest.raises(ProtocolError, match="understood tune, codec_params"):
        check_settings_echo(tuned, None)               # ... but it would drop the tuning
    with pytest.raises(ProtocolError, match="not as sent"):
        check_settings_echo(tuned, {**tuned.to_wire(), "codec_params": {}})


# ---------------------------------------------------------------- one file connection for the session

RESULT = b"encoded chunk zero" * 100


def chunk_0_encoded(worker: FakeWorker, chunks, make_link, tmp_path: Path, reuse: bool
                    ) -> tuple[WorkerLink, Recorder, socket.socket, socket.socket]:
    """A session whose chunk 0 went up on a file connection (still open here) and came back
    `done`: the link, its recorder, the message connection, that file connection."""
    sched, rec = Scheduler(chunks[:1]), Recorder()
    link = make_link(sched, rec)
    msg = worker.accept_session(reuse=reuse)
    assert worker.session_msg is not None and worker.session_msg["reuse_file_connection"] is True
    send_msg(msg, Msg.REQUEST, count=1)
    conn, put = worker.accept_file()
    take_upload(conn, put, tmp_path / "uploaded.mkv")
    expect(msg, Msg.ASSIGN)
    send_msg(msg, Msg.DONE, chunk=0, size=len(RESULT), sha256=sha(RESULT), frames=25, seconds=1.0)
    return link, rec, msg, conn


def test_a_worker_that_keeps_file_connections_gets_the_put_and_the_get_on_one(worker, chunks, make_link, tmp_path):
    link, rec, msg, conn = chunk_0_encoded(worker, chunks, make_link, tmp_path, reuse=True)
    with conn:
        serve_get(conn, recv_msg(conn), RESULT)          # on the same connection
        assert expect(msg, Msg.COLLECTED)["chunk"] == 0
        assert not pending_connection(worker.file_listener), "a second file connection was opened"
    assert rec.got_result.wait(IO_WAIT) and rec.results[0][1] == RESULT


def test_a_kept_connection_the_worker_closed_is_replaced_by_a_new_one(worker, chunks, make_link, tmp_path):
    link, rec, msg, conn = chunk_0_encoded(worker, chunks, make_link, tmp_path, reuse=True)
    conn.close()                                         # (idle too long, on the worker's side)
    second, get = worker.accept_file()
    with second:
        serve_get(second, get, RESULT)
    assert expect(msg, Msg.COLLECTED)["chunk"] == 0
    assert rec.got_result.wait(IO_WAIT) and rec.results[0][1] == RESULT
    assert link.is_alive() and link.failure is None and not rec.named(Event.CHUNK_FAILED)


def test_a_worker_that_keeps_none_gets_a_connection_per_transfer(worker, chunks, make_link, tmp_path):
    link, rec, msg, conn = chunk_0_encoded(worker, chunks, make_link, tmp_path, reuse=False)
    with conn:
        second, get = worker.accept_file()               # a new one, though the first is still open
        with second:
            serve_get(second, get, RESULT)
        assert expect(msg, Msg.COLLECTED)["chunk"] == 0
        assert conn.recv(1) == b"", "the boss kept a connection the worker never offered to keep"
