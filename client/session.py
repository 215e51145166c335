"""The worker's ports and sessions (common/PROTOCOL.md, "Boss and worker"): registration and
heartbeats with the tracker, the message port (one session per boss, its messages dispatched
by type) and the file port (chunk bytes in, results out). Encoding is client/encode.py.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import hmac
import logging
import os
import platform
import secrets
import shutil
import socket
import socketserver
import ssl
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from ffdt.client import faults
from ffdt.client.encode import Arrival, Assignment, encode
from ffdt.client.progress import WorkerBar
from ffdt.client.reporter import EventReporter
from ffdt.client.tracker_client import TrackerClient, keep_registered
from ffdt.common import auth, ffmpeg
from ffdt.common.audit_events import Event
from ffdt.common.config import (FFMPEG_CHUNK_TIMEOUT, HANDSHAKE_TIMEOUT, MAX_CHUNK_BYTES,
                                MAX_CHUNK_INDEX, MAX_FRAMES, MAX_REASON, PROGRESS_INTERVAL,
                                TRANSFER_STALL_TIMEOUT, WAIT_RETRY)
from ffdt.common.errors import (AuthError, ConnectionClosed, FFmpegError, ProtocolError,
                                RequestRejected, TranscoderError, TransferError, UsageError)
from ffdt.common.net import Deadline, enable_keepalive
from ffdt.common.protocol import (Msg, Role, field as get, int_field, recv_msg, recv_msg_or_reject, send_msg,
                                  server_hello)
from ffdt.common.encoders import ENCODERS
from ffdt.common.settings import Settings
from ffdt.common.tls import wrap_server
from ffdt.common.transfer import part_path, recv_file, send_file

if TYPE_CHECKING:
    from ffdt.client.worker import WorkerConfig

log = logging.getLogger("worker")

BOSS_SILENCE_TIMEOUT = FFMPEG_CHUNK_TIMEOUT + 60   # a boss is quiet while we encode
# A `request` holds one of the worker's places until the boss answers. A boss that sends nothing
# for this long while a request waits, and has no transfer going on our file port, is not
# serving us: its session ends, and its places go to other bosses.
REQUEST_ANSWER_TIMEOUT = float(os.environ.get("FFDT_TEST_ANSWER_TIMEOUT", "30"))   # shorter in tests
UPLOAD_EXPIRY = 120.0               # seconds an upload may wait for its assign
WATCH_INTERVAL = 1.0                # how often the watchdog looks for such bosses
MAX_SESSIONS_PER_BOSS = 4           # sessions of one boss user at once (a ticket opens one per job)
MAX_CONNECTIONS_PER_PORT = 64       # open connections on each of our ports
LISTEN_BACKLOG = 128
DISK_HEADROOM = 256 * 1024 * 1024                   # keep this much free beyond a chunk's needs
MAX_WAIT_RETRY = 10.0                               # a boss's `retry_after` is capped to this...
MIN_WAIT_RETRY = 0.05                               # ... and floored to this
ENCODER_WAIT_POLL = 0.5                             # a waiting chunk checks for a cancel this often
SESSION_STOP_FLUSH = 2.0                            # seconds to deliver audit events when stopping
MAX_KEPT_FILE_CONNECTIONS = 2                       # a session's file connections kept open between transfers


@dataclass
class BossSession:
    """One boss's session: its settings, the chunks it sent us, our results."""
    id: str
    key: str
    boss: str
    job: str
    settings: Settings
    dir: Path
    sock: socket.socket
    send_lock: threading.Lock = field(default_factory=threading.Lock)
    lock: threading.Lock = field(default_factory=threading.Lock)
    received: dict[int, str] = field(default_factory=dict)          # chunk -> sha256 of input bytes
    received_at: dict[int, float] = field(default_factory=dict)     # chunk -> when its upload ended
    work: dict[int, Assignment] = field(default_factory=dict)
    samples: bool = False   # the boss asked for samples of our results (PROTOCOL.md, "sample")
    reuse: bool = False     # file-port connections may carry several transfers (PROTOCOL.md 9)
    kept: set[socket.socket] = field(default_factory=set)       # such connections, open between transfers
    closed: threading.Event = field(default_factory=threading.Event)
    asked: int = 0          # requests sent and not answered yet: each holds a worker slot
    assignments: int = 0    # assignments so far, numbering each one's files
    uploading: dict[int, object] = field(default_factory=dict)   # chunk -> the upload in progress
    discard: set[object] = field(default_factory=set)            # uploads cancelled while in progress
    heard: float = field(default_factory=time.monotonic)         # the boss's last message or transfer
    transfers: int = 0      # file-port transfers of this session in progress
    early: dict[int, EarlyEncode] = field(default_factory=dict)  # chunk -> encoding before its assign

    def answered(self) -> None:
        """A reply to one of our requests arrived; a reply we never asked for breaks the protocol."""
        with self.lock:
            if self.asked == 0:
                raise ProtocolError("the boss answered a request that was never sent")
            self.asked -= 1

    def send(self, kind: Msg, **fields: Any) -> None:
        with self.send_lock:
            send_msg(self.sock, kind, **fields)

    def path(self, chunk: int, suffix: str) -> Path:
        return self.dir / f"chunk_{chunk:05d}.{suffix}.mkv"   # our names, never the peer's


