"""TLS on every connection: the tracker's port and the workers' two ports.

By default every server makes its own key and self-signed certificate, and clients pin the key's
SHA-256 fingerprint instead of checking a certificate authority: the tracker keeps its key in its
data directory and prints the fingerprint, which workers and bosses pin (given with
--tracker-fingerprint, or trusted on first use and remembered, as SSH does); a worker makes a new
key at each start and registers its fingerprint over its TLS connection to the tracker, which
hands it to bosses with the worker's address and ticket. Certificates from a CA
(--tls-cert/--tls-key, --tls-ca) still work; plain TCP only with --plain.
"""
from __future__ import annotations

import datetime
import hashlib
import logging
import os
import re
import select
import socket
import ssl
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from ffdt.common.errors import PeerUnreachable, UsageError

log = logging.getLogger(__name__)

FINGERPRINT = re.compile(r"^sha256:[0-9a-f]{64}$")
KEY_FILE, CERT_FILE = "tls-key.pem", "tls-cert.pem"


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise UsageError(f"cannot load the TLS certificate {cert} / key {key}: {exc}") from None
    return ctx


def fingerprint(der: bytes) -> str:
    return "sha256:" + hashlib.sha256(der).hexdigest()


def cert_fingerprint(cert: Path) -> str:
    try:
        return fingerprint(ssl.PEM_cert_to_DER_cert(cert.read_text(encoding="ascii")))
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot read the TLS certificate {cert}: {exc}") from None


def server_identity(cert: Path | None, key: Path | None, plain: bool, keep_in: Path | None, name: str
                    ) -> tuple[ssl.SSLContext | None, str | None]:
    """What a server's ports speak, from its options: the certificate given (--tls-cert/--tls-key),
    else plain TCP (--plain), else a key of its own (own_identity). Returns the context (None:
    plain) and the fingerprint clients pin."""
    if bool(cert) != bool(key):
        raise UsageError("--tls-cert and --tls-key go together")
    if plain and cert:
        raise UsageError("--plain goes with no TLS option")
    if cert and key:
        return server_context(cert, key), cert_fingerprint(cert)
    if plain:
        return None, None
    return own_identity(keep_in, name)


def own_identity(directory: Path | None, name: str) -> tuple[ssl.SSLContext, str]:
    """A server context with a key and self-signed certificate of our own, and its fingerprint.
    Kept in `directory` (made on first use, the key 0600) so that clients can pin it across
    restarts; with directory=None, a new one for this process only (the key never stays on disk)."""
    if directory is None:
        with tempfile.TemporaryDirectory(prefix="ffdt-tls-") as scratch:
            return own_identity(Path(scratch), name)
    key, cert = directory / KEY_FILE, directory / CERT_FILE
    if not (key.is_file() and cert.is_file()):
        _make_identity(key, cert, name)
    return server_context(cert, key), cert_fingerprint(cert)


def _make_identity(key_path: Path, cert_path: Path, name: str) -> None:
    # imported here: only servers making their first key need it
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=20 * 365)).sign(key, hashes.SHA256()))
    write_private(key_path, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
    write_private(cert_path, cert.public_bytes(serialization.Encoding.PEM))


def write_private(path: Path, data: bytes) -> None:
    """Write a file 0600, atomically (a crash leaves the old one or none)."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def client_context(ca: Path | None) -> ssl.SSLContext:
    """Verifies the server's certificate and name: against `ca`, else the system's CAs."""
    try:
        ctx = ssl.create_default_context(cafile=str(ca) if ca else None)
    except (OSError, ssl.SSLError) as exc:
        raise UsageError(f"cannot load the TLS CA file {ca}: {exc}") from None
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def pinning_context() -> ssl.SSLContext:
    """For a peer identified by its key's fingerprint (wrap_client's `pin`), not by a CA."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE         # the fingerprint is checked instead, before any byte of ours
    return ctx


