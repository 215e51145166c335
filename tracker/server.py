"""The tracker's socket side: a threaded TCP server that turns frames into TrackerState calls.

Each connection: hello (version check), SCRAM login, then requests dispatched through HANDLERS.
Protocol: common/PROTOCOL.md, sections "Tracker".
"""
from __future__ import annotations

import contextlib
import itertools
import logging
import math
import re
import secrets
import socket
import socketserver
import ssl
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ffdt.common import auth as ticket_auth
from ffdt.common.audit_events import PEER_EVENTS, Event
from ffdt.common.config import (HANDSHAKE_TIMEOUT, HEARTBEAT_INTERVAL, IO_TIMEOUT, MAX_CHUNK_INDEX, MAX_FRAME, MAX_FRAMES,
                                MAX_REASON, MAX_SLOTS, MAX_WORKERS_PER_REQUEST, PEER_TTL, TICKET_TTL)
from ffdt.common.errors import AuthError, ConnectionClosed, ProtocolError, RequestRejected
from ffdt.common.net import Deadline
from ffdt.common.tls import FINGERPRINT, wrap_server
from ffdt.common.protocol import (Msg, Role, field as get, int_field, optional_number, recv_msg_or_reject, send_msg,
                                  server_hello)
from ffdt.tracker import farm
from ffdt.tracker.audit import Recorder
from ffdt.tracker.auth import ScramLogin
from ffdt.tracker.state import TrackerState, WorkerInfo
from ffdt.tracker.throttle import LoginThrottle
from ffdt.tracker.store import Store

log = logging.getLogger(__name__)

_HOST = re.compile(r"^[A-Za-z0-9.:_-]{1,253}$")
MAX_SECONDS = 10**7              # durations on the wire (about 116 days)
_conn_ids = itertools.count(1)


@dataclass
class TrackerContext:
    state: TrackerState
    store: Store
    audit: Recorder
    secret: bytes
    ttl: float = PEER_TTL
    tls: ssl.SSLContext | None = None           # TLS on the tracker's port, if configured
    throttle: LoginThrottle = field(default_factory=LoginThrottle)


@dataclass
class Session:
    peer: str
    address: str = ""                           # the peer's IP address, without the port
    conn_id: int = field(default_factory=lambda: next(_conn_ids))
    claimed_role: Role | None = None
    name: str = ""
    user: str | None = None
    role: Role | None = None
    server_key: bytes = b""
    login: ScramLogin | None = None
    worker: str | None = None                   # registered worker name


Reply = tuple[Msg, dict[str, Any]]


# ---------------------------------------------------------------- handlers

def handle_auth_start(ctx: TrackerContext, s: Session, msg: dict) -> Reply:
    user = get(msg, "user", str)
    wait = ctx.throttle.wait_needed(s.address)
    if wait > 0:
        raise RequestRejected(f"too many failed logins from {s.address}: try again in {wait:.0f}s")
    s.login = ScramLogin(ctx.store, ctx.secret)
    try:
        return Msg.AUTH_CHALLENGE, {"data": s.login.start(user, get(msg, "data", str))}
    except AuthError as exc:
        raise RequestRejected(str(exc)) from exc


def handle_auth_finish(ctx: TrackerContext, s: Session, msg: dict) -> Reply:
    login, s.login = s.login, None
    if login is None:
        raise RequestRejected("send auth_start first")
    try:
        final = login.finish(get(msg, "data", str))
    except AuthError:
        ctx.audit.record(Event.AUTH_FAILED, peer=s.peer, user=login.user, role=_v(s.claimed_role),
                         reason="bad credentials")
        time.sleep(ctx.throttle.failed(login.user or "", s.address))    # slows guessing one user from many places
        raise
    assert login.record is not None
    role = Role(login.record.role)
    wanted = s.claimed_role
    if wanted is not None and wanted is not role and role is not Role.ADMIN:
        ctx.audit.record(Event.AUTH_FAILED, peer=s.peer, user=login.user, role=wanted.value,
                         reason=f"user has role {role.value}")
        raise AuthError(f"user {login.user!r} may not act as {wanted.value}")
    s.user, s.role, s.server_key = login.user, wanted or role, login.record.server_key
    ctx.audit.record(Event.AUTH_OK, peer=s.peer, user=s.user, role=s.role.value)
    return Msg.AUTH_OK, {"data": final, "role": s.role.value}