class EarlyEncode:
    """A chunk encoded while its bytes still arrive, before the boss has assigned it: with an
    encoder free, its upload's first bytes start ffmpeg instead of the assign after its last
    (on a 100 Mbit/s link, an 11 MB chunk is ~1 s the encoder would idle). Nothing changes on the
    wire: its messages (progress, sample, done) are held until the assign confirms this is the
    encode it asks for (the same bytes, a whole chunk); any other answer, a failed upload or a
    cancel kills it, and the assign is then served as if it had never started."""

    def __init__(self, a: Assignment, sha: str) -> None:
        self.a = a
        self.sha = sha
        self.arrival = Arrival()
        self._lock = threading.Lock()
        self._held: list[tuple[Msg, dict[str, Any]]] = []
        self._adopted = threading.Event()
        self._dropped = False

    @property
    def adopted(self) -> bool:
        return self._adopted.is_set()

    def say(self, s: BossSession, kind: Msg, **fields: Any) -> None:
        """s.send once adopted; until then held (of progress reports, only the last)."""
        with self._lock:
            if not self.adopted:
                last = self._held[-1] if self._held else None
                if kind is Msg.PROGRESS and last and last[0] is Msg.PROGRESS and last[1]["frames"]:
                    self._held.pop()
                self._held.append((kind, fields))
                return
        s.send(kind, **fields)

    def adopt(self, s: BossSession, first: Callable[[], None]) -> bool:
        """The assign for it came: run `first`, then send what was held (and let a finished
        encode send its done); False if it had been dropped already."""
        with self._lock:
            if self._dropped:
                return False
            first()
            self._adopted.set()
            held, self._held = self._held, []
            with contextlib.suppress(ConnectionClosed):
                for kind, fields in held:
                    s.send(kind, **fields)
        return True

    def drop(self) -> bool:
        """Give it up (its thread then tells nobody); False if adopted already."""
        with self._lock:
            if self.adopted:
                return False
            self._dropped = True
            return True

    def wait_adopted(self, s: BossSession) -> bool:
        deadline = time.monotonic() + UPLOAD_EXPIRY
        while not self._adopted.wait(ENCODER_WAIT_POLL):
            if s.closed.is_set() or self.a.cancel.is_set() or time.monotonic() > deadline:
                return False
        return True


