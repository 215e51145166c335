"""Client side of the tracker login (SCRAM-SHA-256, RFC 7677) and the worker tickets.

The password never leaves this process: the tracker sees a proof, and proves back that it holds
the user's ServerKey. Both sides can derive ticket keys from that ServerKey, so no ticket
secret ever crosses the wire either.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import socket
import time
from dataclasses import dataclass
from typing import Any

import stringprep
import unicodedata

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
    """Authenticate on an open tracker connection. AuthError on a wrong password or a false server,
    ProtocolError for a malformed exchange.

    The client's side of SCRAM-SHA-256 (RFC 5802, 7677; no channel binding: the TLS under it is
    pinned instead) is written out here, SASLprep included; the tracker's is scramp's. scramp's
    client derives the salted password inside and keeps it, and the ticket keys need the
    ServerKey made from it, so with it the 200,000 PBKDF2 iterations ran twice a login (65 ms of
    CPU each, 0.26 s of a quarter-core boss's start)."""
    try:
        # SCRAM normalises names and passwords with SASLprep before use (RFC 5802 2.2)
        name, secret = saslprep(user), saslprep(password).encode()
    except ValueError as exc:
        raise AuthError(f"login as {user!r}: the name or the password cannot be used ({exc})") from None
    nonce = secrets.token_urlsafe(24)          # printable ASCII, no comma
    first_bare = f"n={name.replace('=', '=3D').replace(',', '=2C')},r={nonce}"
    try:
        challenge = request(sock, Msg.AUTH_START, Msg.AUTH_CHALLENGE, user=user, data="n,," + first_bare)
        server_first = field(challenge, "data", str)
        server_nonce, salt, iterations = _server_first(server_first, nonce)
        if not MIN_ITERATIONS <= iterations <= MAX_ITERATIONS:   # a false tracker could ask for years of work
            raise AuthError(f"the tracker asks for {iterations} SCRAM iterations; refusing")
        salted = hashlib.pbkdf2_hmac("sha256", secret, salt, iterations)
        client_key = _hmac(salted, b"Client Key")
        final_bare = f"c=biws,r={server_nonce}"          # biws: "n,,", the header above
        auth_message = f"{first_bare},{server_first},{final_bare}".encode()
        signature = _hmac(hashlib.sha256(client_key).digest(), auth_message)
        proof = bytes(a ^ b for a, b in zip(client_key, signature))
        ok = request(sock, Msg.AUTH_FINISH, Msg.AUTH_OK, data=f"{final_bare},p={base64.b64encode(proof).decode()}")
    except RequestRejected as exc:
        raise AuthError(f"login as {user!r} refused: {exc}") from None
    server_key = _hmac(salted, b"Server Key")
    # mutual: only a tracker that holds this user's ServerKey can sign the exchange
    verifier = "v=" + base64.b64encode(_hmac(server_key, auth_message)).decode()
    if not hmac.compare_digest(field(ok, "data", str).encode(), verifier.encode()):
        raise AuthError(f"login as {user!r} failed: the tracker could not prove it knows this user")
    return Login(user, field(ok, "role", str), server_key)


_PROHIBITED = ((stringprep.in_table_a1, "an unassigned code point"), (stringprep.in_table_c21_c22, "a control character"),
               (stringprep.in_table_c3, "a private use character"), (stringprep.in_table_c4, "a non-character"),
               (stringprep.in_table_c5, "a surrogate"), (stringprep.in_table_c6, "a non-plain-text character"),
               (stringprep.in_table_c7, "a non-canonical character"), (stringprep.in_table_c8, "a display property"),
               (stringprep.in_table_c9, "a tagging character"))


def saslprep(text: str) -> str:
    """SASLprep (RFC 4013, with stored strings' rules: no unassigned code point), as the tracker's
    scramp does it; here with the standard library, because importing scramp (and asn1crypto
    with it) took 45-90 ms of every boss's and worker's start. ValueError for a refused string."""
    mapped = "".join(" " if stringprep.in_table_c12(c) else c for c in text if not stringprep.in_table_b1(c))
    data = unicodedata.ucd_3_2_0.normalize("NFKC", mapped)
    if not data:
        return ""
    # right-to-left text (D.1) must start and end with it and hold no left-to-right (D.2) text
    if stringprep.in_table_d1(data[0]):
        if not stringprep.in_table_d1(data[-1]):
            raise ValueError("a right-to-left string must end with a right-to-left character")
        wrong_way = stringprep.in_table_d2
    else:
        wrong_way = stringprep.in_table_d1
    for c in data:
        for test, what in _PROHIBITED:
            if test(c):
                raise ValueError(f"it holds {what} (U+{ord(c):04X})")
        if wrong_way(c):
            raise ValueError(f"it mixes text directions (U+{ord(c):04X})")
    return data


def _hmac(key: bytes, message: bytes) -> bytes:
    return hmac.new(key, message, hashlib.sha256).digest()


def _server_first(message: str, nonce: str) -> tuple[str, bytes, int]:
    """The tracker's nonce (ours with its own appended), the salt and the iteration count."""
    parts = dict(p.split("=", 1) for p in message.split(",") if "=" in p)
    try:
        server_nonce, salt, iterations = parts["r"], base64.b64decode(parts["s"], validate=True), int(parts["i"])
    except (KeyError, ValueError) as exc:
        raise ProtocolError("malformed SCRAM server-first message") from exc
    if "m" in parts or not server_nonce.startswith(nonce) or len(server_nonce) == len(nonce):
        raise ProtocolError("malformed SCRAM server-first message")
    return server_nonce, salt, iterations


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
