"""SCRAM-SHA-256 login: client (common/auth.py), server (tracker/auth.py), credential store."""
from __future__ import annotations

import base64
import dataclasses
import os
import socket
from pathlib import Path

import pytest
import scramp

from ffdt.common.auth import Login, login
from ffdt.common.config import SCRAM_ITERATIONS, SCRAM_MECHANISM
from ffdt.common.errors import AuthError, ProtocolError, TranscoderError
from ffdt.common.protocol import Msg, field, recv_msg, send_msg
from ffdt.tracker.auth import ScramLogin, create_user, load_secret
from ffdt.tracker.store import Store

PASSWORD = "correct horse battery staple"
ITERATIONS = 4096            # the least scramp allows; keeps the tests fast
SECRET = bytes(range(32))


@pytest.fixture
def store(tmp_path: Path):
    s = Store(tmp_path / "tracker.db")
    create_user(s, "alice", "boss", PASSWORD, iterations=ITERATIONS)
    create_user(s, "walt", "worker", "another secret", iterations=ITERATIONS)
    yield s
    s.close()


def serve_one_login(sock: socket.socket, store: Store, secret: bytes = SECRET) -> str:
    """The tracker's side of one login, as tracker/server.py does it: auth_start, auth_finish."""
    start = recv_msg(sock)
    assert start["type"] is Msg.AUTH_START
    attempt = ScramLogin(store, secret)
    send_msg(sock, Msg.AUTH_CHALLENGE, data=attempt.start(field(start, "user", str), field(start, "data", str)))
    finish = recv_msg(sock)
    assert finish["type"] is Msg.AUTH_FINISH
    try:
        final = attempt.finish(field(finish, "data", str))
    except AuthError as exc:
        send_msg(sock, Msg.ERROR, reason=str(exc), in_reply_to="auth_finish")
        raise
    assert attempt.record is not None
    send_msg(sock, Msg.AUTH_OK, data=final, role=attempt.record.role)
    return attempt.user or ""


def scram_fields(server_first: str) -> dict[str, str]:
    return dict(part.split("=", 1) for part in server_first.split(","))


def server_first_for(store: Store, user: str, secret: bytes = SECRET) -> dict[str, str]:
    client = scramp.ScramClient([SCRAM_MECHANISM], user, "irrelevant")
    return scram_fields(ScramLogin(store, secret).start(user, client.get_client_first()))


# ---------------------------------------------------------------- full login over a socket pair

def test_login_succeeds_and_derives_the_stored_server_key(background, sock_pair, store):
    a, b = sock_pair
    server = background(serve_one_login, b, store)
    result = login(a, "alice", PASSWORD)
    assert server.join() == "alice"
    assert isinstance(result, Login)
    assert (result.user, result.role) == ("alice", "boss")
    stored = store.get_user("alice")
    assert stored is not None
    assert result.server_key == stored.server_key      # both sides can key tickets the same way
    assert len(result.server_key) == 32


def test_server_key_matches_for_a_password_that_saslprep_changes(background, sock_pair, store):
    """SCRAM normalises passwords (SASLprep: a soft hyphen vanishes, a Roman numeral becomes
    letters); the client's own ServerKey derivation has to do the same or tickets never verify."""
    password = "pa\u00adss \u2168 caf\u00e9"
    create_user(store, "carol", "worker", password, iterations=ITERATIONS)
    a, b = sock_pair
    server = background(serve_one_login, b, store)
    result = login(a, "carol", password)
    server.join()
    stored = store.get_user("carol")
    assert stored is not None and result.server_key == stored.server_key


def test_wrong_password_is_refused_on_both_sides(background, sock_pair, store):
    a, b = sock_pair
    server = background(serve_one_login, b, store)
    with pytest.raises(AuthError):
        login(a, "alice", PASSWORD + "!")
    with pytest.raises(AuthError, match="wrong user name or password"):
        server.join()


def test_another_users_password_is_refused(background, sock_pair, store):
    a, b = sock_pair
    server = background(serve_one_login, b, store)
    with pytest.raises(AuthError):
        login(a, "alice", "another secret")      # walt's password
    with pytest.raises(AuthError):
        server.join()


