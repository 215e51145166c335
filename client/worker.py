#!/usr/bin/env python3
"""ffdt-worker: offer this machine's ffmpeg to bosses the tracker sends.

Listens on a message port (sessions with bosses: common/PROTOCOL.md, "Boss and worker") and a
file port (chunk bytes in and results out), registers with the tracker and heartbeats.
"""
from __future__ import annotations

import argparse
import contextlib
import hmac
import itertools
import logging
import os
import random
import secrets
import shutil
import signal
import socket
import socketserver
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):      # run as a script: make the checkout importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from client.progress import WorkerBar, bars_wanted
from client.tracker_client import TrackerClient
from common import auth, ffmpeg
from common.cli import PASSWORD_HELP, add_common_options, add_password_option, read_password, run_main, setup_logging
from common.config import (FFMPEG_CHUNK_TIMEOUT, HANDSHAKE_TIMEOUT, HEARTBEAT_INTERVAL, MAX_CHUNK_BYTES,
                           MAX_SLOTS, PROGRESS_INTERVAL, TRANSFER_STALL_TIMEOUT, WAIT_RETRY)
from common.errors import (AuthError, ConnectionClosed, FFmpegError, PeerUnreachable, ProtocolError,
                           RequestRejected, TranscoderError, TransferError, UsageError)
from common.net import parse_host_port
from common.protocol import (Msg, Role, UnknownMessage, field as get, int_field, recv_msg, send_msg,
                             server_hello)
from common.settings import Settings
from common.transfer import recv_file, send_file, sha256_file

log = logging.getLogger("worker")

MAX_CHUNK_INDEX = 10_000_000
# Fault switches for the test suite only: off unless this environment variable names them.
FAULTS = frozenset(os.environ.get("FFDT_TEST_FAULTS", "").split(","))
BOSS_SILENCE_TIMEOUT = FFMPEG_CHUNK_TIMEOUT + 60   # a boss is quiet while we encode
DISK_HEADROOM = 256 * 1024 * 1024                   # keep this much free beyond a chunk's needs


@dataclass(frozen=True)
class WorkerConfig:
    tracker: tuple[str, int]
    user: str
    password: str
    bind: str
    advertise: str
    msg_port: int
    file_port: int
    slots: int
    threads: int
    workdir: Path | None
    tools: ffmpeg.Tools
    bars: bool


@dataclass
class Assignment:
    chunk: int
    frames: int
    input: Path
    output: Path
    skip: int = 0                             # frames to decode and drop first
    limit: int | None = None                  # frames to encode after them (None: all)
    cancel: ffmpeg.Cancel = field(default_factory=ffmpeg.Cancel)
    result: tuple[int, str] | None = None     # (size, sha256) once encoded


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
    work: dict[int, Assignment] = field(default_factory=dict)
    closed: threading.Event = field(default_factory=threading.Event)

    def send(self, kind: Msg, **fields: Any) -> None:
        with self.send_lock:
            send_msg(self.sock, kind, **fields)

    def path(self, chunk: int, suffix: str) -> Path:
        return self.dir / f"chunk_{chunk:05d}.{suffix}.mkv"   # our names, never the peer's


