"""Wire protocol shared by tracker, boss and worker (spec: common/PROTOCOL.md).

Every control message is one frame: a 4-byte big-endian length, then a UTF-8 JSON object with a
`type` key. Nothing else in the code base reads control messages off a socket.
"""
from __future__ import annotations

import enum
import functools
import json
import math
import socket
import struct
from typing import Any, Callable, TypeVar

from ffdt.common.config import MAX_FRAME
from ffdt.common.errors import ConnectionClosed, ProtocolError, RequestRejected

PROTOCOL_VERSION = 1
HEADER = struct.Struct("!I")

T = TypeVar("T")


class Role(str, enum.Enum):
    BOSS = "boss"
    WORKER = "worker"
    ADMIN = "admin"


class Msg(str, enum.Enum):
    # any connection
    HELLO = "hello"                    # both ways, first frame    {version, role, name}
    ERROR = "error"                    # reply to anything         {reason, in_reply_to}
    OK = "ok"                          # plain acknowledgement     {}
    PING = "ping"                      # any -> server             {}
    PONG = "pong"                      # reply to ping             {}
    # client <-> tracker: SCRAM-SHA-256 login
    AUTH_START = "auth_start"          # client -> tracker         {user, data}
    AUTH_CHALLENGE = "auth_challenge"  # tracker -> client         {data}
    AUTH_FINISH = "auth_finish"        # client -> tracker         {data}
    AUTH_OK = "auth_ok"                # tracker -> client         {data, role}
    # worker <-> tracker
    REGISTER = "register"              # worker -> tracker         {host, msg_port, file_port, slots, ffmpeg, encoders}
    REGISTERED = "registered"          # tracker -> worker         {worker, ticket_salt, heartbeat}
    HEARTBEAT = "heartbeat"            # worker -> tracker         {busy}
    # boss <-> tracker
    JOB_START = "job_start"            # boss -> tracker           {input, output, settings}
    JOB = "job"                        # tracker -> boss           {job}
    WORKERS = "workers"                # boss -> tracker           {job, count, encoder, exclude}
    WORKER_LIST = "worker_list"        # tracker -> boss           {workers: [...]}
    EVENT = "event"                    # boss|worker -> tracker    {job, event, chunk, worker, detail}
    JOB_END = "job_end"                # boss -> tracker           {job, status, detail}
    # admin <-> tracker
    STATUS = "status"                  # admin -> tracker          {}
    FARM = "farm"                      # tracker -> admin          {workers: [...], jobs: [...]}
    # boss <-> worker, message port
    SESSION = "session"                # boss -> worker            {ticket, settings}
    SESSION_OK = "session_ok"          # worker -> boss            {session, key, slots}
    REQUEST = "request"                # worker -> boss            {count}
    ASSIGN = "assign"                  # boss -> worker            {chunk, size, sha256, frames}
    WAIT = "wait"                      # boss -> worker            {retry_after}
    PROGRESS = "progress"              # worker -> boss            {chunk, frames}
    SAMPLE = "sample"                  # worker -> boss            {chunk, size, sha256}
    DONE = "done"                      # worker -> boss            {chunk, size, sha256, frames}
    FAILED = "failed"                  # worker -> boss            {chunk, reason}
    COLLECTED = "collected"            # boss -> worker            {chunk}
    CANCEL = "cancel"                  # boss -> worker            {chunk}
    END = "end"                        # boss -> worker            {}
    BYE = "bye"                        # worker -> boss            {}
    # boss <-> worker, file port
    PUT = "put"                        # boss -> worker            {session, key, chunk, size, sha256} + bytes
    GET = "get"                        # boss -> worker            {session, key, chunk, sample?}
    FILE = "file"                      # worker -> boss            {size, sha256} + bytes


def encode_frame(kind: Msg, **fields: Any) -> bytes:
    """One frame: header and body, ready for a single sendall."""
    body = json.dumps({"type": kind.value, **fields}, separators=(",", ":")).encode()
    if len(body) > MAX_FRAME:
        raise ProtocolError(f"{kind.value} message too large ({len(body)} bytes)")
    return HEADER.pack(len(body)) + body


def send_msg(sock: socket.socket, kind: Msg, **fields: Any) -> None:
    """Send one message; header and body go in one write (no Nagle delay between them)."""
    frame = encode_frame(kind, **fields)
    try:
        sock.sendall(frame)
    except socket.timeout as exc:
        raise ConnectionClosed(f"peer stopped reading ({kind.value} not sent)") from exc
    except OSError as exc:
        raise ConnectionClosed(f"connection lost while sending {kind.value}: {exc}") from exc


def recv_exact(sock: socket.socket, n: int, *, at_boundary: bool = False) -> bytes:
    """Exactly `n` bytes, or ConnectionClosed (EOF between frames) / ProtocolError (EOF inside one)."""
    buf = bytearray()
    while len(buf) < n:
        try:
            part = sock.recv(n - len(buf))
        except socket.timeout as exc:
            raise ConnectionClosed(f"peer silent for {sock.gettimeout():g}s") from exc
        except OSError as exc:
            raise ConnectionClosed(f"connection lost: {exc}") from exc
        if not part:
            if at_boundary and not buf:
                raise ConnectionClosed("peer closed the connection")
            raise ProtocolError(f"peer closed mid-frame after {len(buf)}/{n} bytes")
        buf += part
    return bytes(buf)


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")      # NaN, Infinity: Python accepts them, JSON does not