class Worker:
    def __init__(self, cfg: WorkerConfig) -> None:
        self.cfg = cfg
        self.version, listed = ffmpeg.capabilities(cfg.tools)
        self.encoders, failing = ffmpeg.working_encoders(cfg.tools, listed)
        if failing:
            # a machine without the GPU a hardware encoder needs is normal; a software one that
            # does not open is a broken build
            say = log.warning if any(not ENCODERS[name].hardware for name in failing) else log.info
            say("not offering %s: this ffmpeg lists %s, but %s here (%s)", ", ".join(failing),
                "it" if len(failing) == 1 else "them", "it does not open" if len(failing) == 1 else "they do not open",
                "; ".join(sorted(set(failing.values())))[:300])
        if not self.encoders:
            raise TranscoderError(f"{self.version}: none of the video encoders this project drives opens here "
                                  f"({', '.join(ENCODERS)})")
        self.name = ""                                 # assigned by the tracker
        self.ticket_keys: list[bytes] = []             # newest first; a re-registration keeps the old one
        self.sessions: dict[str, BossSession] = {}
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.busy = 0
        self.queued = 0            # assigned chunks waiting for an encoder
        self.reserved = 0          # disk bytes promised to uploads in progress
        self.serving = False
        root = cfg.workdir or Path(tempfile.gettempdir())
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(f"cannot use {root} as the work directory: {exc.strerror}") from None
        remove_stale_dirs(root)
        self.root = Path(tempfile.mkdtemp(prefix=f"ffdt-worker-{os.getpid()}-", dir=root))
        self.tracker = TrackerClient(cfg.tracker, cfg.user, cfg.password, Role.WORKER, tls=cfg.tls_client.context,
                                     pin=cfg.tls_client.pin, known=cfg.tls_client.known)
        self.reporter = EventReporter(self.tracker, keepalive=False)    # heartbeats keep the connection
        # worker-wide, shared by every boss's session: `hand` bounds the chunks asked for or held
        # (--slots encoding plus --prefetch uploaded and waiting, so an encode never waits on the
        # network), `encode_slots` the encodes running at once
        self.hand = threading.BoundedSemaphore(cfg.slots + cfg.prefetch)
        self.encode_slots = threading.BoundedSemaphore(cfg.slots)
        self.msg_server = self._bind(cfg.msg_port, MessageHandler, "message")
        self.file_server = self._bind(cfg.file_port, FileHandler, "file")
        self.msg_port = self.msg_server.server_address[1]
        self.file_port = self.file_server.server_address[1]

    def _bind(self, port: int, handler: type, what: str) -> WorkerServer:
        try:
            return WorkerServer((self.cfg.bind, port), handler, self)
        except OSError as exc:
            if hasattr(self, "msg_server"):
                self.msg_server.server_close()
            raise UsageError(f"cannot listen on {self.cfg.bind}:{port} ({what} port): {exc.strerror}") from None

    # ------------------------------------------------------------ tracker

    def register(self) -> None:
        login = self.tracker.connect()
        reply = self.tracker.register(self.cfg.advertise, self.msg_port, self.file_port, self.cfg.slots,
                                      self.version, self.encoders, tls=self.cfg.tls_server is not None,
                                      fingerprint=self.cfg.tls_fingerprint)
        with self.lock:
            self.name = get(reply, "worker", str)
            key = auth.ticket_key(login.server_key, get(reply, "ticket_salt", str))
            self.ticket_keys = [key, *self.ticket_keys][:2]

    def heartbeat_loop(self) -> None:
        """Heartbeat; after a lost tracker, re-register with jittered backoff, forever."""
        def register() -> None:
            self.register()
            log.info("registered again as %s", self.name)
        keep_registered(lambda: self.tracker.heartbeat(self.busy), register, self.stopping, log)

    def report(self, session: BossSession, event: Event, **fields: Any) -> None:
        """Tell the tracker about a chunk, from the reporter thread: an encode never waits on it."""
        self.reporter.report(session.job, event, **fields)

    # ------------------------------------------------------------ lifecycle

    def serve(self) -> None:
        threads = [threading.Thread(target=s.serve_forever, name=n, daemon=True)
                   for s, n in ((self.msg_server, "msg"), (self.file_server, "file"))]
        for t in threads:
            t.start()
        self.serving = True
        threading.Thread(target=self.heartbeat_loop, name="heartbeat", daemon=True).start()
        threading.Thread(target=self.watch_sessions, name="watchdog", daemon=True).start()

    def watch_sessions(self) -> None:
        """End the sessions of bosses that hold our places without answering (REQUEST_ANSWER_TIMEOUT)."""
        while not self.stopping.wait(WATCH_INTERVAL):
            with self.lock:
                sessions = list(self.sessions.values())
            for s in sessions:
                end_if_unanswered(s)

    def stop(self) -> None:
        self.stopping.set()
        for server in (self.msg_server, self.file_server):
            if self.serving:
                server.shutdown()      # blocks until serve_forever() returns: only if it ran
            server.server_close()
        with self.lock:
            sessions = list(self.sessions.values())
        for s in sessions:
            end_session(self, s)
        self.reporter.flush_and_stop(timeout=SESSION_STOP_FLUSH)
        self.tracker.close()
        shutil.rmtree(self.root, ignore_errors=True)

    def session(self, session_id: str, key: str) -> BossSession:
        with self.lock:
            s = self.sessions.get(session_id)
        # compare bytes: compare_digest refuses non-ASCII str, and the key comes from the wire
        if s is None or not hmac.compare_digest(s.key.encode(), key.encode()):
            raise RequestRejected("unknown session")
        return s


def remove_stale_dirs(root: Path) -> None:
    """Remove what workers killed with SIGKILL left behind (their directory names carry their pid)."""
    if not Path("/proc/self").exists():       # no way to tell a live pid here: leave them
        return
    for d in root.glob("ffdt-worker-*-*"):
        pid = d.name.split("-")[2]
        if pid.isdigit() and int(pid) != os.getpid() and not Path(f"/proc/{pid}").exists():
            shutil.rmtree(d, ignore_errors=True)


class WorkerServer(socketserver.ThreadingMixIn, socketserver.TCPServer):
    allow_reuse_address = True
    daemon_threads = True
    request_queue_size = LISTEN_BACKLOG

    def __init__(self, addr: tuple[str, int], handler: type, worker: Worker) -> None:
        self.worker = worker
        self._open: set[Any] = set()
        self._open_lock = threading.Lock()
        super().__init__(addr, handler)

    def verify_request(self, request: Any, client_address: Any) -> bool:
        """Each connection costs a thread: beyond MAX_CONNECTIONS_PER_PORT they are closed at once."""
        with self._open_lock:
            if len(self._open) >= MAX_CONNECTIONS_PER_PORT:
                log.warning("refused a connection from %s: %d open", client_address[0], len(self._open))
                return False
            self._open.add(request)
            return True

    def shutdown_request(self, request: Any) -> None:
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.exception("unexpected error serving %s", client_address)


# ---------------------------------------------------------------- message port