class Worker:
    def __init__(self, cfg: WorkerConfig) -> None:
        self.cfg = cfg
        self.version, encoders = ffmpeg.capabilities(cfg.tools)
        self.encoders = sorted(set(encoders))
        self.name = ""                                 # assigned by the tracker
        self.ticket_keys: list[bytes] = []             # newest first; a re-registration keeps the old one
        self.sessions: dict[str, BossSession] = {}
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.busy = 0
        self.serving = False
        root = cfg.workdir or Path(tempfile.gettempdir())
        root.mkdir(parents=True, exist_ok=True)
        remove_stale_dirs(root)
        self.root = Path(tempfile.mkdtemp(prefix=f"ffdt-worker-{os.getpid()}-", dir=root))
        self.tracker = TrackerClient(cfg.tracker, cfg.user, cfg.password, Role.WORKER)
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
                                      self.version, self.encoders)
        with self.lock:
            self.name = get(reply, "worker", str)
            key = auth.ticket_key(login.server_key, get(reply, "ticket_salt", str))
            self.ticket_keys = [key, *self.ticket_keys][:2]

    def heartbeat_loop(self) -> None:
        """Heartbeat; after a lost tracker, re-register with jittered backoff, forever."""
        delay = 1.0
        while not self.stopping.wait(HEARTBEAT_INTERVAL):
            try:
                self.tracker.heartbeat(self.busy)
                delay = 1.0
                continue
            except RequestRejected:
                log.info("tracker forgot this worker; registering again")
            except (ConnectionClosed, ProtocolError, PeerUnreachable) as exc:
                log.warning("tracker connection lost (%s); reconnecting", exc)
            while not self.stopping.is_set():
                try:
                    self.register()
                    log.info("registered again as %s", self.name)
                    break
                except AuthError as exc:
                    log.error("tracker refused us: %s", exc)
                except TranscoderError as exc:
                    log.debug("still no tracker: %s", exc)
                if self.stopping.wait(random.uniform(delay / 2, delay)):
                    return
                delay = min(delay * 2, 30.0)

    def report(self, session: BossSession, event: str, **fields: Any) -> None:
        """Tell the tracker about a chunk; the job goes on if the tracker is away."""
        try:
            self.tracker.event(session.job, event, **fields)
        except TranscoderError as exc:
            log.debug("could not report %s: %s", event, exc)

    # ------------------------------------------------------------ lifecycle

    def serve(self) -> None:
        threads = [threading.Thread(target=s.serve_forever, name=n, daemon=True)
                   for s, n in ((self.msg_server, "msg"), (self.file_server, "file"))]
        for t in threads:
            t.start()
        self.serving = True
        threading.Thread(target=self.heartbeat_loop, name="heartbeat", daemon=True).start()

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
        self.tracker.close()
        shutil.rmtree(self.root, ignore_errors=True)

    def session(self, session_id: str, key: str) -> BossSession:
        with self.lock:
            s = self.sessions.get(session_id)
        if s is None or not hmac.compare_digest(s.key, key):
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

    def __init__(self, addr: tuple[str, int], handler: type, worker: Worker) -> None:
        self.worker = worker
        super().__init__(addr, handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.exception("unexpected error serving %s", client_address)


# ---------------------------------------------------------------- message port

class MessageHandler(socketserver.BaseRequestHandler):
    server: WorkerServer

    def handle(self) -> None:
        worker = self.server.worker
        sock: socket.socket = self.request
        sock.settimeout(HANDSHAKE_TIMEOUT)
        peer = "%s:%d" % self.client_address[:2]
        try:
            server_hello(sock, "worker", {Role.BOSS})
            session = open_session(worker, sock)
        except (ConnectionClosed, ProtocolError, AuthError, RequestRejected) as exc:
            log.warning("refused a boss from %s: %s", peer, exc)
            return
        log.info("session with %s for job %s (%s)", session.boss, session.job, session.settings.vcodec)
        sock.settimeout(BOSS_SILENCE_TIMEOUT)
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
                          Path(tempfile.mkdtemp(prefix=f"s{session_id}-", dir=worker.root)), sock)
    with worker.lock:
        worker.sessions[session_id] = session
    session.send(Msg.SESSION_OK, session=session.id, key=session.key, slots=worker.cfg.slots, worker=name)
    return session


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
    for _ in range(worker.cfg.slots):
        s.send(Msg.REQUEST, count=1)
    while True:
        try:
            msg = recv_msg(s.sock)
        except UnknownMessage as exc:
            s.send(Msg.ERROR, reason=str(exc), in_reply_to=exc.kind)
            continue
        kind = msg["type"]
        if kind is Msg.ERROR:           # never answer an error with an error
            log.warning("boss %s: %s", s.boss, str(msg.get("reason", "?"))[:200])
        elif kind is Msg.ASSIGN:
            start_assignment(worker, s, msg)
        elif kind is Msg.WAIT:
            retry = min(max(float(msg.get("retry_after", WAIT_RETRY) or WAIT_RETRY), 0.05), 10.0)
            timer = threading.Timer(retry, _request_again, args=(s,))
            timer.daemon = True
            timer.start()
        elif kind is Msg.COLLECTED:
            chunk = int_field(msg, "chunk", 0, MAX_CHUNK_INDEX)
            with s.lock:
                a = s.work.pop(chunk, None)
            if a is not None:
                a.output.unlink(missing_ok=True)
        elif kind is Msg.CANCEL:
            chunk = int_field(msg, "chunk", 0, MAX_CHUNK_INDEX)
            with s.lock:
                a = s.work.pop(chunk, None)
            if a is not None:
                a.cancel.set()
                a.output.unlink(missing_ok=True)
        elif kind is Msg.END:
            with contextlib.suppress(ConnectionClosed):
                s.send(Msg.BYE)
            log.info("boss %s has no more chunks; session over", s.boss)
            return
        else:
            s.send(Msg.ERROR, reason="unexpected message", in_reply_to=kind.value)