def handle_register(ctx: TrackerContext, s: Session, msg: dict) -> Reply:
    _need(s, Role.WORKER)
    host = get(msg, "host", str)
    if not _HOST.match(host):
        raise RequestRejected("bad advertised host")
    msg_port, file_port = int_field(msg, "msg_port", 1, 65535), int_field(msg, "file_port", 1, 65535)
    encoders = get(msg, "encoders", list)
    if len(encoders) > 1000 or not all(isinstance(e, str) and len(e) <= 64 for e in encoders):
        raise RequestRejected("bad encoder list")
    fingerprint = get(msg, "fingerprint", str, optional=True)
    if fingerprint is not None and not FINGERPRINT.match(fingerprint):
        raise RequestRejected("bad key fingerprint")
    salt = secrets.token_hex(16)
    name = f"{s.user}@{host}:{msg_port}"
    if s.worker and s.worker != name:
        ctx.state.drop(s.worker, s.conn_id)
    worker = WorkerInfo(name=name, user=s.user or "", host=host, msg_port=msg_port, file_port=file_port,
                        slots=int_field(msg, "slots", 1, MAX_SLOTS), ffmpeg=get(msg, "ffmpeg", str)[:200],
                        encoders=tuple(encoders), tls=bool(msg.get("tls") is True) or fingerprint is not None,
                        fingerprint=fingerprint,
                        ticket_key=ticket_auth.ticket_key(s.server_key, salt), connection=s.conn_id)
    ctx.state.register(worker)
    s.worker = name
    ctx.audit.record(Event.REGISTER, peer=s.peer, user=s.user, worker=name, slots=worker.slots,
                     ffmpeg=worker.ffmpeg, file_port=file_port)
    return Msg.REGISTERED, {"worker": name, "ticket_salt": salt, "heartbeat": HEARTBEAT_INTERVAL}


def handle_heartbeat(ctx: TrackerContext, s: Session, msg: dict) -> Reply:
    _need(s, Role.WORKER)
    busy = optional_number(msg, "busy", int, 0, MAX_SLOTS) or 0
    if s.worker is None or not ctx.state.heartbeat(s.worker, s.conn_id, busy):
        raise RequestRejected("not registered")
    return Msg.OK, {}


def handle_job_start(ctx: TrackerContext, s: Session, msg: dict) -> Reply:
    _need(s, Role.BOSS)
    name = Path(get(msg, "input", str)).name[:200]        # a base name is enough for the log
    settings = _settings(get(msg, "settings", dict, optional=True, default={}))
    chunks = optional_number(msg, "chunks", int, 0, MAX_CHUNK_INDEX)
    frames = optional_number(msg, "frames", int, 0, MAX_FRAMES)
    job = ctx.state.start_job(s.user or "", name, frames)
    if job is None:
        raise RequestRejected("too many running jobs for this boss")
    ctx.audit.record(Event.JOB_STARTED, peer=s.peer, user=s.user, job=job.id, input=name, chunks=chunks,
                     settings=settings)
    return Msg.JOB, {"job": job.id}


MAX_SETTINGS = 40               # keys of job_start's settings kept in the audit log
MAX_SETTING_CHARS = 200


def _settings(settings: dict) -> dict[str, Any]:
    """job_start's settings as the audit log keeps them: a few short keys with scalar values
    (strings cut short); more keys than any boss sends is a protocol error."""
    if len(settings) > MAX_SETTINGS:
        raise ProtocolError(f"job_start: more than {MAX_SETTINGS} settings")
    kept: dict[str, Any] = {}
    for key, value in settings.items():
        if len(key) > 40:
            raise ProtocolError("job_start: a settings key longer than 40 characters")
        if isinstance(value, str):
            kept[key] = value[:MAX_SETTING_CHARS]
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            kept[key] = value
    return kept