class PortHandler(socketserver.BaseRequestHandler):
    """What both ports do first: a handshake timeout, and TLS when the worker has a certificate."""
    server: WorkerServer

    def handle(self) -> None:
        self.request.settimeout(HANDSHAKE_TIMEOUT)
        tls = self.server.worker.cfg.tls_server
        if tls is not None:
            try:
                self.request = wrap_server(self.request, tls)
            except (ssl.SSLError, OSError) as exc:
                log.warning("TLS with %s failed: %s", self.client_address[0], getattr(exc, "reason", None) or exc)
                return
        self.serve(self.server.worker, self.request)

    def serve(self, worker: Worker, sock: socket.socket) -> None:
        raise NotImplementedError


class MessageHandler(PortHandler):
    def serve(self, worker: Worker, sock: socket.socket) -> None:
        deadline = Deadline(sock, HANDSHAKE_TIMEOUT)      # hello and ticket, in all
        peer = "%s:%d" % self.client_address[:2]
        try:
            server_hello(sock, "worker", {Role.BOSS})
            session = open_session(worker, sock)
            deadline.met()
        except (ConnectionClosed, ProtocolError, AuthError, RequestRejected) as exc:
            log.warning("refused a boss from %s: %s", peer, exc)
            return
        log.info("session with %s for job %s (%s)", session.boss, session.job, session.settings.vcodec)
        sock.settimeout(BOSS_SILENCE_TIMEOUT)
        enable_keepalive(sock)          # a boss that vanishes without closing is noticed in ~1 min
        try:
            run_session(worker, session)
        except (ConnectionClosed, ProtocolError) as exc:
            log.warning("boss %s gone: %s", session.boss, exc)
        finally:
            end_session(worker, session)


def open_session(worker: Worker, sock: socket.socket) -> BossSession:
    msg = recv_msg(sock)
    if msg["type"] is not Msg.SESSION:
        raise ProtocolError(f"expected session, got {msg['type'].value}")
    try:
        with worker.lock:
            keys, name = list(worker.ticket_keys), worker.name
        boss, job = _check_ticket(keys, msg.get("ticket"), name)
        settings = Settings.from_wire(msg.get("settings"))
        if settings.vcodec not in worker.encoders:
            raise RequestRejected(f"this worker's ffmpeg has no {settings.vcodec}")
    except (AuthError, ProtocolError, RequestRejected) as exc:
        send_msg(sock, Msg.ERROR, reason=str(exc), in_reply_to="session")
        raise
    session_id = secrets.token_hex(8)
    session = BossSession(session_id, secrets.token_hex(16), boss, job, settings,
                          Path(tempfile.mkdtemp(prefix=f"s{session_id}-", dir=worker.root)), sock,
                          samples=msg.get("samples") is True, reuse=msg.get("reuse_file_connection") is True)
    with worker.lock:
        # one session a job (a ticket is for one job), a few a boss: a boss cannot fill the
        # worker with sessions, threads and directories
        others = [o for o in worker.sessions.values() if o.boss == boss]
        refused = ("a session for this job is open already" if any(o.job == job for o in others) else
                   f"{len(others)} sessions of this boss are open already" if len(others) >= MAX_SESSIONS_PER_BOSS
                   else None)
        if refused is None:
            worker.sessions[session_id] = session
    if refused is not None:
        shutil.rmtree(session.dir, ignore_errors=True)
        send_msg(sock, Msg.ERROR, reason=refused, in_reply_to="session")
        raise RequestRejected(refused)
    # the settings as read here: a boss sees that this worker understood every key it sent
    # threads, CPUs and CPU kind: what else decides an encode's bytes, so the boss can pair workers
    # whose encodes of one chunk must match bit for bit (its re-encode check)
    session.send(Msg.SESSION_OK, session=session.id, key=session.key, slots=worker.cfg.slots, worker=name,
                 settings=session.settings.to_wire(), threads=worker.cfg.threads, cpus=usable_cpus(),
                 host_cpus=os.cpu_count() or 1, cpu=cpu_kind(), samples=session.samples,
                 reuse_file_connection=session.reuse)
    return session


def usable_cpus() -> int:
    """The CPUs this process may run on (what ffmpeg sizes its threads by), not the machine's."""
    with contextlib.suppress(AttributeError, OSError):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


@functools.cache       # (read once: /proc/cpuinfo of a big machine is hundreds of KB)
def cpu_kind() -> str:
    """The architecture and a digest of the CPU's feature flags: machines that share it run the
    same SIMD code paths (ffmpeg's scaler and pixel-format conversions differ between them)."""
    flags = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            if line.startswith(("flags", "Features")):
                flags = " ".join(sorted(line.partition(":")[2].split()))
                break
    return f"{platform.machine()}/{hashlib.sha256(flags.encode()).hexdigest()[:12]}"


def _check_ticket(keys: list[bytes], ticket: object, name: str) -> tuple[str, str]:
    error = AuthError("worker not registered yet")
    for key in keys:
        try:
            return auth.check_ticket(key, ticket, name)
        except AuthError as exc:
            error = exc
    raise error


