"""Typed calls to the tracker over one authenticated connection (common/PROTOCOL.md, "Tracker").

Thread-safe: one request/reply at a time. A broken connection is re-opened (and the login redone)
on the next call.
"""
from __future__ import annotations

import logging
import random
import socket
import ssl
import threading
from typing import Any, Callable

from ffdt.common import auth
from ffdt.common.config import (CONNECT_DEADLINE, HEARTBEAT_INTERVAL, RECONNECT_BACKOFF_CAP, RECONNECT_BACKOFF_FIRST,
                                REREGISTER_SPREAD)
from ffdt.common.errors import (AuthError, ConnectionClosed, PeerUnreachable, ProtocolError, RequestRejected,
                                TranscoderError)
from ffdt.common.net import Backoff, connect
from ffdt.common.protocol import Msg, Role, client_hello, field, request
from ffdt.common.settings import Settings
from ffdt.common.tls import KnownTrackers, peer_fingerprint

log = logging.getLogger(__name__)


class TrackerClient:
    def __init__(self, addr: tuple[str, int], user: str, password: str, role: Role,
                 *, deadline: float = CONNECT_DEADLINE, tls: ssl.SSLContext | None = None,
                 pin: str | None = None, known: KnownTrackers | None = None) -> None:
        """tls: None for plain TCP. pin: the tracker's key fingerprint; without one, `known`
        (trust on first use) gives it, or learns it at the first connection."""
        self.addr, self.user, self.role, self.tls = addr, user, role, tls
        self.pin, self.known = pin, known
        self._password = password
        self._deadline = deadline
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        self.login: auth.Login | None = None

    @property
    def where(self) -> str:
        return f"{self.addr[0]}:{self.addr[1]}"

    def connect(self) -> auth.Login:
        """Connect and log in (again); AuthError on bad credentials, PeerUnreachable if down."""
        with self._lock:
            return self._connect()

    def _connect(self) -> auth.Login:
        self._close()
        pin = self.pin or (self.known.get(self.where) if self.known else None)
        try:
            sock = connect(self.addr, deadline=self._deadline, tls=self.tls, pin=pin)
        except PeerUnreachable as exc:
            raise PeerUnreachable(f"tracker {self.where} unreachable: {exc}") from None
        if self.tls is not None and pin is None and self.known is not None:
            self.pin = peer_fingerprint(sock)        # type: ignore[arg-type]
            self.known.remember(self.where, self.pin)
            log.warning("trusting tracker %s on first use: its key is %s (remembered in %s; "
                        "--tracker-fingerprint pins it)", self.where, self.pin, self.known.path)
        try:
            client_hello(sock, self.role, self.user)
            self.login = auth.login(sock, self.user, self._password)
        except BaseException:
            sock.close()
            raise
        self._sock = sock
        return self.login

    def call(self, kind: Msg, reply: Msg, *, reopen: bool = True, **fields: Any) -> dict[str, Any]:
        """One request; a lost connection is re-opened once before giving up (reopen=False: not
        at all, ConnectionClosed at once)."""
        with self._lock:
            for attempt in (1, 2):
                if self._sock is None:
                    if not reopen:
                        raise ConnectionClosed("not connected to the tracker")
                    self._connect()
                assert self._sock is not None
                try:
                    return request(self._sock, kind, reply, **fields)
                except (ConnectionClosed, ProtocolError):
                    self._close()
                    if attempt == 2 or not reopen:
                        raise
            raise AssertionError("unreachable")

    def close(self) -> None:
        with self._lock:
            self._close()

    def _close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    # ------------------------------------------------------------ typed calls

    def register(self, host: str, msg_port: int, file_port: int, slots: int, ffmpeg: str,
                 encoders: list[str], tls: bool = False, fingerprint: str | None = None) -> dict[str, Any]:
        return self.call(Msg.REGISTER, Msg.REGISTERED, host=host, msg_port=msg_port, file_port=file_port,
                          slots=slots, ffmpeg=ffmpeg, encoders=encoders, tls=tls, fingerprint=fingerprint)

    def heartbeat(self, busy: int) -> None:
        """Never logs in again: a lost connection means the tracker restarted and forgot this
        worker, so registering again follows (one login, not two), as keep_registered does."""
        self.call(Msg.HEARTBEAT, Msg.OK, reopen=False, busy=busy)

    def job_start(self, input_name: str, settings: Settings, chunks: int | None = None,
                  frames: int | None = None) -> str:
        reply = self.call(Msg.JOB_START, Msg.JOB, input=input_name, settings=settings.to_wire(), chunks=chunks,
                          frames=frames)
        return field(reply, "job", str)

    def status(self) -> dict[str, Any]:
        """The farm: live workers and running jobs (admin only; PROTOCOL.md section 6.4)."""
        reply = self.call(Msg.STATUS, Msg.FARM)
        return {"workers": [w for w in field(reply, "workers", list) if isinstance(w, dict)],
                "jobs": [j for j in field(reply, "jobs", list) if isinstance(j, dict)],
                "more": reply.get("more", 0)}

    def workers(self, job: str, count: int, encoder: str, exclude: list[str]) -> list[dict[str, Any]]:
        reply = self.call(Msg.WORKERS, Msg.WORKER_LIST, job=job, count=count, encoder=encoder, exclude=exclude)
        return [w for w in field(reply, "workers", list) if isinstance(w, dict)]

    def event(self, job: str, event: str, **fields: Any) -> None:
        self.call(Msg.EVENT, Msg.OK, job=job, event=event, **fields)

    def job_end(self, job: str, status: str, **fields: Any) -> None:
        self.call(Msg.JOB_END, Msg.OK, job=job, status=status, **fields)


def keep_registered(beat: Callable[[], None], register: Callable[[], None], stopping: threading.Event,
                    logger: logging.Logger = log, spread: float = REREGISTER_SPREAD) -> None:
    """A worker's life with the tracker: `beat` every HEARTBEAT_INTERVAL; once a beat fails (the
    tracker restarted, or forgot this worker), wait a random time of up to `spread` seconds,
    then `register` again and again with jittered backoff until it works, and beat on; until
    `stopping` is set. The random wait is for a farm: its workers see a restart within one beat
    of each other, and a thousand logins at once queued for 2 s at the tracker (p99), where
    spread over 10 s they do not (scripts/tracker-load --restart runs this loop to measure it)."""
    backoff = Backoff(RECONNECT_BACKOFF_FIRST, RECONNECT_BACKOFF_CAP)
    while not stopping.wait(HEARTBEAT_INTERVAL):
        try:
            beat()
            backoff.reset()
            continue
        except RequestRejected:
            logger.info("tracker forgot this worker; registering again")
        except (ConnectionClosed, ProtocolError, PeerUnreachable) as exc:
            logger.warning("tracker connection lost (%s); reconnecting", exc)
        if stopping.wait(random.uniform(0.0, spread)):
            return
        while not stopping.is_set():
            try:
                register()
                break
            except AuthError as exc:
                logger.error("tracker refused us: %s", exc)
            except TranscoderError as exc:
                logger.debug("still no tracker: %s", exc)
            if stopping.wait(backoff.next()):
                return