def handle_workers(ctx: TrackerContext, s: Session, msg: dict) -> Reply:
    _need(s, Role.BOSS)
    job = _job(ctx, s, msg)
    count = int_field(msg, "count", 1, MAX_WORKERS_PER_REQUEST)
    encoder = get(msg, "encoder", str)
    exclude = get(msg, "exclude", list, optional=True, default=[])
    unwanted = frozenset(x for x in exclude if isinstance(x, str)) | ctx.state.dropped_from(job.id)
    picked = ctx.state.live_workers(ctx.ttl, encoder, unwanted)[:count]
    expires = int(time.time() + TICKET_TTL)
    boss = s.user or ""
    workers = [{"name": w.name, "host": w.host, "msg_port": w.msg_port, "file_port": w.file_port,
                "slots": w.slots, "ffmpeg": w.ffmpeg, "tls": w.tls, "fingerprint": w.fingerprint,
                "ticket": ticket_auth.make_ticket(w.ticket_key, boss, job.id, w.name, expires)}
               for w in picked]
    ctx.state.gave(job.id, [w.name for w in picked])
    if workers or not exclude:     # a running job asking for more and getting none is not news
        ctx.audit.record(Event.WORKERS_GIVEN, peer=s.peer, user=s.user, job=job.id, encoder=encoder,
                         asked=count, count=len(workers), workers=[w.name for w in picked])
    return Msg.WORKER_LIST, {"workers": workers}


def handle_event(ctx: TrackerContext, s: Session, msg: dict) -> Reply:
    name = get(msg, "event", str)
    event = next((e for e in PEER_EVENTS if e.value == name), None)
    if event is None:
        raise RequestRejected(f"unknown event {name[:40]!r}")
    job_id = get(msg, "job", str)[:40]
    if s.role is Role.WORKER:
        # a worker speaks for itself only, and of the running jobs it was handed to
        worker = s.worker
        if worker is None or ctx.state.job_of_worker(job_id, worker) is None:
            raise RequestRejected("no such job for this worker")
    else:
        job = _job(ctx, s, msg)
        worker = get(msg, "worker", str, optional=True)
        if event is Event.WORKER_DROPPED and worker:
            ctx.state.dropped(job.id, worker)       # the boss will not be offered it again
    detail = get(msg, "detail", str, optional=True)
    frames = optional_number(msg, "frames", int, 0, MAX_FRAMES)
    seconds = optional_number(msg, "seconds", float, 0, MAX_SECONDS)
    if event is Event.CHUNK_DONE and s.role is not Role.WORKER:    # progress as the boss counts it
        ctx.state.chunk_done(job_id, worker, frames, seconds)
    ctx.audit.record(event, peer=s.peer, user=s.user, by=_v(s.role), job=job_id,
                     chunk=optional_number(msg, "chunk", int, 0, MAX_CHUNK_INDEX),
                     worker=worker[:200] if worker else None,
                     detail=detail[:MAX_REASON] if detail else None,
                     frames=frames, seconds=seconds)
    return Msg.OK, {}


def handle_job_end(ctx: TrackerContext, s: Session, msg: dict) -> Reply:
    _need(s, Role.BOSS)
    job = _job(ctx, s, msg)
    status = get(msg, "status", str)[:20]
    detail = get(msg, "detail", str, optional=True)
    ctx.audit.record(Event.JOB_FINISHED, peer=s.peer, user=s.user, job=job.id, status=status,
                     detail=detail[:MAX_REASON] if detail else None,
                     chunks=optional_number(msg, "chunks", int, 0, MAX_CHUNK_INDEX),
                     frames=optional_number(msg, "frames", int, 0, MAX_FRAMES),
                     seconds=optional_number(msg, "seconds", float, 0, MAX_SECONDS))
    ctx.state.end_job(job.id)
    return Msg.OK, {}