def run_session(worker: Worker, s: BossSession) -> None:
    """Ask for chunks while a slot is free; encode each in its own thread; stop on `end`."""
    for _ in range(worker.cfg.slots + worker.cfg.prefetch):
        ask_for_chunk(worker, s)
    while True:
        msg = recv_msg_or_reject(s.sock, s.send)
        s.heard = time.monotonic()
        if msg is None:
            continue
        kind = msg["type"]
        handler = SESSION_HANDLERS.get(kind)
        if handler is None:
            s.send(Msg.ERROR, reason="unexpected message", in_reply_to=kind.value)
            continue
        if kind in ANSWERS:
            s.answered()                # the slot now belongs to the encode, or comes back in the handler
        if not handler(worker, s, msg):
            return


# ---------------------------------------------------------------- session handlers: True to go on

def handle_error(worker: Worker, s: BossSession, msg: dict) -> bool:
    log.warning("boss %s: %s", s.boss, str(msg.get("reason", "?"))[:200])
    return True                         # never answer an error with an error


def handle_assign(worker: Worker, s: BossSession, msg: dict) -> bool:
    try:
        start_assignment(worker, s, msg)
    except ProtocolError:
        worker.hand.release()          # no encode will hold it
        raise
    return True


def handle_wait(worker: Worker, s: BossSession, msg: dict) -> bool:
    worker.hand.release()              # nothing for it now: other sessions may use the slot
    retry = min(max(field_float(msg, "retry_after", WAIT_RETRY), MIN_WAIT_RETRY), MAX_WAIT_RETRY)
    ask_later(worker, s, retry)
    return True


def handle_collected(worker: Worker, s: BossSession, msg: dict) -> bool:
    """The boss has the result: drop our copy."""
    with s.lock:
        a = s.work.pop(int_field(msg, "chunk", 0, MAX_CHUNK_INDEX), None)
    if a is not None:
        a.drop_result()
    return True


def handle_cancel(worker: Worker, s: BossSession, msg: dict) -> bool:
    """Another worker's copy won, or the boss lost interest: stop encoding it, and drop its
    bytes, whether uploaded or still arriving. A cancel of a chunk already encoded takes back
    that result only: the boss sent it in answer to our `done`, and a new upload of the same
    chunk (the boss retrying it here) may reach the file port before this message is read."""
    chunk = int_field(msg, "chunk", 0, MAX_CHUNK_INDEX)
    early = None
    with s.lock:
        a = s.work.pop(chunk, None)
        if a is None or a.result is None:
            s.received.pop(chunk, None)
            early = s.early.pop(chunk, None)
            if chunk in s.uploading:
                s.discard.add(s.uploading[chunk])      # receive_chunk drops it when it completes
            s.path(chunk, "in").unlink(missing_ok=True)
    if early is not None:
        early.drop()
        early.a.cancel.set()
    if a is not None:
        a.cancel.set()
        a.drop_result()
    return True


def handle_end(worker: Worker, s: BossSession, msg: dict) -> bool:
    worker.hand.release()
    with contextlib.suppress(ConnectionClosed):
        s.send(Msg.BYE)
    log.info("boss %s has no more chunks; session over", s.boss)
    return False


SESSION_HANDLERS: dict[Msg, Callable[[Worker, BossSession, dict], bool]] = {
    Msg.ERROR: handle_error,
    Msg.ASSIGN: handle_assign,
    Msg.WAIT: handle_wait,
    Msg.COLLECTED: handle_collected,
    Msg.CANCEL: handle_cancel,
    Msg.END: handle_end,
}
ANSWERS = {Msg.ASSIGN, Msg.WAIT, Msg.END}     # the replies to our `request`


def ask_for_chunk(worker: Worker, s: BossSession) -> None:
    """Send `request` once the worker can hold another chunk; that place is held until the boss's
    answer (an `assign` keeps it until that encode ends)."""
    if s.closed.is_set():
        return
    if not worker.hand.acquire(blocking=False):
        ask_later(worker, s, WAIT_RETRY)      # all slots busy, maybe with other bosses
        return
    with s.lock:
        if s.closed.is_set():
            worker.hand.release()
            return
        s.asked += 1
        if s.asked == 1:
            s.heard = time.monotonic()    # the answer is due from now
    try:
        s.send(Msg.REQUEST, count=1)
    except ConnectionClosed:
        pass                              # end_session gives the slot back


def end_if_unanswered(s: BossSession) -> None:
    """End the session if its boss has been silent REQUEST_ANSWER_TIMEOUT with a request
    unanswered and nothing moving on the file port (the watchdog's check)."""
    with s.lock:
        if s.closed.is_set() or s.asked == 0 or s.transfers > 0:
            return
        quiet = time.monotonic() - s.heard
    if quiet < REQUEST_ANSWER_TIMEOUT:
        return
    log.warning("boss %s answered no request for %.0fs: ending its session", s.boss, quiet)
    with contextlib.suppress(OSError):
        s.sock.shutdown(socket.SHUT_RDWR)     # run_session's recv ends; end_session frees the places


