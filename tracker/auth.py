"""Server side of the SCRAM-SHA-256 login, and the credential store it reads.

What is stored (salt, StoredKey, ServerKey, iterations) cannot be used to log in: a proof needs
ClientKey, which only the password yields. Unknown names get a decoy record derived from the
tracker's secret, so they cost the same and always get the same salt.
"""
from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from pathlib import Path

import scramp
from scramp.utils import saslprep

from ffdt.common.config import SCRAM_ITERATIONS, SCRAM_MECHANISM
from ffdt.common.errors import AuthError, ProtocolError
from ffdt.common.tls import write_private
from ffdt.tracker.store import Store, UserRecord

MECHANISM = scramp.ScramMechanism(SCRAM_MECHANISM)


def create_user(store: Store, name: str, role: str, password: str, iterations: int = SCRAM_ITERATIONS) -> None:
    salt, stored_key, server_key, iterations = MECHANISM.make_auth_info(password, iteration_count=iterations)
    store.put_user(UserRecord(name, role, salt, stored_key, server_key, iterations), created=time.time())


def password_matches(rec: UserRecord, password: str) -> bool:
    """A password checked against the stored SCRAM keys (StoredKey = H(HMAC(SaltedPassword,
    "Client Key"))), for a login that carries the password itself: the dashboard's HTTP Basic
    login, over TLS only."""
    salted = hashlib.pbkdf2_hmac("sha256", saslprep(password).encode(), rec.salt, rec.iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    return hmac.compare_digest(hashlib.sha256(client_key).digest(), rec.stored_key)


def load_secret(data_dir: Path) -> bytes:
    """The tracker's own random secret (decoy records), created 0600 on first start."""
    path = data_dir / "secret.key"
    try:
        key = path.read_bytes()
        if len(key) >= 32:
            return key
    except FileNotFoundError:
        pass
    # new, or cut short by a crash while it was written: make one, and replace atomically
    key = secrets.token_bytes(32)
    write_private(path, key)
    return key


class ScramLogin:
    """One login attempt on one connection: start() then finish()."""

    def __init__(self, store: Store, secret: bytes) -> None:
        self._store, self._secret = store, secret
        self._server: scramp.ScramServer | None = None
        self.user: str | None = None
        self.record: UserRecord | None = None

    def start(self, user: str, client_first: str) -> str:
        if not user or len(user) > 64:
            raise ProtocolError("bad user name")
        self.user = user
        self.record = self._store.get_user(user)
        auth_info = self._auth_info(self.record or self._decoy(user))
        self._server = MECHANISM.make_server(lambda _name: auth_info)
        try:
            self._server.set_client_first(client_first)
            return self._server.get_server_first()
        except scramp.ScramException as exc:
            raise AuthError(f"bad SCRAM first message: {exc}") from exc

    def finish(self, client_final: str) -> str:
        """The server-final message; AuthError on a wrong password or an unknown user."""
        if self._server is None:
            raise ProtocolError("auth_finish before auth_start")
        server, self._server = self._server, None
        try:
            server.set_client_final(client_final)
        except scramp.ScramException as exc:
            raise AuthError("wrong user name or password") from exc
        if self.record is None:          # the decoy cannot verify, but be explicit
            raise AuthError("wrong user name or password")
        return server.get_server_final()

    @staticmethod
    def _auth_info(rec: UserRecord) -> tuple[bytes, bytes, bytes, int]:
        return rec.salt, rec.stored_key, rec.server_key, rec.iterations

    def _decoy(self, user: str) -> UserRecord:
        seed = hmac.new(self._secret, b"decoy:" + user.encode(), hashlib.sha256).digest()
        return UserRecord(user, "none", seed, secrets.token_bytes(32), secrets.token_bytes(32),
                          SCRAM_ITERATIONS)