def handle_status(ctx: TrackerContext, s: Session, msg: dict) -> Reply:
    """The farm as the tracker sees it, for an admin (`tracker.py status`, section 6.4)."""
    if s.role is not Role.ADMIN:
        raise RequestRejected("only an admin may do this")
    return Msg.FARM, farm.snapshot(ctx.state, MAX_FRAME - 4096)     # one reply fits a frame


def _need(s: Session, role: Role) -> None:
    if s.role is not role and s.role is not Role.ADMIN:
        raise RequestRejected(f"only a {role.value} may do this")


def _job(ctx: TrackerContext, s: Session, msg: dict):
    job = ctx.state.job(get(msg, "job", str)[:40], s.user or "")
    if job is None:
        raise RequestRejected("no such job for this boss")
    return job


def _v(role: Role | None) -> str | None:
    return role.value if role else None


HANDLERS: dict[Msg, Callable[[TrackerContext, Session, dict], Reply]] = {
    Msg.AUTH_START: handle_auth_start,
    Msg.AUTH_FINISH: handle_auth_finish,
    Msg.REGISTER: handle_register,
    Msg.HEARTBEAT: handle_heartbeat,
    Msg.JOB_START: handle_job_start,
    Msg.WORKERS: handle_workers,
    Msg.EVENT: handle_event,
    Msg.JOB_END: handle_job_end,
    Msg.STATUS: handle_status,
    Msg.PING: lambda ctx, s, msg: (Msg.PONG, {}),
}
NO_AUTH_NEEDED = {Msg.AUTH_START, Msg.AUTH_FINISH, Msg.PING}
MAX_CONNECTIONS = 4096          # each is a thread; a farm of a few thousand workers fits
MAX_OTHERS_PER_ADDRESS = 64     # connections from one address that are not registered workers
LISTEN_BACKLOG = 1024           # a farm's workers all logging in again after a tracker restart
IDLE_LIMIT = 30 * 60.0          # a logged-in connection that is not a worker and only pings, closed


# ---------------------------------------------------------------- server

class TrackerHandler(socketserver.BaseRequestHandler):
    server: TrackerServer

    def setup(self) -> None:
        self.accepted = self.request              # the socket as accepted, before TLS wraps it
        self.request.settimeout(HANDSHAKE_TIMEOUT)
        self.tls_failed: str | None = None
        if self.server.ctx.tls is not None:
            try:
                self.request = wrap_server(self.request, self.server.ctx.tls)
            except (ssl.SSLError, OSError) as exc:
                self.tls_failed = str(getattr(exc, "reason", None) or exc)
        self.server.track(self.request, add=True)
        self.deadline = Deadline(self.request, HANDSHAKE_TIMEOUT)   # hello and login, in all

    def finish(self) -> None:
        self.deadline.met()
        self.server.track(self.request, add=False)

    def handle(self) -> None:
        if self.server.stopping.is_set():
            return
        ctx = self.server.ctx
        s = Session(peer="%s:%d" % self.client_address[:2], address=str(self.client_address[0]))
        if self.tls_failed:
            ctx.audit.record(Event.PROTOCOL_ERROR, peer=s.peer, reason=f"TLS handshake failed: {self.tls_failed}"[:200])
            return
        try:
            try:
                s.claimed_role, s.name = server_hello(self.request, "tracker",
                                                      {Role.BOSS, Role.WORKER, Role.ADMIN})
                self._serve(ctx, s)
            finally:
                if s.worker and ctx.state.drop(s.worker, s.conn_id):
                    ctx.audit.record(Event.WORKER_LOST, peer=s.peer, user=s.user, worker=s.worker,
                                     reason="disconnected")
        except ConnectionClosed:
            pass
        except AuthError as exc:
            log.info("%s: %s", s.peer, exc)
        except ProtocolError as exc:
            ctx.audit.record(Event.PROTOCOL_ERROR, peer=s.peer, user=s.user, reason=str(exc)[:200])

    def _serve(self, ctx: TrackerContext, s: Session) -> None:
        sock = self.request
        active = time.monotonic()
        while True:
            msg = recv_msg_or_reject(sock)
            if msg is None:
                continue
            kind = msg["type"]
            if kind is not Msg.PING:
                active = time.monotonic()
            elif s.worker is None and time.monotonic() - active > IDLE_LIMIT:
                ctx.audit.record(Event.PROTOCOL_ERROR, peer=s.peer, user=s.user,
                                 reason=f"idle for {IDLE_LIMIT:.0f}s: closed")
                return
            handler = HANDLERS.get(kind)
            if handler is None:
                send_msg(sock, Msg.ERROR, reason="unexpected message", in_reply_to=kind.value)
                continue
            if kind not in NO_AUTH_NEEDED and s.user is None:
                send_msg(sock, Msg.ERROR, reason="authenticate first", in_reply_to=kind.value)
                continue
            try:
                reply_kind, reply = handler(ctx, s, msg)
            except (AuthError, ProtocolError) as exc:
                send_msg(sock, Msg.ERROR, reason=str(exc), in_reply_to=kind.value)
                raise                  # a failed login or a malformed request ends the connection
            except RequestRejected as exc:
                reply_kind, reply = Msg.ERROR, {"reason": str(exc), "in_reply_to": kind.value}
            send_msg(sock, reply_kind, **reply)
            if kind is Msg.REGISTER and s.worker is not None:
                self.server.registered(self.accepted, self.client_address[0])
            if s.user is not None and sock.gettimeout() == HANDSHAKE_TIMEOUT:
                self.deadline.met()
                # logged in: a worker's heartbeat or a boss's next event may take a while
                sock.settimeout(max(IO_TIMEOUT, ctx.ttl * 2))