def ask_later(worker: Worker, s: BossSession, delay: float) -> None:
    timer = threading.Timer(delay, ask_for_chunk, args=(worker, s))
    timer.daemon = True
    timer.start()


def field_float(msg: dict, key: str, default: float) -> float:
    value = msg.get(key)
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else default


def start_assignment(worker: Worker, s: BossSession, msg: dict) -> None:
    chunk = int_field(msg, "chunk", 0, MAX_CHUNK_INDEX)
    sha = get(msg, "sha256", str)
    frames = int_field(msg, "frames", 0, MAX_FRAMES)
    skip = int_field(msg, "skip", 0, MAX_FRAMES) if "skip" in msg else 0
    limit = int_field(msg, "limit", 1, MAX_FRAMES) if "limit" in msg else None
    with s.lock:
        received = s.received.pop(chunk, None)
        early = s.early.pop(chunk, None)
    if early is not None:
        if received == sha == early.sha and skip == 0 and limit is None and adopt_early(s, early, frames):
            return
        early.drop()
        early.a.cancel.set()             # not the encode asked for: this assign starts its own
    with s.lock:
        s.assignments += 1
        own = str(s.assignments)
    # files of their own per assignment: a cancelled earlier copy of this chunk, still winding
    # down in its thread, must not remove this one's
    a = Assignment(chunk, frames, s.path(chunk, own + ".in"), s.path(chunk, own + ".out"), skip=skip, limit=limit)
    try:
        if received != sha:
            raise FileNotFoundError
        s.path(chunk, "in").replace(a.input)
    except OSError:
        s.send(Msg.FAILED, chunk=chunk, reason="chunk bytes were not received")
        worker.hand.release()
        ask_for_chunk(worker, s)
        return
    with s.lock:
        earlier = s.work.get(chunk)
        s.work[chunk] = a
    if earlier is not None:                  # assigned again without a cancel: the new one wins
        earlier.cancel.set()
    threading.Thread(target=run_encode, args=(worker, s, a), name=f"encode-{chunk}", daemon=True).start()


def adopt_early(s: BossSession, early: EarlyEncode, frames: int) -> bool:
    """Make an early encode the assigned one (its sample must be there for a `get` before the
    held `sample` goes out)."""
    early.a.frames = frames
    with s.lock:
        earlier = s.work.get(early.a.chunk)
        s.work[early.a.chunk] = early.a
    # the uploaded file goes before anything is said (the encoder's feeder has its own handle)
    if early.adopt(s, first=lambda: s.path(early.a.chunk, "in").unlink(missing_ok=True)):
        if earlier is not None:
            earlier.cancel.set()
        return True
    with s.lock:
        if s.work.get(early.a.chunk) is early.a:       # as it was: the assign is served from the file
            if earlier is None:
                del s.work[early.a.chunk]
            else:
                s.work[early.a.chunk] = earlier
    return False


def start_early(worker: Worker, s: BossSession, chunk: int, sha: str) -> EarlyEncode | None:
    """On an upload: start encoding it now if an encoder is free and no assigned chunk waits
    for one (EarlyEncode); None otherwise."""
    with worker.lock:
        if worker.queued:
            return None
    if not worker.encode_slots.acquire(blocking=False):
        return None
    with s.lock:
        if s.closed.is_set() or chunk in s.early:
            worker.encode_slots.release()
            return None
        s.assignments += 1
        own = str(s.assignments)
        early = EarlyEncode(Assignment(chunk, 0, s.path(chunk, own + ".in"), s.path(chunk, own + ".out")), sha)
        s.early[chunk] = early
    threading.Thread(target=run_encode, args=(worker, s, early.a, early), name=f"encode-{chunk}",
                     daemon=True).start()
    return early