class SerialSSLSocket(ssl.SSLSocket):
    """A TLS socket that one thread reads while others write (a session's message port: the
    reader waits for the peer while encode threads and timers send). OpenSSL must never run
    SSL_read and SSL_write on one connection at once: here that corrupted records ("bad record
    mac") within seconds once a process was short of CPU, and both peers saw the connection
    close. So every read and write takes one lock; a reader waits for bytes outside it, then
    reads without blocking."""

    def _io_lock(self) -> threading.RLock:
        lock = self.__dict__.get("_serial_lock")
        if lock is None:
            lock = self.__dict__.setdefault("_serial_lock", threading.RLock())
        return lock

    def recv(self, buflen: int = 1024, flags: int = 0) -> bytes:
        return self._serial_read(lambda: super(SerialSSLSocket, self).recv(buflen, flags))

    def recv_into(self, buffer, nbytes: int | None = None, flags: int = 0) -> int:   # type: ignore[override]
        return self._serial_read(lambda: super(SerialSSLSocket, self).recv_into(buffer, nbytes or 0, flags))

    def send(self, data, flags: int = 0) -> int:          # type: ignore[override]
        with self._io_lock():
            return super().send(data, flags)

    def sendall(self, data, flags: int = 0) -> None:      # type: ignore[override]
        with self._io_lock():
            super().sendall(data, flags)

    def _serial_read(self, read):
        timeout = self.gettimeout()
        if self._sslobj is None or timeout == 0.0:        # not yet TLS, or the caller polls itself
            with self._io_lock():
                return read()
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._io_lock():
                self.settimeout(0.0)
                try:
                    return read()
                except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                    pass                                  # a record not all here yet
                finally:
                    self.settimeout(timeout)
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise socket.timeout("timed out")
            _wait_readable(self, left)                    # bytes, or the deadline (checked above)


def _wait_readable(sock: socket.socket, timeout: float | None) -> None:
    """poll, not select: a tracker with a thousand workers has descriptors past select's 1,024."""
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    poller.poll(None if timeout is None else max(0, int(timeout * 1000) + 1))


def peer_fingerprint(sock: ssl.SSLSocket) -> str:
    der = sock.getpeercert(binary_form=True)
    return fingerprint(der) if der else ""


def wrap_client(sock: socket.socket, ctx: ssl.SSLContext, host: str, pin: str | None = None) -> ssl.SSLSocket:
    """TLS over a connected socket (handshake within the socket's timeout); with `pin`, the
    peer's certificate must have that fingerprint."""
    ctx.sslsocket_class = SerialSSLSocket
    try:
        tls = ctx.wrap_socket(sock, server_hostname=host)
    except ssl.SSLCertVerificationError as exc:
        sock.close()
        raise PeerUnreachable(f"TLS with {host}: certificate not trusted ({exc.verify_message}); "
                              "give its CA with --tls-ca") from None
    except (ssl.SSLError, OSError) as exc:
        sock.close()
        raise PeerUnreachable(f"TLS with {host} failed: {getattr(exc, 'reason', None) or exc}") from None
    if pin is not None and peer_fingerprint(tls) != pin:
        seen = peer_fingerprint(tls)
        tls.close()
        raise PeerUnreachable(f"TLS with {host}: its key is {seen}, not {pin} as trusted here: another "
                              "machine, or its key was made again (if so, trust the new one explicitly)")
    return tls


@dataclass(frozen=True)
class ClientTls:
    """How a client reaches the tracker: `context` None for plain TCP; a pinning context with
    `pin` (the tracker's key) or `known` (trusted on first use); or a context that verifies a CA."""
    context: ssl.SSLContext | None
    pin: str | None = None
    known: KnownTrackers | None = None


def wrap_server(sock: socket.socket, ctx: ssl.SSLContext) -> ssl.SSLSocket:
    """TLS for an accepted socket; raises ssl.SSLError/OSError for a peer that does not speak it."""
    ctx.sslsocket_class = SerialSSLSocket
    return ctx.wrap_socket(sock, server_side=True)


def config_dir() -> Path:
    return Path(os.environ.get("FFDT_CONFIG_DIR") or Path.home() / ".config" / "ffdt")


class KnownTrackers:
    """Tracker keys trusted on first use, as SSH's known_hosts: one "HOST:PORT FINGERPRINT" a line."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or config_dir() / "known_trackers"

    def get(self, where: str) -> str | None:
        try:
            lines = self.path.read_text(encoding="utf-8").splitlines()
        except OSError:
            return None
        for line in lines:
            parts = line.split()
            if len(parts) == 2 and parts[0] == where and FINGERPRINT.match(parts[1]):
                return parts[1]
        return None

    def remember(self, where: str, fp: str) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            old = self.path.read_text(encoding="utf-8").splitlines() if self.path.exists() else []
            kept = [line for line in old if line.split()[:1] != [where]]
            write_private(self.path, ("\n".join([*kept, f"{where} {fp}"]) + "\n").encode())
        except OSError as exc:
            log.warning("could not remember the tracker's key in %s: %s", self.path, exc)