def _request_again(s: BossSession) -> None:
    if not s.closed.is_set():
        with contextlib.suppress(ConnectionClosed):
            s.send(Msg.REQUEST, count=1)


def start_assignment(worker: Worker, s: BossSession, msg: dict) -> None:
    chunk = int_field(msg, "chunk", 0, MAX_CHUNK_INDEX)
    sha = get(msg, "sha256", str)
    with s.lock:
        received = s.received.pop(chunk, None)
    if received != sha:
        s.send(Msg.FAILED, chunk=chunk, reason="chunk bytes were not received")
        s.send(Msg.REQUEST, count=1)      # the slot is still free
        return
    a = Assignment(chunk, int_field(msg, "frames", 0, 10**9), s.path(chunk, "in"), s.path(chunk, "out"),
                   skip=int_field(msg, "skip", 0, 10**9) if "skip" in msg else 0,
                   limit=int_field(msg, "limit", 1, 10**9) if "limit" in msg else None)
    with s.lock:
        s.work[chunk] = a
    threading.Thread(target=encode_chunk, args=(worker, s, a), name=f"encode-{chunk}", daemon=True).start()


def encode_chunk(worker: Worker, s: BossSession, a: Assignment) -> None:
    """Encode one chunk, report progress (also our liveness signal), then done or failed."""
    with worker.lock:
        worker.busy += 1
    bar = WorkerBar(a.chunk, a.frames) if worker.cfg.bars else None
    last_sent = [0.0]

    def on_frames(n: int) -> None:
        if bar:
            bar.update(n)
        now = time.monotonic()
        if now - last_sent[0] >= PROGRESS_INTERVAL:
            last_sent[0] = now
            with contextlib.suppress(ConnectionClosed):
                s.send(Msg.PROGRESS, chunk=a.chunk, frames=n)

    started = time.monotonic()
    cmd = ffmpeg.encode_cmd(worker.cfg.tools, a.input, a.output, s.settings, worker.cfg.threads,
                            frame_range=(a.skip, a.limit) if a.limit is not None else None)
    try:
        ffmpeg.run_with_progress(cmd, timeout=FFMPEG_CHUNK_TIMEOUT, on_frames=on_frames, cancel=a.cancel)
        if a.cancel.is_set() and s.closed.is_set():
            return
        if "corrupt-results" in FAULTS:
            _corrupt(a.output)
        size = a.output.stat().st_size
        a.result = (size, sha256_file(a.output))
        s.send(Msg.DONE, chunk=a.chunk, size=size, sha256=a.result[1], frames=a.frames,
               seconds=round(time.monotonic() - started, 3))
        worker.report(s, "chunk_encoded", chunk=a.chunk, seconds=round(time.monotonic() - started, 3))
    except FFmpegError as exc:
        with s.lock:
            s.work.pop(a.chunk, None)
        a.output.unlink(missing_ok=True)
        if a.cancel.is_set():
            return                         # the boss cancelled it, or the session ended
        reason = exc.detail.strip().splitlines()[-1] if exc.detail.strip() else str(exc)
        reason = reason.replace(str(s.dir) + "/", "")      # our temp paths are nobody's business
        log.warning("chunk %d failed: %s", a.chunk, reason)
        with contextlib.suppress(ConnectionClosed):
            s.send(Msg.FAILED, chunk=a.chunk, reason=reason[:300])
        worker.report(s, "chunk_failed", chunk=a.chunk, detail=reason[:300])
    except (ConnectionClosed, OSError) as exc:
        log.warning("chunk %d: %s", a.chunk, exc)
    finally:
        a.input.unlink(missing_ok=True)
        if bar:
            bar.finish()
        with worker.lock:
            worker.busy -= 1
        if not s.closed.is_set():          # the slot is free again: ask for the next chunk
            with contextlib.suppress(ConnectionClosed):
                s.send(Msg.REQUEST, count=1)


