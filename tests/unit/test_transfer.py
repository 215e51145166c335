"""File-port payloads (common/transfer.py): exact size, SHA-256 checked, atomic rename."""
from __future__ import annotations

import hashlib
import random
import socket
from pathlib import Path

import pytest

from ffdt.common.errors import TransferError
from ffdt.common.transfer import recv_file, send_file, sha256_file

SIZE = 300_000 + 17          # several BLOCKs and not a multiple of one


@pytest.fixture
def payload(tmp_path: Path) -> Path:
    src = tmp_path / "chunk_00000.mkv"
    src.write_bytes(random.Random(1234).randbytes(SIZE))
    return src


def leftovers(dest: Path) -> list[Path]:
    return sorted(p for p in dest.parent.iterdir() if p.name.startswith(dest.name))


def test_sha256_file_matches_hashlib(payload):
    assert sha256_file(payload) == hashlib.sha256(payload.read_bytes()).hexdigest()


def test_round_trip_over_a_socket_pair(background, sock_pair, payload, tmp_path):
    a, b = sock_pair
    dest = tmp_path / "in" / "result.mkv"
    dest.parent.mkdir()
    seen: list[int] = []
    sender = background(send_file, a, payload, SIZE)
    recv_file(b, dest, SIZE, hashlib.sha256(payload.read_bytes()).hexdigest(), on_bytes=seen.append)
    sender.join()
    assert dest.read_bytes() == payload.read_bytes()
    assert sum(seen) == SIZE and len(seen) > 1       # progress reported as blocks arrive
    assert leftovers(dest) == [dest]                 # no .part left behind


def test_recv_file_reads_exactly_size_bytes_and_leaves_the_rest(background, sock_pair, tmp_path):
    a, b = sock_pair
    body, trailer = b"x" * 1000, b"NEXT-FRAME"
    a.sendall(body + trailer)
    dest = tmp_path / "r.bin"
    recv_file(b, dest, len(body), hashlib.sha256(body).hexdigest())
    assert dest.read_bytes() == body
    assert b.recv(100) == trailer                    # the stream is still in step for the next message


def test_checksum_mismatch_leaves_no_file(background, sock_pair, payload, tmp_path):
    a, b = sock_pair
    dest = tmp_path / "in" / "result.mkv"
    dest.parent.mkdir()
    wrong = hashlib.sha256(b"something else").hexdigest()
    sender = background(send_file, a, payload, SIZE)
    with pytest.raises(TransferError, match="checksum"):
        recv_file(b, dest, SIZE, wrong)
    sender.join()
    assert not dest.exists()
    assert not dest.with_name(dest.name + ".part").exists()
    assert leftovers(dest) == []


def test_a_good_older_file_survives_a_failed_transfer(sock_pair, tmp_path):
    a, b = sock_pair
    dest = tmp_path / "result.mkv"
    dest.write_bytes(b"previous good result")
    a.sendall(b"y" * 100)
    with pytest.raises(TransferError):
        recv_file(b, dest, 100, "0" * 64)
    assert dest.read_bytes() == b"previous good result"      # replaced only after the hash matched


def test_early_close_is_a_transfer_error(sock_pair, tmp_path):
    a, b = sock_pair
    data = b"z" * 10_000
    a.sendall(data)
    a.shutdown(socket.SHUT_WR)                       # the sender stops halfway
    dest = tmp_path / "result.mkv"
    with pytest.raises(TransferError, match="closed with 10000 of 20000 bytes missing"):
        recv_file(b, dest, 20_000, hashlib.sha256(data * 2).hexdigest())
    assert leftovers(dest) == []


def test_stalled_sender_is_a_transfer_error(sock_pair, tmp_path):
    a, b = sock_pair
    b.settimeout(0.05)
    a.sendall(b"q" * 10)
    dest = tmp_path / "result.mkv"
    with pytest.raises(TransferError, match="stalled"):
        recv_file(b, dest, 100, "0" * 64)
    assert leftovers(dest) == []


def test_an_error_in_the_progress_callback_still_cleans_up(sock_pair, tmp_path):
    a, b = sock_pair
    a.sendall(b"p" * 100)
    dest = tmp_path / "result.mkv"

    def explode(n: int) -> None:
        raise RuntimeError("progress bar broke")

    with pytest.raises(RuntimeError):
        recv_file(b, dest, 100, hashlib.sha256(b"p" * 100).hexdigest(), on_bytes=explode)
    assert leftovers(dest) == []


def test_send_file_refuses_to_send_less_than_announced(background, sock_pair, tmp_path):
    a, b = sock_pair
    short = tmp_path / "short.bin"
    short.write_bytes(b"s" * 1000)
    with pytest.raises(TransferError, match="1000 of 1500"):
        send_file(a, short, 1500)                    # the file shrank after its size was announced


def test_send_file_sends_only_the_announced_size(background, sock_pair, tmp_path):
    a, b = sock_pair
    grown = tmp_path / "grown.bin"
    grown.write_bytes(b"g" * 500 + b"EXTRA")
    send_file(a, grown, 500)
    a.shutdown(socket.SHUT_WR)
    received = b""
    while chunk := b.recv(4096):
        received += chunk
    assert received == b"g" * 500


def test_send_to_a_closed_peer_is_a_transfer_error(sock_pair, payload):
    a, b = sock_pair
    b.close()
    with pytest.raises(TransferError):
        send_file(a, payload, SIZE)


def test_zero_length_file(sock_pair, tmp_path):
    _, b = sock_pair
    dest = tmp_path / "empty.mkv"
    recv_file(b, dest, 0, hashlib.sha256(b"").hexdigest())
    assert dest.read_bytes() == b""
