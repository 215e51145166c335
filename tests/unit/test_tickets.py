"""Worker tickets (common/auth.py): made by the tracker, checked offline by the worker."""
from __future__ import annotations

import hashlib
import json

import pytest

from ffdt.common.auth import check_ticket, make_ticket, ticket_key
from ffdt.common.config import TICKET_CLOCK_SKEW
from ffdt.common.errors import AuthError

SERVER_KEY = hashlib.sha256(b"walt's ServerKey").digest()
SALT = "0f" * 16
WORKER = "walt@10.0.0.7:9100"
NOW = 1_700_000_000
EXPIRES = NOW + 600


@pytest.fixture
def key() -> bytes:
    return ticket_key(SERVER_KEY, SALT)


@pytest.fixture
def ticket(key) -> dict:
    return make_ticket(key, "alice", "job123", WORKER, EXPIRES)


def test_valid_ticket_names_its_boss_and_job(key, ticket):
    assert check_ticket(key, ticket, WORKER, now=NOW) == ("alice", "job123")


def test_ticket_survives_a_json_round_trip(key, ticket):
    assert check_ticket(key, json.loads(json.dumps(ticket)), WORKER, now=NOW) == ("alice", "job123")


def test_ticket_key_depends_on_server_key_and_salt():
    base = ticket_key(SERVER_KEY, SALT)
    assert len(base) == 32
    assert ticket_key(SERVER_KEY, SALT) == base
    assert ticket_key(SERVER_KEY, "1f" * 16) != base
    assert ticket_key(hashlib.sha256(b"other").digest(), SALT) != base
    assert base != SERVER_KEY                      # the ServerKey itself is never the ticket key


@pytest.mark.parametrize("change", [
    {"job": "job124"},
    {"boss": "mallory"},
    {"expires": EXPIRES + 3600},
    {"worker": "walt@10.0.0.8:9100"},
], ids=["job", "boss", "expires", "worker"])
def test_tampered_field_is_rejected(key, ticket, change):
    forged = {**ticket, **change}
    # checked by the worker the forged ticket claims to be for, so only the signature can catch it
    with pytest.raises(AuthError, match="signature"):
        check_ticket(key, forged, forged["worker"], now=NOW)


def test_tampered_mac_is_rejected(key, ticket):
    mac = ticket["mac"]
    flipped = mac[:-1] + ("0" if mac[-1] != "0" else "1")
    with pytest.raises(AuthError, match="signature"):
        check_ticket(key, {**ticket, "mac": flipped}, WORKER, now=NOW)
    with pytest.raises(AuthError):
        check_ticket(key, {**ticket, "mac": mac[:32]}, WORKER, now=NOW)      # truncated
    with pytest.raises(AuthError):
        check_ticket(key, {**ticket, "mac": ""}, WORKER, now=NOW)


def test_ticket_for_another_worker_is_rejected(key):
    other = make_ticket(key, "alice", "job123", "walt@10.0.0.8:9100", EXPIRES)
    with pytest.raises(AuthError, match="another worker"):
        check_ticket(key, other, WORKER, now=NOW)


def test_expiry_allows_the_clock_skew_and_no_more(key, ticket):
    assert check_ticket(key, ticket, WORKER, now=EXPIRES + TICKET_CLOCK_SKEW) == ("alice", "job123")
    with pytest.raises(AuthError, match="expired"):
        check_ticket(key, ticket, WORKER, now=EXPIRES + TICKET_CLOCK_SKEW + 1)


def test_ticket_made_with_another_key_is_rejected(ticket):
    with pytest.raises(AuthError, match="signature"):
        check_ticket(ticket_key(SERVER_KEY, "1f" * 16), ticket, WORKER, now=NOW)       # older registration
    with pytest.raises(AuthError, match="signature"):
        check_ticket(ticket_key(hashlib.sha256(b"x").digest(), SALT), ticket, WORKER, now=NOW)


def test_mac_covers_the_fields_not_just_their_concatenation(key):
    """Moving characters from one field to the next must change the MAC."""
    t1 = make_ticket(key, "ab", "c", WORKER, EXPIRES)
    t2 = make_ticket(key, "a", "bc", WORKER, EXPIRES)
    assert t1["mac"] != t2["mac"]
    with pytest.raises(AuthError):
        check_ticket(key, {**t2, "boss": "ab", "job": "c"}, WORKER, now=NOW)


@pytest.mark.parametrize("bad", [
    None,
    "ticket",
    [],
    {},
], ids=["none", "string", "list", "empty"])
def test_non_ticket_is_rejected(key, bad):
    with pytest.raises(AuthError):
        check_ticket(key, bad, WORKER, now=NOW)


@pytest.mark.parametrize("field, value", [
    ("expires", str(EXPIRES)),
    ("expires", float(EXPIRES)),
    ("boss", None),
    ("job", 123),
    ("mac", None),
])
def test_ticket_with_a_field_of_the_wrong_type_is_malformed(key, ticket, field, value):
    with pytest.raises(AuthError, match="malformed"):
        check_ticket(key, {**ticket, field: value}, WORKER, now=NOW)


def test_mac_is_keyed(key, ticket):
    """A forger without the key cannot recompute the MAC: the same fields under another key differ."""
    other = make_ticket(ticket_key(SERVER_KEY, "1f" * 16), "alice", "job123", WORKER, EXPIRES)
    assert other["mac"] != ticket["mac"]
    assert len(bytes.fromhex(ticket["mac"])) == hashlib.sha256().digest_size


def test_a_mac_with_non_ascii_characters_is_refused_not_a_crash(key, ticket):
    forged = dict(ticket, mac="é" * len(ticket["mac"]))
    with pytest.raises(AuthError, match="signature invalid"):
        check_ticket(key, forged, ticket["worker"])