def _corrupt(path: Path) -> None:
    """Test fault: overwrite the middle of a result with garbage (its hash is taken after)."""
    size = path.stat().st_size
    with path.open("r+b") as f:
        f.seek(size // 3)
        f.write(os.urandom(max(64, size // 3)))


def end_session(worker: Worker, s: BossSession) -> None:
    """Stop the session's encodes and remove its files."""
    s.closed.set()
    with s.lock:
        work = list(s.work.values())
        s.work.clear()
    for a in work:
        a.cancel.set()
    with worker.lock:
        worker.sessions.pop(s.id, None)
    with contextlib.suppress(OSError):
        s.sock.close()
    shutil.rmtree(s.dir, ignore_errors=True)


# ---------------------------------------------------------------- file port

class FileHandler(socketserver.BaseRequestHandler):
    server: WorkerServer

    def handle(self) -> None:
        worker = self.server.worker
        sock: socket.socket = self.request
        sock.settimeout(HANDSHAKE_TIMEOUT)
        try:
            server_hello(sock, "worker", {Role.BOSS})
            sock.settimeout(TRANSFER_STALL_TIMEOUT)
            msg = recv_msg(sock)
            try:
                s = worker.session(get(msg, "session", str), get(msg, "key", str))
                if msg["type"] is Msg.PUT:
                    receive_chunk(worker, s, sock, msg)
                elif msg["type"] is Msg.GET:
                    send_result(s, sock, msg)
                else:
                    raise RequestRejected("the file port takes put or get")
            except (RequestRejected, TransferError) as exc:
                send_msg(sock, Msg.ERROR, reason=str(exc), in_reply_to=msg["type"].value)
        except (ConnectionClosed, ProtocolError, TranscoderError, OSError) as exc:
            log.warning("file transfer with %s failed: %s", self.client_address[0], exc)


def receive_chunk(worker: Worker, s: BossSession, sock: socket.socket, msg: dict) -> None:
    chunk = int_field(msg, "chunk", 0, MAX_CHUNK_INDEX)
    size = int_field(msg, "size", 1, MAX_CHUNK_BYTES)
    sha = get(msg, "sha256", str)
    free = 0 if "disk-full" in FAULTS else shutil.disk_usage(s.dir).free
    if free < 3 * size + DISK_HEADROOM:            # input, output and some slack
        raise RequestRejected(f"disk nearly full on this worker ({free // 2**20} MiB free)")
    send_msg(sock, Msg.OK)                         # go ahead: the bytes may follow
    recv_file(sock, s.path(chunk, "in"), size, sha)
    with s.lock:
        s.received[chunk] = sha
    send_msg(sock, Msg.OK, sha256=sha)


def send_result(s: BossSession, sock: socket.socket, msg: dict) -> None:
    chunk = int_field(msg, "chunk", 0, MAX_CHUNK_INDEX)
    with s.lock:
        a = s.work.get(chunk)
    if a is None or a.result is None:
        raise RequestRejected(f"no result for chunk {chunk}")
    size, sha = a.result
    send_msg(sock, Msg.FILE, size=size, sha256=sha)
    send_file(sock, a.output, size)


# ---------------------------------------------------------------- command line

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ffdt-worker", description="Offer this machine's ffmpeg to bosses: listen on MSG_PORT and "
        "FILE_PORT, register with the tracker, encode the chunks bosses send.",
        epilog=PASSWORD_HELP + ". Environment: FFDT_PASSWORD, FFMPEG_PATH.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("msg_port", type=int, metavar="MSG_PORT", help="message port (0: any free port)")
    p.add_argument("file_port", type=int, metavar="FILE_PORT", help="file port (0: any free port)")
    p.add_argument("--tracker", required=True, help="tracker HOST:PORT")
    p.add_argument("--user", required=True, help="tracker user with the worker role")
    p.add_argument("--host", default="0.0.0.0", help="address to listen on")
    p.add_argument("--advertise", help="address bosses should use to reach this worker "
                   "(default: --host, or this machine's address toward the tracker)")
    p.add_argument("--slots", type=int, default=1, help="chunks encoded at the same time")
    p.add_argument("--threads", type=int, default=0, help="ffmpeg threads per chunk (0: ffmpeg decides)")
    p.add_argument("--workdir", type=Path, help="where chunks are kept while encoding (default: system temp)")
    p.add_argument("--ffmpeg", help="ffmpeg binary to use (ffprobe beside it)")
    p.add_argument("--use-global", "-use_global", action="store_true",
                   help="use ffmpeg from PATH even if client/ffmpeg/ has a build")
    p.add_argument("--quiet", action="store_true", help="no progress bars, warnings only")
    add_password_option(p)
    add_common_options(p)
    return p


def advertised_host(args: argparse.Namespace, tracker: tuple[str, int]) -> str:
    if args.advertise:
        return args.advertise
    if args.host not in ("0.0.0.0", "::", ""):
        return args.host
    # the local address a connection toward the tracker would use (UDP connect sends nothing)
    with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect(tracker)
        return probe.getsockname()[0]
    return "127.0.0.1"


def run_worker(args: argparse.Namespace) -> int:
    for port in (args.msg_port, args.file_port):
        if not 0 <= port < 65536:
            raise UsageError(f"port {port} out of range")
    if not 1 <= args.slots <= MAX_SLOTS:
        raise UsageError(f"--slots must be 1..{MAX_SLOTS}")
    tracker = parse_host_port(args.tracker)
    cfg = WorkerConfig(tracker=tracker, user=args.user, password=read_password(args.password_file),
                       bind=args.host, advertise=advertised_host(args, tracker), msg_port=args.msg_port,
                       file_port=args.file_port, slots=args.slots, threads=max(0, args.threads),
                       workdir=args.workdir, tools=ffmpeg.find_tools(args.ffmpeg, args.use_global),
                       bars=bars_wanted(args.quiet))
    worker = Worker(cfg)
    try:
        worker.register()
        print(f"listening on {cfg.bind}:{worker.msg_port} file port {worker.file_port}", flush=True)
        log.info("registered as %s with %s (%s)", worker.name, worker.tracker.where, worker.version)
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        worker.serve()
        stop.wait()
        log.info("stopping")
    finally:
        worker.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging("worker", verbose=args.verbose, quiet=args.quiet)
    return run_main("worker", lambda: run_worker(args))


if __name__ == "__main__":
    sys.exit(main())