class TrackerServer(socketserver.ThreadingMixIn, socketserver.TCPServer):
    allow_reuse_address = True
    daemon_threads = True
    block_on_close = False
    request_queue_size = LISTEN_BACKLOG

    def __init__(self, addr: tuple[str, int], ctx: TrackerContext) -> None:
        self.ctx = ctx
        self.stopping = threading.Event()
        self._conns: set[socket.socket] = set()
        self._conns_lock = threading.Lock()
        self._others: dict[str, set[int]] = {}      # address -> accepted sockets not (yet) registered workers
        super().__init__(addr, TrackerHandler)
        self._sweeper = threading.Thread(target=self._sweep, name="sweeper", daemon=True)
        self._sweeper.start()

    def track(self, sock: socket.socket, *, add: bool) -> None:
        with self._conns_lock:
            (self._conns.add if add else self._conns.discard)(sock)

    def registered(self, sock: Any, address: str) -> None:
        """A registered worker no longer counts against its address's MAX_OTHERS_PER_ADDRESS."""
        with self._conns_lock:
            self._others.get(address, set()).discard(id(sock))

    def shutdown_request(self, request: Any) -> None:
        with self._conns_lock:
            for address, ids in list(self._others.items()):
                ids.discard(id(request))
                if not ids:
                    del self._others[address]
        super().shutdown_request(request)

    def _sweep(self) -> None:
        """Drop workers that missed their heartbeats."""
        while not self.stopping.wait(HEARTBEAT_INTERVAL / 2):
            for w in self.ctx.state.expire(self.ctx.ttl):
                self.ctx.audit.record(Event.WORKER_LOST, worker=w.name, user=w.user, reason="missed heartbeats")

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.exception("unexpected error serving %s", client_address)

    def verify_request(self, request: Any, client_address: Any) -> bool:
        """Refuse connections beyond MAX_CONNECTIONS (each costs a thread), and beyond
        MAX_OTHERS_PER_ADDRESS from one address that are not registered workers (logged-in idle
        connections from one place must not lock everyone else out)."""
        with self._conns_lock:
            others = self._others.setdefault(str(client_address[0]), set())
            if len(self._conns) >= MAX_CONNECTIONS or len(others) >= MAX_OTHERS_PER_ADDRESS:
                return False
            others.add(id(request))
            return True

    def stop(self) -> None:
        """Stop accepting, unblock every handler's recv, close the listening socket."""
        self.stopping.set()
        self.shutdown()
        with self._conns_lock:
            for conn in self._conns:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
        self.server_close()