def run_encode(worker: Worker, s: BossSession, a: Assignment, early: EarlyEncode | None = None) -> None:
    """Wait for a free encoder (a prefetched chunk waits for the one before it), encode the chunk
    (client/encode.py), report progress (also our liveness signal), then done or failed; its
    place in hand is free again after, and the next chunk is asked for. early: the chunk is
    still arriving, an encoder already taken for it (start_early); its place in hand is the
    assign's, and only once adopted is this encode the one that gives it back."""
    if early is None:
        with worker.lock:
            worker.queued += 1
        try:
            while not worker.encode_slots.acquire(timeout=ENCODER_WAIT_POLL):
                if a.cancel.is_set() or s.closed.is_set():
                    a.input.unlink(missing_ok=True)
                    worker.hand.release()
                    ask_for_chunk(worker, s)       # cancelled before it started: room for another
                    return
        finally:
            with worker.lock:
                worker.queued -= 1
    with worker.lock:
        worker.busy += 1
    say = functools.partial(early.say, s) if early is not None else s.send
    with contextlib.suppress(ConnectionClosed):
        say(Msg.PROGRESS, chunk=a.chunk, frames=0)      # started: no longer worth copying elsewhere
    bar: list[WorkerBar] = []
    last_sent = [0.0]

    def on_frames(n: int) -> None:
        if worker.cfg.bars and not bar and a.frames:     # (an early encode's frames: from its assign)
            bar.append(WorkerBar(a.chunk, a.frames))
        if bar:
            bar[0].update(n)
        now = time.monotonic()
        if now - last_sent[0] >= PROGRESS_INTERVAL:
            last_sent[0] = now
            with contextlib.suppress(ConnectionClosed):
                say(Msg.PROGRESS, chunk=a.chunk, frames=n)

    def on_sample() -> None:
        assert a.sample is not None
        with contextlib.suppress(ConnectionClosed):
            say(Msg.SAMPLE, chunk=a.chunk, size=a.sample[0], sha256=a.sample[1])

    started = time.monotonic()
    try:
        a.result = encode(worker.cfg.tools, s.settings, a, worker.cfg.threads, on_frames,
                          on_sample=on_sample if s.samples else None,
                          arriving=early.arrival if early is not None else None)
        if a.result is None:
            return                         # cancelled
        if early is not None and not early.wait_adopted(s) and early.drop():
            a.drop_result()                # never assigned as it is
            return
        seconds = round(time.monotonic() - started, 3)
        s.send(Msg.DONE, chunk=a.chunk, size=a.result[0], sha256=a.result[1], frames=a.frames, seconds=seconds)
        log.info("chunk %d of %s encoded: %d frames in %.1fs (%.1f fps)", a.chunk, s.boss, a.frames, seconds,
                 a.frames / seconds if seconds else 0.0)
        worker.report(s, Event.CHUNK_ENCODED, chunk=a.chunk, seconds=seconds)
    except FFmpegError as exc:
        with s.lock:
            if s.work.get(a.chunk) is a:
                del s.work[a.chunk]
            if early is not None and s.early.get(a.chunk) is early:
                del s.early[a.chunk]
        a.drop_result()
        # (an early encode that fails before its assign tells nobody: the assign encodes the
        # chunk again, from the file, and reports what that does)
        if a.cancel.is_set() or (early is not None and early.drop()):
            return                         # the boss cancelled it, the session ended, or not assigned yet
        reason = exc.last_line or str(exc)
        reason = reason.replace(str(s.dir) + "/", "")      # our temp paths are nobody's business
        log.warning("chunk %d failed: %s", a.chunk, reason)
        with contextlib.suppress(ConnectionClosed):
            s.send(Msg.FAILED, chunk=a.chunk, reason=reason[:MAX_REASON])
        worker.report(s, Event.CHUNK_FAILED, chunk=a.chunk, detail=reason[:MAX_REASON])
    except (ConnectionClosed, OSError) as exc:
        log.warning("chunk %d: %s", a.chunk, exc)
    finally:
        if bar:
            bar[0].finish()
        with worker.lock:
            worker.busy -= 1
        worker.encode_slots.release()
        if early is None or early.adopted:
            worker.hand.release()
            ask_for_chunk(worker, s)       # room for another chunk: ask for it


def end_session(worker: Worker, s: BossSession) -> None:
    """Stop the session's encodes, give back the slots its open requests held, remove its files."""
    with s.lock:
        s.closed.set()
        work = list(s.work.values())
        s.work.clear()
        early = list(s.early.values())
        s.early.clear()
        asked, s.asked = s.asked, 0
    for _ in range(asked):
        worker.hand.release()
    with s.lock:
        kept = list(s.kept)
    for sock in kept:                    # its file connections waiting for a next transfer end now
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
    for e in early:
        e.drop()
        e.a.cancel.set()
    for a in work:
        a.cancel.set()
    with worker.lock:
        worker.sessions.pop(s.id, None)
    with contextlib.suppress(OSError):
        s.sock.close()
    shutil.rmtree(s.dir, ignore_errors=True)


# ---------------------------------------------------------------- file port

class FileHandler(PortHandler):
    def serve(self, worker: Worker, sock: socket.socket) -> None:
        deadline = Deadline(sock, HANDSHAKE_TIMEOUT)      # hello and a valid session key, in all
        kept: BossSession | None = None                   # the session this connection stays open for
        try:
            server_hello(sock, "worker", {Role.BOSS})
            msg = recv_msg(sock)
            while True:
                try:
                    s = worker.session(get(msg, "session", str), get(msg, "key", str))
                    if kept is not None and s is not kept:
                        raise RequestRejected("this connection is another session's")
                    deadline.met()
                    sock.settimeout(TRANSFER_STALL_TIMEOUT)
                    transfer(worker, s, sock, msg)
                except (RequestRejected, TransferError) as exc:
                    send_msg(sock, Msg.ERROR, reason=str(exc), in_reply_to=msg["type"].value)
                    return                                # (and closed: an error ends a connection)
                if kept is None and not keep_open(s, sock):
                    return
                kept = s
                sock.settimeout(BOSS_SILENCE_TIMEOUT)     # a boss may transfer nothing for a whole encode
                try:
                    msg = recv_msg(sock)
                except ConnectionClosed:
                    return                                # closed by the boss, idle too long, or the session ended
        except (ConnectionClosed, ProtocolError, TranscoderError, OSError) as exc:
            log.warning("file transfer with %s failed: %s", self.client_address[0], exc)
        finally:
            if kept is not None:
                with kept.lock:
                    kept.kept.discard(sock)


