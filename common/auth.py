"""Client side of the tracker login (SCRAM-SHA-256, RFC 7677) and the worker tickets.

The password never leaves this process: the tracker sees a proof, and proves back that it holds
the user's ServerKey. Both sides can derive ticket keys from that ServerKey, so no ticket
secret ever crosses the wire either.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import socket
import time
from dataclasses import dataclass
from typing import Any

import scramp
from scramp.utils import saslprep

from ffdt.common.config import SCRAM_MECHANISM, TICKET_CLOCK_SKEW
from ffdt.common.errors import AuthError, ProtocolError, RequestRejected
from ffdt.common.protocol import Msg, field, request


MIN_ITERATIONS, MAX_ITERATIONS = 4096, 10_000_000


@dataclass(frozen=True)
class Login:
    user: str
    role: str
    server_key: bytes      # SCRAM ServerKey: the tracker has it too; keys this user's tickets


def login(sock: socket.socket, user: str, password: str) -> Login:
    """Authenticate on an open tracker connection. AuthError on a wrong password or a false server."""
    client = scramp.ScramClient([SCRAM_MECHANISM], user, password)
    try:
        challenge = request(sock, Msg.AUTH_START, Msg.AUTH_CHALLENGE, user=user, data=client.get_client_first())
        server_first = field(challenge, "data", str)
        salt, iterations = _salt_and_iterations(server_first)
        if not MIN_ITERATIONS <= iterations <= MAX_ITERATIONS:   # a false tracker could ask for years of work
            raise AuthError(f"the tracker asks for {iterations} SCRAM iterations; refusing")
        client.set_server_first(server_first)
        ok = request(sock, Msg.AUTH_FINISH, Msg.AUTH_OK, data=client.get_client_final())
        client.set_server_final(field(ok, "data", str))   # mutual: the tracker knew our ServerKey
    except RequestRejected as exc:
        raise AuthError(f"login as {user!r} refused: {exc}") from None
    except scramp.ScramException as exc:
        raise AuthError(f"login as {user!r} failed: the tracker could not prove it knows this user") from exc
    # SCRAM normalises the password with SASLprep before hashing (RFC 5802 2.2); so must we
    salted = hashlib.pbkdf2_hmac("sha256", saslprep(password).encode(), salt, iterations)
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    return Login(user, field(ok, "role", str), server_key)


def _salt_and_iterations(server_first: str) -> tuple[bytes, int]:
    parts = dict(p.split("=", 1) for p in server_first.split(",") if "=" in p)
    try:
        return base64.b64decode(parts["s"]), int(parts["i"])
    except (KeyError, ValueError) as exc:
        raise ProtocolError("malformed SCRAM server-first message") from exc


# ---------------------------------------------------------------- tickets

def ticket_key(server_key: bytes, salt: str) -> bytes:
    """The key a worker checks tickets with; `salt` is fresh for each registration."""
    return hmac.new(server_key, b"ffdt-ticket:" + salt.encode(), hashlib.sha256).digest()


def _ticket_mac(key: bytes, boss: str, job: str, worker: str, expires: int) -> str:
    message = "\n".join(("ffdt-ticket-v1", boss, job, worker, str(expires))).encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def make_ticket(key: bytes, boss: str, job: str, worker: str, expires: int) -> dict[str, Any]:
    return {"boss": boss, "job": job, "worker": worker, "expires": expires,
            "mac": _ticket_mac(key, boss, job, worker, expires)}


def check_ticket(key: bytes, ticket: object, worker: str, now: float | None = None) -> tuple[str, str]:
    """Verify a ticket offline; returns (boss, job). AuthError if forged, expired or for another worker."""
    if not isinstance(ticket, dict):
        raise AuthError("no ticket")
    boss, job, name, expires, mac = (ticket.get(k) for k in ("boss", "job", "worker", "expires", "mac"))
    if not (isinstance(boss, str) and isinstance(job, str) and isinstance(name, str)
            and isinstance(expires, int) and isinstance(mac, str)):
        raise AuthError("malformed ticket")
    # compare bytes: compare_digest refuses str with non-ASCII characters, and mac is the peer's
    if not hmac.compare_digest(_ticket_mac(key, boss, job, name, expires).encode(), mac.encode()):
        raise AuthError("ticket signature invalid")
    if name != worker:
        raise AuthError("ticket is for another worker")
    if (now if now is not None else time.time()) > expires + TICKET_CLOCK_SKEW:
        raise AuthError("ticket expired")
    return boss, job