def test_unknown_user_is_refused_with_the_same_message(background, sock_pair, store):
    a, b = sock_pair
    server = background(serve_one_login, b, store)
    with pytest.raises(AuthError):
        login(a, "mallory", PASSWORD)
    with pytest.raises(AuthError) as refused:
        server.join()
    assert str(refused.value) == "wrong user name or password"   # no hint that the name is unknown


def test_client_refuses_a_tracker_that_does_not_know_its_server_key(background, sock_pair, store):
    """Mutual authentication: a tracker holding StoredKey but a wrong ServerKey (a false tracker)
    can check the proof, but cannot sign the final message, and the client must notice."""
    a, b = sock_pair
    real = store.get_user("alice")
    assert real is not None
    store.put_user(dataclasses.replace(real, server_key=os.urandom(32)), created=0.0)
    server = background(serve_one_login, b, store)
    with pytest.raises(AuthError, match="could not prove"):
        login(a, "alice", PASSWORD)
    server.join()


def test_the_client_side_follows_rfc_7677s_example(background, sock_pair, monkeypatch):
    """The worked SCRAM-SHA-256 exchange of RFC 7677 section 3 (user "user", password "pencil"),
    byte for byte: the client's proof, and its check of the server's signature."""
    monkeypatch.setattr("ffdt.common.auth.secrets.token_urlsafe", lambda n: "rOprNGfwEbeRWgbNEkqO")
    nonce = "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"

    def rfc_server(sock: socket.socket) -> str:
        start = recv_msg(sock)
        assert field(start, "data", str) == "n,,n=user,r=rOprNGfwEbeRWgbNEkqO"
        send_msg(sock, Msg.AUTH_CHALLENGE, data=f"r={nonce},s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096")
        final = field(recv_msg(sock), "data", str)
        send_msg(sock, Msg.AUTH_OK, data="v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=", role="worker")
        return final

    a, b = sock_pair
    server = background(rfc_server, b)
    assert login(a, "user", "pencil").role == "worker"
    assert server.join() == f"c=biws,r={nonce},p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="


def test_a_login_derives_the_salted_password_once(background, sock_pair, store, monkeypatch):
    """PBKDF2 is the whole cost of a login (200,000 iterations: 65 ms here); the proof and the
    ServerKey for tickets come from one derivation."""
    import hashlib
    calls = []
    real = hashlib.pbkdf2_hmac
    monkeypatch.setattr("ffdt.common.auth.hashlib.pbkdf2_hmac", lambda *a: calls.append(a) or real(*a))
    a, b = sock_pair
    server = background(serve_one_login, b, store)
    login(a, "alice", PASSWORD)
    server.join()
    assert len(calls) == 1


@pytest.mark.parametrize("text", [
    "alice", "correct horse battery staple", "", "pa\u00adss", "\u2168", "caf\u00e9", "a\u00a0b", "\u00aa",
    "\u0627\u0644\u0639", "\u0627a\u0639", "\u0627\u0639a", "a\u0007b", "\ue000", "\ufdd0", "\u0340",
    "\u200e", "\U000e0001", "\u0221", "x\u2028y", "\u3000\u3000", "\u1806", "\u034f",
])
def test_saslprep_gives_what_the_trackers_scramp_gives(text):
    """The client's own SASLprep (no scramp import at start) and the tracker's: the same string
    for every one accepted, a refusal for every one refused."""
    from scramp.utils import saslprep as theirs
    from ffdt.common.auth import saslprep as ours
    try:
        expected = theirs(text)
    except scramp.ScramException:
        with pytest.raises(ValueError):
            ours(text)
    else:
        assert ours(text) == expected


