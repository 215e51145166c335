"""Optional TLS for every connection: the tracker's port and the workers' two ports.

Logins are safe without it (SCRAM never sends the password), but chunk bytes, session keys and
tickets are not: on a network you do not trust, give servers a certificate and clients the CA.
"""
from __future__ import annotations

import socket
import ssl
from pathlib import Path

from common.errors import PeerUnreachable, UsageError


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise UsageError(f"cannot load the TLS certificate {cert} / key {key}: {exc}") from None
    return ctx


def client_context(ca: Path | None) -> ssl.SSLContext:
    """Verifies the server's certificate and name: against `ca`, else the system's CAs."""
    try:
        ctx = ssl.create_default_context(cafile=str(ca) if ca else None)
    except (OSError, ssl.SSLError) as exc:
        raise UsageError(f"cannot load the TLS CA file {ca}: {exc}") from None
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def wrap_client(sock: socket.socket, ctx: ssl.SSLContext, host: str) -> ssl.SSLSocket:
    """TLS over a connected socket (handshake within the socket's timeout)."""
    try:
        return ctx.wrap_socket(sock, server_hostname=host)
    except ssl.SSLCertVerificationError as exc:
        sock.close()
        raise PeerUnreachable(f"TLS with {host}: certificate not trusted ({exc.verify_message}); "
                              "give its CA with --tls-ca") from None
    except (ssl.SSLError, OSError) as exc:
        sock.close()
        raise PeerUnreachable(f"TLS with {host} failed: {getattr(exc, 'reason', None) or exc}") from None


def wrap_server(sock: socket.socket, ctx: ssl.SSLContext) -> ssl.SSLSocket:
    """TLS for an accepted socket; raises ssl.SSLError/OSError for a peer that does not speak it."""
    return ctx.wrap_socket(sock, server_side=True)
