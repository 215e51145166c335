"""Connecting to peers: bounded attempts with jittered backoff until a deadline."""
from __future__ import annotations

import contextlib
import random
import socket
import ssl
import threading
import time

from common.config import CONNECT_DEADLINE, CONNECT_TIMEOUT, IO_TIMEOUT
from common.errors import PeerUnreachable, UsageError


def parse_host_port(text: str, default_port: int | None = None) -> tuple[str, int]:
    """'host:port' (or '[v6]:port') -> (host, port); a clear UsageError otherwise."""
    host, sep, port = text.rpartition(":")
    if not sep:
        if default_port is None:
            raise UsageError(f"expected HOST:PORT, got {text!r}")
        host, port = text, str(default_port)
    host = host.strip("[]")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"expected HOST:PORT, got {text!r}")
    return host, int(port)


class Deadline:
    """Shut a socket down unless `met()` is called within `seconds`: a per-read timeout alone lets
    a peer that dribbles a byte now and then hold a thread forever."""

    def __init__(self, sock: socket.socket, seconds: float) -> None:
        self._timer = threading.Timer(seconds, self._expire, args=(sock,))
        self._timer.daemon = True
        self._timer.start()

    @staticmethod
    def _expire(sock: socket.socket) -> None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)

    def met(self) -> None:
        self._timer.cancel()


def enable_keepalive(sock: socket.socket, idle: int = 30, interval: int = 10, count: int = 3) -> None:
    """Let the kernel probe a quiet peer, so one that vanished (power cut, cable) is noticed in
    about idle + interval * count seconds even while we have nothing to send."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for name, value in (("TCP_KEEPIDLE", idle), ("TCP_KEEPINTVL", interval), ("TCP_KEEPCNT", count)):
        if hasattr(socket, name):              # Linux names; other systems keep their defaults
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, name), value)


def connect(addr: tuple[str, int], *, deadline: float = CONNECT_DEADLINE,
            io_timeout: float = IO_TIMEOUT, tls: ssl.SSLContext | None = None) -> socket.socket:
    """A connected socket with `io_timeout` set (TLS over it if `tls`), or PeerUnreachable once
    `deadline` has passed."""
    give_up_at = time.monotonic() + deadline
    delay = 0.1
    while True:
        try:
            sock = socket.create_connection(addr, timeout=min(CONNECT_TIMEOUT, max(deadline, 0.1)))
        except OSError as exc:
            if time.monotonic() + delay > give_up_at:
                raise PeerUnreachable(f"cannot reach {addr[0]}:{addr[1]}: {exc.strerror or exc}") from exc
            time.sleep(random.uniform(delay / 2, delay))   # retry backoff, not synchronisation
            delay = min(delay * 2, 2.0)
            continue
        sock.settimeout(io_timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if tls is not None:
            from common.tls import wrap_client
            return wrap_client(sock, tls, addr[0])
        return sock