def transfer(worker: Worker, s: BossSession, sock: socket.socket, msg: dict) -> None:
    """One put or get of session `s`, counted as a transfer in progress (the watchdog's check)."""
    with s.lock:
        s.transfers += 1
    try:
        if msg["type"] is Msg.PUT:
            receive_chunk(worker, s, sock, msg)
        elif msg["type"] is Msg.GET:
            send_result(s, sock, msg)
        else:
            raise RequestRejected("the file port takes put or get")
    finally:
        with s.lock:
            s.transfers -= 1
            s.heard = time.monotonic()


def keep_open(s: BossSession, sock: socket.socket) -> bool:
    """Whether this connection stays open for the session's next transfer (PROTOCOL.md 9): only if
    the boss asked, while the session lasts, and at most MAX_KEPT_FILE_CONNECTIONS of them (each
    holds a thread and one of the port's connections)."""
    with s.lock:
        if not s.reuse or s.closed.is_set() or len(s.kept) >= MAX_KEPT_FILE_CONNECTIONS:
            return False
        s.kept.add(sock)
        return True


def receive_chunk(worker: Worker, s: BossSession, sock: socket.socket, msg: dict) -> None:
    chunk = int_field(msg, "chunk", 0, MAX_CHUNK_INDEX)
    size = int_field(msg, "size", 1, MAX_CHUNK_BYTES)
    sha = get(msg, "sha256", str)
    make_room_for_upload(worker, s)
    need = 3 * size                                # input, output and some slack
    with worker.lock:
        # the space is reserved before the bytes come: uploads at once cannot overcommit the disk
        free = (0 if faults.on("disk-full") else shutil.disk_usage(s.dir).free) - worker.reserved
        if free < need + DISK_HEADROOM:
            raise RequestRejected(f"disk nearly full on this worker ({max(0, free) // 2**20} MiB free)")
        worker.reserved += need
    upload = object()                              # this upload, for a cancel that comes during it
    arrived = False
    with s.lock:
        s.uploading[chunk] = upload
    early = start_early(worker, s, chunk, sha) if worker.cfg.early_encodes else None
    try:
        send_msg(sock, Msg.OK)                     # go ahead: the bytes may follow
        part = part_path(s.path(chunk, "in"))
        recv_file(sock, s.path(chunk, "in"), size, sha,
                  on_bytes=(lambda n: early.arrival.grew(part, n)) if early is not None else lambda n: None)
        arrived = True
    finally:
        if early is not None:
            if not arrived:                        # (killed before its input ends: no result from half a chunk)
                with s.lock:
                    if s.early.get(chunk) is early:
                        del s.early[chunk]
                early.drop()
                early.a.cancel.set()
            early.arrival.ended(arrived)
        with worker.lock:
            worker.reserved -= need
        with s.lock:
            if s.uploading.get(chunk) is upload:
                del s.uploading[chunk]
            cancelled = upload in s.discard
            s.discard.discard(upload)
            if cancelled:
                s.path(chunk, "in").unlink(missing_ok=True)
            elif arrived:
                s.received[chunk] = sha
                s.received_at[chunk] = time.monotonic()
    send_msg(sock, Msg.OK, sha256=sha)


def make_room_for_upload(worker: Worker, s: BossSession) -> None:
    """A boss uploads a chunk only for a place it was offered, and assigns it at once: uploads
    left unassigned for UPLOAD_EXPIRY are removed, and no more may wait unassigned than the
    worker has places. RequestRejected if this upload would be one too many."""
    now = time.monotonic()
    with s.lock:
        for chunk, at in list(s.received_at.items()):
            if now - at > UPLOAD_EXPIRY and chunk in s.received:
                del s.received[chunk]
                s.path(chunk, "in").unlink(missing_ok=True)
                log.warning("boss %s never assigned chunk %d it uploaded: removed", s.boss, chunk)
        s.received_at = {c: at for c, at in s.received_at.items() if c in s.received}
        waiting = len(s.received) + len(s.uploading)
    if waiting >= worker.cfg.slots + worker.cfg.prefetch:
        raise RequestRejected(f"{waiting} uploads already wait for their assign")


def send_result(s: BossSession, sock: socket.socket, msg: dict) -> None:
    chunk = int_field(msg, "chunk", 0, MAX_CHUNK_INDEX)
    sample = msg.get("sample") is True
    with s.lock:
        a = s.work.get(chunk)
    found = None if a is None else a.sample if sample else a.result
    if a is None or found is None:
        raise RequestRejected(f"no {'sample' if sample else 'result'} for chunk {chunk}")
    size, sha = found
    send_msg(sock, Msg.FILE, size=size, sha256=sha)
    send_file(sock, a.sample_path if sample else a.output, size)
