"""Connecting to peers: bounded attempts with jittered backoff until a deadline."""
from __future__ import annotations

import contextlib
import heapq
import itertools
import random
import socket
import ssl
import threading
import time

from ffdt.common.config import (CONNECT_BACKOFF_CAP, CONNECT_BACKOFF_FIRST, CONNECT_DEADLINE, CONNECT_TIMEOUT,
                                IO_TIMEOUT)
from ffdt.common.errors import PeerUnreachable, UsageError


def parse_host_port(text: str, default_port: int | None = None, *, any_port: bool = False) -> tuple[str, int]:
    """'host:port' (or '[v6]:port') -> (host, port); a clear UsageError otherwise. any_port: an
    address to listen on, where port 0 means any free one."""
    host, sep, port = text.rpartition(":")
    if not sep:
        if default_port is None:
            raise UsageError(f"expected HOST:PORT, got {text!r}")
        host, port = text, str(default_port)
    host = host.strip("[]")
    if not host or not port.isdigit() or not (0 if any_port else 1) <= int(port) < 65536:
        raise UsageError(f"expected HOST:PORT, got {text!r}")
    return host, int(port)


class Backoff:
    """Jittered exponential backoff between retries: each delay is drawn from [d/2, d], and d
    doubles up to `cap`. For retrying a connection, never for waiting on something to happen."""

    def __init__(self, first: float, cap: float) -> None:
        self.first, self.cap = first, cap
        self._delay = first

    def next(self) -> float:
        """The delay before the next try."""
        delay = random.uniform(self._delay / 2, self._delay)
        self._delay = min(self._delay * 2, self.cap)
        return delay

    @property
    def ceiling(self) -> float:
        """The longest the next delay can be."""
        return self._delay

    def reset(self) -> None:
        self._delay = self.first


class Deadline:
    """Shut a socket down unless `met()` is called within `seconds`: a per-read timeout alone lets
    a peer that dribbles a byte now and then hold a thread forever."""

    def __init__(self, sock: socket.socket, seconds: float) -> None:
        self._sock: socket.socket | None = sock
        _WATCHDOG.watch(time.monotonic() + seconds, self)

    def expire(self) -> None:
        sock = self._sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def met(self) -> None:
        self._sock = None          # the watchdog keeps this object until its time, not the socket


class _Watchdog:
    """One thread for every Deadline of the process: a Timer each cost a thread per connection,
    and a thousand workers logging in at once made a thousand of them."""

    def __init__(self) -> None:
        self._due: list[tuple[float, int, Deadline]] = []
        self._wake = threading.Condition()
        self._count = itertools.count()
        self._thread: threading.Thread | None = None

    def watch(self, when: float, deadline: Deadline) -> None:
        with self._wake:
            heapq.heappush(self._due, (when, next(self._count), deadline))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="deadlines", daemon=True)
                self._thread.start()
            self._wake.notify()

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._due or self._due[0][0] > time.monotonic():
                    self._wake.wait(self._due[0][0] - time.monotonic() if self._due else None)
                _, _, deadline = heapq.heappop(self._due)
            deadline.expire()


_WATCHDOG = _Watchdog()


def enable_keepalive(sock: socket.socket, idle: int = 30, interval: int = 10, count: int = 3) -> None:
    """Let the kernel probe a quiet peer, so one that vanished (power cut, cable) is noticed in
    about idle + interval * count seconds even while we have nothing to send."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for name, value in (("TCP_KEEPIDLE", idle), ("TCP_KEEPINTVL", interval), ("TCP_KEEPCNT", count)):
        if hasattr(socket, name):              # Linux names; other systems keep their defaults
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, name), value)


def connect(addr: tuple[str, int], *, deadline: float = CONNECT_DEADLINE,
            io_timeout: float = IO_TIMEOUT, tls: ssl.SSLContext | None = None, pin: str | None = None
            ) -> socket.socket:
    """A connected socket with `io_timeout` set (TLS over it if `tls`; with `pin`, the peer's key
    must have that fingerprint), or PeerUnreachable once `deadline` has passed."""
    give_up_at = time.monotonic() + deadline
    backoff = Backoff(CONNECT_BACKOFF_FIRST, CONNECT_BACKOFF_CAP)
    while True:
        try:
            sock = socket.create_connection(addr, timeout=min(CONNECT_TIMEOUT, max(deadline, 0.1)))
        except OSError as exc:
            if time.monotonic() + backoff.ceiling > give_up_at:
                raise PeerUnreachable(f"cannot reach {addr[0]}:{addr[1]}: {exc.strerror or exc}") from exc
            time.sleep(backoff.next())   # retry backoff, not synchronisation
            continue
        sock.settimeout(io_timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if tls is not None:
            from ffdt.common.tls import wrap_client
            return wrap_client(sock, tls, addr[0], pin)
        return sock
