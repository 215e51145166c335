"""A TLS connection read by one thread while others write it, as both ends of a boss-worker
session are: without common/tls.py's SerialSSLSocket, OpenSSL corrupted records here ("bad
record mac") in about a third of runs of this test, and both peers saw the connection close."""
from __future__ import annotations

import socket
import ssl
import threading

import pytest

from ffdt.common import tls

trustme = pytest.importorskip("trustme")

MESSAGES = 20_000
MESSAGE = b"m" * 37


def contexts() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A server context with a throwaway CA's certificate for localhost, a client trusting it."""
    ca = trustme.CA()
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("localhost").configure_cert(server_ctx)
    client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ca.configure_trust(client_ctx)
    return server_ctx, client_ctx


def exchange(sock: socket.socket, errors: list[str]) -> None:
    """Write MESSAGES small messages from a second thread while this one reads the peer's."""
    def writer() -> None:
        try:
            for _ in range(MESSAGES):
                sock.sendall(MESSAGE)
        except OSError as exc:
            errors.append(f"write: {exc!r}")

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    got = 0
    try:
        while got < MESSAGES * len(MESSAGE):
            part = sock.recv(65536)
            if not part:
                errors.append(f"closed after {got} bytes")
                break
            got += len(part)
    except OSError as exc:
        errors.append(f"read: {exc!r}")
    thread.join(60)


def test_reads_and_writes_from_two_threads_keep_the_stream_intact():
    server_ctx, client_ctx = contexts()
    errors: list[str] = []
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]

        def serve() -> None:
            conn, _ = listener.accept()
            conn.settimeout(30)
            with tls.wrap_server(conn, server_ctx) as server_side:
                exchange(server_side, errors)

        server = threading.Thread(target=serve, daemon=True)
        server.start()
        raw = socket.create_connection(("127.0.0.1", port), timeout=30)
        with tls.wrap_client(raw, client_ctx, "localhost") as client_side:
            assert isinstance(client_side, tls.SerialSSLSocket)
            exchange(client_side, errors)
        server.join(60)
    assert errors == []


def test_a_read_still_times_out():
    """The reader waits outside the lock, but within the socket's timeout."""
    server_ctx, client_ctx = contexts()
    with socket.create_server(("127.0.0.1", 0)) as listener:
        done = threading.Event()

        def serve() -> None:
            conn, _ = listener.accept()
            conn.settimeout(10)
            with tls.wrap_server(conn, server_ctx):
                done.wait(10)           # says nothing

        threading.Thread(target=serve, daemon=True).start()
        raw = socket.create_connection(listener.getsockname(), timeout=10)
        with tls.wrap_client(raw, client_ctx, "localhost") as sock:
            sock.settimeout(0.3)
            with pytest.raises(socket.timeout):
                sock.recv(10)
        done.set()


def test_a_read_waits_on_a_descriptor_past_1024():
    """A tracker with a thousand workers holds descriptors that select() cannot wait on."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1200:
        pytest.skip("the open files limit is below 1,200")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 1200) if hard == resource.RLIM_INFINITY
                                                else min(max(soft, 1200), hard), hard))
    server_ctx, client_ctx = contexts()
    fillers = [socket.socket() for _ in range(1030)]     # push the next descriptors past 1,024
    try:
        with socket.create_server(("127.0.0.1", 0)) as listener:
            def serve() -> None:
                conn, _ = listener.accept()
                conn.settimeout(10)
                with tls.wrap_server(conn, server_ctx) as server_side:
                    server_side.settimeout(10)
                    assert server_side.recv(5) == b"hello"     # the server waits first
                    server_side.sendall(b"world")

            thread = threading.Thread(target=serve, daemon=True)
            thread.start()
            raw = socket.create_connection(listener.getsockname(), timeout=10)
            with tls.wrap_client(raw, client_ctx, "localhost") as sock:
                assert sock.fileno() > 1024
                sock.sendall(b"hello")
                assert sock.recv(5) == b"world"
            thread.join(10)
    finally:
        for s in fillers:
            s.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