def recv_msg(sock: socket.socket) -> dict[str, Any]:
    """Read one message. `msg["type"]` is a Msg; the size is checked before the body is read."""
    (length,) = HEADER.unpack(recv_exact(sock, HEADER.size, at_boundary=True))
    if length > MAX_FRAME:
        raise ProtocolError(f"frame of {length} bytes exceeds limit {MAX_FRAME}")
    body = recv_exact(sock, length)
    try:
        msg = json.loads(body, parse_constant=_no_constants)
    except (ValueError, RecursionError) as exc:      # RecursionError: absurdly nested JSON
        raise ProtocolError(f"malformed message: {exc}") from exc
    if not isinstance(msg, dict) or not isinstance(msg.get("type"), str):
        raise ProtocolError("malformed message: not an object with a type")
    try:
        msg["type"] = Msg(msg["type"])
    except ValueError:
        raise UnknownMessage(msg["type"][:40]) from None
    return msg


class UnknownMessage(RequestRejected):
    """A well-formed frame of a type we do not know: answered with `error`, the connection stays."""

    def __init__(self, kind: str) -> None:
        super().__init__(f"unknown message type {kind!r}")
        self.kind = kind


def recv_msg_or_reject(sock: socket.socket, send: Callable[..., None] | None = None) -> dict[str, Any] | None:
    """recv_msg, answering a message of an unknown type with `error` (and returning None) instead
    of dropping the peer: a newer peer may speak a type we do not know. `send(kind, **fields)`
    replaces send_msg where other threads write to the same socket under a lock."""
    try:
        return recv_msg(sock)
    except UnknownMessage as exc:
        (send or functools.partial(send_msg, sock))(Msg.ERROR, reason=str(exc), in_reply_to=exc.kind)
        return None


def field(msg: dict[str, Any], key: str, kind: type[T], *, optional: bool = False,
          default: T | None = None) -> T:
    """A field of the expected type, or ProtocolError; handlers can trust what this returns."""
    if key not in msg or msg[key] is None:
        if optional:
            return default  # type: ignore[return-value]
        raise ProtocolError(f"{msg['type'].value}: missing field {key!r}")
    value = msg[key]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)  # type: ignore[return-value]   # JSON does not tell 2 from 2.0
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ProtocolError(f"{msg['type'].value}: field {key!r} must be {kind.__name__}")
    return value


def int_field(msg: dict[str, Any], key: str, lo: int, hi: int) -> int:
    """An integer field within [lo, hi]."""
    value = field(msg, key, int)
    if not lo <= value <= hi:
        raise ProtocolError(f"{msg['type'].value}: field {key!r} out of range [{lo}, {hi}]")
    return value


def optional_number(msg: dict[str, Any], key: str, kind: type[T], lo: float, hi: float) -> T | None:
    """An optional int or float field within [lo, hi] (JSON's 1e999 parses as infinity: refused)."""
    if msg.get(key) is None:
        return None
    value = field(msg, key, kind)
    if not (math.isfinite(value) and lo <= value <= hi):  # type: ignore[arg-type]
        raise ProtocolError(f"{msg['type'].value}: field {key!r} out of range [{lo:g}, {hi:g}]")
    return value


def expect(sock: socket.socket, *kinds: Msg) -> dict[str, Any]:
    """Receive the next message and insist on its type; an ERROR reply becomes RequestRejected."""
    msg = recv_msg(sock)
    if msg["type"] is Msg.ERROR and Msg.ERROR not in kinds:
        raise RequestRejected(str(msg.get("reason", "unspecified error"))[:500])
    if msg["type"] not in kinds:
        wanted = " or ".join(k.value for k in kinds)
        raise ProtocolError(f"expected {wanted}, got {msg['type'].value}")
    return msg


def request(sock: socket.socket, kind: Msg, reply: Msg, **fields: Any) -> dict[str, Any]:
    """Send a message and wait for its reply of type `reply`."""
    send_msg(sock, kind, **fields)
    return expect(sock, reply)


def client_hello(sock: socket.socket, role: Role, name: str) -> dict[str, Any]:
    """Open a connection: say hello with our version, check the server's hello."""
    send_msg(sock, Msg.HELLO, version=PROTOCOL_VERSION, role=role.value, name=name)
    reply = expect(sock, Msg.HELLO)
    if reply.get("version") != PROTOCOL_VERSION:
        raise ProtocolError(f"peer speaks protocol version {reply.get('version')!r}, we speak {PROTOCOL_VERSION}")
    return reply


def server_hello(sock: socket.socket, me: str, accept: set[Role]) -> tuple[Role, str]:
    """Answer a client's hello as `me` ("tracker", "worker"). Returns the client's role and name;
    refuses other protocol versions and roles this server does not serve."""
    msg = recv_msg(sock)
    if msg["type"] is not Msg.HELLO:
        send_msg(sock, Msg.ERROR, reason="say hello first", in_reply_to=msg["type"].value)
        raise ProtocolError(f"expected hello, got {msg['type'].value}")
    version = msg.get("version")
    if version != PROTOCOL_VERSION:
        send_msg(sock, Msg.ERROR, in_reply_to="hello",
                 reason=f"protocol version {version!r} not supported; this {me} speaks {PROTOCOL_VERSION}")
        raise ProtocolError(f"peer speaks protocol version {version!r}")
    role, name = msg.get("role"), msg.get("name")
    peer_role = Role(role) if isinstance(role, str) and role in {r.value for r in Role} else None
    if peer_role not in accept or not isinstance(name, str):
        reason = (f"this {me} does not serve role {str(role)[:20]!r}" if peer_role not in accept
                  else "hello needs a name")
        send_msg(sock, Msg.ERROR, reason=reason, in_reply_to="hello")
        raise ProtocolError(reason)
    send_msg(sock, Msg.HELLO, version=PROTOCOL_VERSION, role=me, name=me)
    return peer_role, name[:200]