def test_the_client_does_not_import_scramp():
    import subprocess
    import sys
    done = subprocess.run([sys.executable, "-c", "import sys; import ffdt.client.tracker_client, ffdt.client.job; "
                           "print('scramp' in sys.modules)"], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "False", done.stderr


# ---------------------------------------------------------------- ScramLogin driven directly

def test_direct_scram_exchange_verifies_the_server_signature(store):
    client = scramp.ScramClient([SCRAM_MECHANISM], "walt", "another secret")
    attempt = ScramLogin(store, SECRET)
    client.set_server_first(attempt.start("walt", client.get_client_first()))
    client.set_server_final(attempt.finish(client.get_client_final()))   # raises if the signature is wrong
    assert attempt.record is not None and attempt.record.role == "worker"


def test_finish_before_start_is_a_protocol_error(store):
    with pytest.raises(ProtocolError):
        ScramLogin(store, SECRET).finish("c=biws,r=abc,p=abc")


def test_a_login_attempt_cannot_be_finished_twice(store):
    client = scramp.ScramClient([SCRAM_MECHANISM], "walt", "another secret")
    attempt = ScramLogin(store, SECRET)
    client.set_server_first(attempt.start("walt", client.get_client_first()))
    final = client.get_client_final()
    attempt.finish(final)
    with pytest.raises(ProtocolError):
        attempt.finish(final)        # a replayed auth_finish on the same attempt


@pytest.mark.parametrize("name", ["", "x" * 65])
def test_bad_user_names_are_refused_before_any_lookup(store, name):
    client = scramp.ScramClient([SCRAM_MECHANISM], "someone", "pw")
    with pytest.raises(ProtocolError):
        ScramLogin(store, SECRET).start(name, client.get_client_first())


def test_garbage_client_first_is_an_auth_error(store):
    with pytest.raises(AuthError):
        ScramLogin(store, SECRET).start("alice", "this is not SCRAM")


# ---------------------------------------------------------------- decoys for unknown users

def test_decoy_salt_for_an_unknown_user_is_stable_and_looks_real(store):
    real = server_first_for(store, "alice")
    first = server_first_for(store, "nobody")
    again = server_first_for(store, "nobody")
    other = server_first_for(store, "nobody-else")
    assert first["s"] == again["s"]                     # asking twice cannot tell decoy from real
    assert first["s"] != other["s"]
    assert len(base64.b64decode(first["s"])) == len(base64.b64decode(real["s"]))
    assert int(first["i"]) == SCRAM_ITERATIONS          # what `tracker.py add-user` stores
    # a fresh nonce each time, as for a real user
    assert first["r"] != again["r"]


def test_decoy_salt_depends_on_the_tracker_secret(store):
    assert server_first_for(store, "nobody", SECRET)["s"] != server_first_for(store, "nobody", b"\1" * 32)["s"]


def test_real_salt_is_stable_across_attempts(store):
    assert server_first_for(store, "alice")["s"] == server_first_for(store, "alice")["s"]
    rec = store.get_user("alice")
    assert rec is not None and base64.b64decode(server_first_for(store, "alice")["s"]) == rec.salt
    assert int(server_first_for(store, "alice")["i"]) == ITERATIONS


# ---------------------------------------------------------------- what is stored

def test_store_holds_no_plaintext_password(tmp_path, store):
    rec = store.get_user("alice")
    assert rec is not None
    assert PASSWORD.encode() not in rec.salt + rec.stored_key + rec.server_key
    on_disk = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.is_file())
    assert rec.salt in on_disk                      # the scan does see the stored record...
    assert PASSWORD.encode() not in on_disk         # ...and the password is not in it
    assert b"another secret" not in on_disk
    # the keys are not the password-equivalent salted password either: stored_key is H(ClientKey)
    assert rec.stored_key != rec.server_key


def test_create_user_replaces_an_existing_record(store):
    before = store.get_user("alice")
    create_user(store, "alice", "worker", "new password", iterations=ITERATIONS)
    after = store.get_user("alice")
    assert before is not None and after is not None
    assert after.role == "worker" and after.salt != before.salt and after.server_key != before.server_key


def test_unknown_user_lookup_returns_none(store):
    assert store.get_user("nobody") is None


def test_load_secret_is_created_private_once_and_then_reused(tmp_path):
    first = load_secret(tmp_path)
    assert len(first) == 32
    assert (tmp_path / "secret.key").stat().st_mode & 0o777 == 0o600
    assert load_secret(tmp_path) == first


def test_a_truncated_secret_file_is_never_used_as_the_key(tmp_path):
    (tmp_path / "secret.key").write_bytes(b"")
    try:
        key = load_secret(tmp_path)
    except TranscoderError:
        return                       # refusing to start is fine too
    assert len(key) >= 32
