"""Framing, message decoding, field checks and the hello handshake (common/protocol.py)."""
from __future__ import annotations

import json
import socket
import struct
import threading
import time

import pytest

from ffdt.common.config import MAX_FRAME
from ffdt.common.errors import ConnectionClosed, ProtocolError, RequestRejected
from ffdt.common.protocol import (PROTOCOL_VERSION, Msg, Role, client_hello, encode_frame, expect, field,
                                  int_field, recv_msg, send_msg, server_hello)

try:
    import fcntl
    import termios
except ImportError:  # pragma: no cover - not on Linux/macOS
    fcntl = termios = None  # type: ignore[assignment]


def raw_frame(body: bytes, length: int | None = None) -> bytes:
    """A frame built by hand: a 4-byte big-endian length (default: the body's), then the body."""
    return struct.pack("!I", len(body) if length is None else length) + body


def unread_bytes(sock: socket.socket) -> int:
    """Bytes waiting in `sock`'s receive buffer."""
    buf = fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0\0\0\0")
    return struct.unpack("i", buf)[0]


def wait_until(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    pause = threading.Event()
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        pause.wait(0.0005)


# ---------------------------------------------------------------- framing

def test_frame_round_trip_keeps_every_field_and_types_the_kind(sock_pair):
    a, b = sock_pair
    send_msg(a, Msg.ASSIGN, chunk=7, size=123456, sha256="ab" * 32, frames=250, note="naïve ✓")
    msg = recv_msg(b)
    assert msg["type"] is Msg.ASSIGN
    assert {k: v for k, v in msg.items() if k != "type"} == {
        "chunk": 7, "size": 123456, "sha256": "ab" * 32, "frames": 250, "note": "naïve ✓"}


def test_frame_header_is_big_endian_length_of_a_json_body():
    frame = encode_frame(Msg.PING)
    (length,) = struct.unpack(">I", frame[:4])
    assert length == len(frame) - 4
    assert json.loads(frame[4:]) == {"type": "ping"}


def test_two_frames_in_one_write_are_read_as_two_messages(sock_pair):
    a, b = sock_pair
    a.sendall(encode_frame(Msg.PROGRESS, chunk=1, frames=10) + encode_frame(Msg.PROGRESS, chunk=2, frames=20))
    first, second = recv_msg(b), recv_msg(b)
    assert (first["chunk"], first["frames"]) == (1, 10)
    assert (second["chunk"], second["frames"]) == (2, 20)


@pytest.mark.skipif(fcntl is None, reason="needs FIONREAD")
def test_recv_msg_reassembles_a_frame_dribbled_one_byte_at_a_time(background, sock_pair):
    """The sender waits until each byte has been read before sending the next, so every recv()
    returns exactly one byte: a reader that assumed one recv() per frame would fail here."""
    a, b = sock_pair
    frame = encode_frame(Msg.HELLO, version=PROTOCOL_VERSION, role="worker", name="w1")

    def dribble() -> None:
        for i in range(len(frame)):
            a.sendall(frame[i:i + 1])
            wait_until(lambda: unread_bytes(b) == 0, 2.0, f"byte {i} to be read")

    sender = background(dribble)
    msg = recv_msg(b)
    sender.join()
    assert msg == {"type": Msg.HELLO, "version": PROTOCOL_VERSION, "role": "worker", "name": "w1"}


def test_frame_of_exactly_max_frame_bytes_is_accepted(background, sock_pair):
    a, b = sock_pair
    skeleton = json.dumps({"type": "ping", "pad": ""}, separators=(",", ":")).encode()
    body = json.dumps({"type": "ping", "pad": "x" * (MAX_FRAME - len(skeleton))},
                      separators=(",", ":")).encode()
    assert len(body) == MAX_FRAME
    sender = background(a.sendall, raw_frame(body))
    msg = recv_msg(b)
    sender.join()
    assert msg["type"] is Msg.PING and len(msg["pad"]) == MAX_FRAME - len(skeleton)


def test_oversize_length_is_rejected_before_the_body_is_read(sock_pair):
    """Only the header is sent and the socket stays open: a reader that tried to read (or
    allocate) the body first would block until its timeout instead of failing at once."""
    a, b = sock_pair
    b.settimeout(1.0)
    a.sendall(struct.pack("!I", MAX_FRAME + 1))
    with pytest.raises(ProtocolError, match="exceeds limit"):
        recv_msg(b)


def test_huge_length_header_is_rejected(sock_pair):
    a, b = sock_pair
    b.settimeout(1.0)
    a.sendall(b"\xff\xff\xff\xff" + b"{}")
    with pytest.raises(ProtocolError):
        recv_msg(b)


def test_encode_frame_refuses_a_message_over_the_limit():
    with pytest.raises(ProtocolError, match="too large"):
        encode_frame(Msg.EVENT, detail="x" * MAX_FRAME)


def test_eof_inside_the_body_is_a_protocol_error(sock_pair):
    a, b = sock_pair
    a.sendall(raw_frame(b'{"type":"ping"}', length=100)[:4 + 10])
    a.shutdown(socket.SHUT_WR)
    with pytest.raises(ProtocolError, match="mid-frame"):
        recv_msg(b)


def test_eof_right_after_the_header_is_a_protocol_error(sock_pair):
    """A header promises a body: EOF before its first byte is not a clean close."""
    a, b = sock_pair
    a.sendall(struct.pack("!I", 100))
    a.shutdown(socket.SHUT_WR)
    with pytest.raises(ProtocolError, match="0/100"):
        recv_msg(b)


def test_eof_inside_the_header_is_a_protocol_error(sock_pair):
    a, b = sock_pair
    a.sendall(b"\x00\x00")
    a.shutdown(socket.SHUT_WR)
    with pytest.raises(ProtocolError):
        recv_msg(b)


def test_eof_between_frames_is_a_clean_close(sock_pair):
    a, b = sock_pair
    send_msg(a, Msg.PING)
    a.shutdown(socket.SHUT_WR)
    assert recv_msg(b)["type"] is Msg.PING
    with pytest.raises(ConnectionClosed):
        recv_msg(b)
    # ConnectionClosed must not be a ProtocolError, or callers could not tell the two apart
    assert not issubclass(ConnectionClosed, ProtocolError)


def test_silent_peer_times_out_as_connection_closed(sock_pair):
    _, b = sock_pair
    b.settimeout(0.05)
    with pytest.raises(ConnectionClosed, match="silent"):
        recv_msg(b)


def test_send_to_a_closed_peer_raises_connection_closed(sock_pair):
    a, b = sock_pair
    b.close()
    with pytest.raises(ConnectionClosed):
        send_msg(a, Msg.PING)


@pytest.mark.parametrize("body", [
    b"{not json",
    b'{"type":"ping"',
    b"\xff\xfe\xfa",                 # not UTF-8 at all
    b"",                             # zero-length frame
], ids=["garbage", "truncated-object", "not-utf8", "empty"])
def test_bad_json_is_a_protocol_error(sock_pair, body):
    a, b = sock_pair
    a.sendall(raw_frame(body))
    with pytest.raises(ProtocolError, match="malformed"):
        recv_msg(b)


@pytest.mark.parametrize("body", [
    b"[1,2,3]",
    b'"ping"',
    b"42",
    b"null",
    b'{"kind":"ping"}',
    b'{"type":5}',
    b'{"type":null}',
    b'{"type":["ping"]}',
], ids=["array", "string", "number", "null", "no-type", "int-type", "null-type", "list-type"])
def test_json_that_is_not_an_object_with_a_string_type_is_a_protocol_error(sock_pair, body):
    a, b = sock_pair
    a.sendall(raw_frame(body))
    with pytest.raises(ProtocolError):
        recv_msg(b)


def test_deeply_nested_json_is_a_protocol_error(background, sock_pair):
    a, b = sock_pair
    depth = 100_000
    body = b'{"type":"ping","x":' + b"[" * depth + b"]" * depth + b"}"
    assert len(body) <= MAX_FRAME
    sender = background(a.sendall, raw_frame(body))
    try:
        with pytest.raises(ProtocolError):
            recv_msg(b)
    finally:
        sender.join()


def test_unknown_type_is_rejected_and_the_stream_stays_in_step(sock_pair):
    a, b = sock_pair
    a.sendall(raw_frame(b'{"type":"teleport","to":"mars"}') + encode_frame(Msg.PING))
    with pytest.raises(RequestRejected, match="teleport"):
        recv_msg(b)
    # the bad frame was consumed whole: the next frame decodes normally
    assert recv_msg(b)["type"] is Msg.PING


def test_unknown_keys_are_kept_not_refused(sock_pair):
    a, b = sock_pair
    a.sendall(raw_frame(b'{"type":"ping","future_field":{"a":1}}'))
    msg = recv_msg(b)
    assert msg["type"] is Msg.PING and msg["future_field"] == {"a": 1}


# ---------------------------------------------------------------- expect / request

def test_expect_turns_an_error_reply_into_request_rejected(sock_pair):
    a, b = sock_pair
    send_msg(a, Msg.ERROR, reason="no such job", in_reply_to="workers")
    with pytest.raises(RequestRejected, match="no such job"):
        expect(b, Msg.WORKER_LIST)


def test_expect_refuses_a_reply_of_the_wrong_type(sock_pair):
    a, b = sock_pair
    send_msg(a, Msg.PONG)
    with pytest.raises(ProtocolError, match="expected job"):
        expect(b, Msg.JOB)


# ---------------------------------------------------------------- field checks

def msg_with(**fields):
    return {"type": Msg.REGISTER, **fields}


def test_field_returns_a_value_of_the_right_type():
    assert field(msg_with(host="10.0.0.2"), "host", str) == "10.0.0.2"
    assert field(msg_with(slots=4), "slots", int) == 4
    assert field(msg_with(encoders=["libx264"]), "encoders", list) == ["libx264"]


@pytest.mark.parametrize("value", [True, False], ids=["true", "false"])
def test_bool_is_not_accepted_as_int(value):
    with pytest.raises(ProtocolError, match="slots"):
        field(msg_with(slots=value), "slots", int)


@pytest.mark.parametrize("value, kind", [("4", int), (4.0, int), (4, str), ({"a": 1}, list), ("1.5", float),
                                          (True, float)])
def test_field_of_the_wrong_type_is_a_protocol_error(value, kind):
    with pytest.raises(ProtocolError, match="must be"):
        field(msg_with(x=value), "x", kind)


def test_float_field_accepts_a_json_integer_as_float():
    value = field(msg_with(seconds=2), "seconds", float)     # JSON cannot tell 2 from 2.0
    assert value == 2.0 and isinstance(value, float)
    assert field(msg_with(seconds=2.5), "seconds", float) == 2.5


def test_missing_field_is_a_protocol_error_unless_optional():
    with pytest.raises(ProtocolError, match="missing field 'host'"):
        field(msg_with(), "host", str)
    with pytest.raises(ProtocolError, match="missing"):
        field(msg_with(host=None), "host", str)       # JSON null counts as absent
    assert field(msg_with(), "host", str, optional=True) is None
    assert field(msg_with(host=None), "host", str, optional=True, default="d") == "d"
    with pytest.raises(ProtocolError):                 # optional, but present with a wrong type
        field(msg_with(host=5), "host", str, optional=True)


def test_int_field_range_is_inclusive():
    assert int_field(msg_with(port=1), "port", 1, 65535) == 1
    assert int_field(msg_with(port=65535), "port", 1, 65535) == 65535
    for bad in (0, 65536, -1):
        with pytest.raises(ProtocolError, match="out of range"):
            int_field(msg_with(port=bad), "port", 1, 65535)
    with pytest.raises(ProtocolError):
        int_field(msg_with(port=True), "port", 0, 65535)
    with pytest.raises(ProtocolError):
        int_field(msg_with(port="80"), "port", 1, 65535)


# ---------------------------------------------------------------- hello handshake

def test_client_and_server_hello_agree(background, sock_pair):
    a, b = sock_pair
    server = background(server_hello, b, "tracker", {Role.WORKER, Role.BOSS})
    reply = client_hello(a, Role.WORKER, "w1")
    assert server.join() == (Role.WORKER, "w1")
    assert reply["type"] is Msg.HELLO
    assert reply["version"] == PROTOCOL_VERSION
    assert reply["role"] == "tracker"


def test_server_refuses_another_protocol_version_and_names_it(sock_pair):
    a, b = sock_pair
    other = PROTOCOL_VERSION + 1
    send_msg(a, Msg.HELLO, version=other, role="worker", name="w1")
    with pytest.raises(ProtocolError, match=str(other)):
        server_hello(b, "tracker", {Role.WORKER})
    reply = recv_msg(a)
    assert reply["type"] is Msg.ERROR
    assert reply["in_reply_to"] == "hello"
    assert f"protocol version {other}" in reply["reason"]
    assert f"speaks {PROTOCOL_VERSION}" in reply["reason"]


def test_server_refuses_a_hello_without_a_version(sock_pair):
    a, b = sock_pair
    send_msg(a, Msg.HELLO, role="worker", name="w1")
    with pytest.raises(ProtocolError):
        server_hello(b, "tracker", {Role.WORKER})
    assert recv_msg(a)["type"] is Msg.ERROR


def test_server_refuses_a_role_it_does_not_serve(sock_pair):
    a, b = sock_pair
    send_msg(a, Msg.HELLO, version=PROTOCOL_VERSION, role="boss", name="b1")
    with pytest.raises(ProtocolError, match="role"):
        server_hello(b, "worker", {Role.WORKER})
    reply = recv_msg(a)
    assert reply["type"] is Msg.ERROR and "boss" in reply["reason"]


@pytest.mark.parametrize("hello", [
    {"role": "worker"},                 # no name
    {"role": "worker", "name": 42},
    {"role": 5, "name": "w1"},
], ids=["no-name", "int-name", "int-role"])
def test_malformed_hello_is_answered_with_an_error_not_accepted(sock_pair, hello):
    a, b = sock_pair
    b.settimeout(1.0)
    send_msg(a, Msg.HELLO, version=PROTOCOL_VERSION, **hello)
    with pytest.raises(ProtocolError):
        server_hello(b, "tracker", {Role.WORKER})
    b.close()
    assert recv_msg(a)["type"] is Msg.ERROR


def test_server_insists_on_hello_first(sock_pair):
    a, b = sock_pair
    send_msg(a, Msg.PING)
    with pytest.raises(ProtocolError, match="expected hello"):
        server_hello(b, "tracker", {Role.WORKER})
    reply = recv_msg(a)
    assert reply["type"] is Msg.ERROR and reply["in_reply_to"] == "ping"


def test_client_refuses_a_server_of_another_version(sock_pair):
    a, b = sock_pair
    send_msg(b, Msg.HELLO, version=PROTOCOL_VERSION + 1, role="tracker", name="tracker")
    with pytest.raises(ProtocolError, match="version"):
        client_hello(a, Role.BOSS, "b1")
    sent = recv_msg(b)      # what the client said first
    assert sent == {"type": Msg.HELLO, "version": PROTOCOL_VERSION, "role": "boss", "name": "b1"}


def test_client_hello_surfaces_the_servers_error_reason(background, sock_pair):
    a, b = sock_pair
    server = background(server_hello, b, "worker", {Role.BOSS})
    with pytest.raises(RequestRejected, match="does not serve role 'worker'"):
        client_hello(a, Role.WORKER, "w1")
    with pytest.raises(ProtocolError):
        server.join()
