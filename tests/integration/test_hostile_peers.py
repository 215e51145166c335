"""Hostile peers against real processes on loopback (issue: hostile peers). A boss or worker
turned hostile is played by a fault switch (client/faults.py) in an otherwise real process."""
from __future__ import annotations

import json
import shutil
import socket
import stat
import time

import pytest

from ffdt.client.tracker_client import TrackerClient
from ffdt.common.errors import ConnectionClosed
from ffdt.common.net import connect
from ffdt.common.protocol import Msg, Role, client_hello, recv_msg, send_msg
from ffdt.common.settings import Settings
from ffdt.common.tls import pinning_context
from tests.conftest import PASSWORD, Cluster, assert_same_media, audit_events, ffmpeg, poll_for, start_boss
from tests.integration.test_faults import assert_bad_worker_dropped, ffmpeg_of, held_worker, worker_name

pytestmark = pytest.mark.integration


def events(cluster, kind: str, **match) -> list[dict]:
    return [e for e in audit_events(cluster.data) if e["event"] == kind
            and all(e.get(k) == v for k, v in match.items())]


@pytest.fixture
def secret(tmp_path):
    """A video of the host's own that a hostile peer wants encoded and sent back to it."""
    path = tmp_path / "secret.ts"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=160x120:rate=25:duration=2", "-c:v", "libx264",
           "-preset", "ultrafast", "-f", "mpegts", str(path))
    return path


def test_a_boss_cannot_make_a_worker_encode_its_local_files(cluster, clips, tmp_path, secret):
    """The chunk is an HLS playlist naming a file on the worker's host: the worker opens chunks as
    Matroska only, so its ffmpeg fails on the first bytes and nothing is encoded or returned."""
    cluster.start_worker()
    out = tmp_path / "out.mp4"
    done = cluster.boss(clips["small.mp4"], out, "--preset", "ultrafast", "--wait-workers", "3",
                        extra_env={"FFDT_TEST_FAULTS": "playlist-chunks", "FFDT_TEST_SECRET": str(secret)})
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert not out.exists()
    # (the boss may add its own chunk_failed lines, "worker lost", when the job gives up)
    failed = [e for e in events(cluster, "chunk_failed") if e.get("by") == "worker"]
    assert failed, "the worker reports each chunk it could not open"
    # the worker's ffmpeg stopped at the first bytes; no result ever went back to the boss
    assert all("Invalid data found" in e.get("detail", "") for e in failed), failed
    assert not events(cluster, "chunk_done")


def test_a_result_that_is_a_playlist_is_rejected_without_being_followed(cluster, clips, tmp_path, secret):
    """The result is a playlist naming a file on the boss's host: the boss opens results as
    Matroska only and rejects it on its first bytes (before: the playlist was followed)."""
    assert_bad_worker_dropped(cluster, clips, tmp_path, {"FFDT_TEST_FAULTS": "playlist-results",
                                                         "FFDT_TEST_SECRET": str(secret)}, "Invalid data found")


def test_ffmpeg_children_get_no_password(cluster, clips, tmp_path):
    """ffmpeg parses hostile bytes: one exploit in it must not yield the tracker login."""
    proc, _, _ = held_worker(cluster, tmp_path)
    boss = start_boss(cluster, clips["small.mp4"], tmp_path / "out.mp4", "--preset", "ultrafast")
    try:
        pids = poll_for(lambda: ffmpeg_of(proc.pid), 60, "the worker's ffmpeg running")
        environ = open(f"/proc/{pids[0]}/environ", "rb").read()
        assert b"FFDT_PASSWORD" not in environ and PASSWORD.encode() not in environ
        assert b"PATH=" in environ           # what it needs is still there
        assert PASSWORD.encode() in open(f"/proc/{proc.pid}/environ", "rb").read()   # the test gave it one
    finally:
        (tmp_path / "release").touch()
        boss.kill()
        boss.wait()


def test_a_worker_that_changes_the_picture_is_caught_and_dropped(cluster, clips, tmp_path):
    """A red box over a quarter of every frame, in an otherwise perfect result: the boss compares
    frames of every result with the source's. (The worker's sample of a result is honest, taken
    while its ffmpeg encodes, before the box is drawn: a result that does not start with the
    sample's bytes is compared itself, test_ffmpeg_runners; here the bad worker mostly holds
    another chunk behind the one it encodes, and the boss then fetches no sample.)"""
    assert_bad_worker_dropped(cluster, clips, tmp_path, {"FFDT_TEST_FAULTS": "red-box"},
                              "not the source's picture", "--preset", "medium", "--chunk-seconds", "5",
                              "--verify-fraction", "0")


def test_a_picture_changed_past_the_first_frames_is_caught_by_a_full_check(cluster, clips, tmp_path):
    """The box from the 10th frame on: only a comparison over the whole result sees it, which
    --verify-fraction 1 makes of every result (one decode of the result does it and counts its
    frames)."""
    assert_bad_worker_dropped(cluster, clips, tmp_path, {"FFDT_TEST_FAULTS": "late-red-box"},
                              "not the source's picture", "--verify-fraction", "1")


def test_the_trackers_data_and_the_bosss_work_are_private_even_in_an_existing_directory(tmp_path, users_data,
                                                                                        clips):
    """tracker.db holds every user's SCRAM keys: a copy plus one overheard login is a login."""
    c = Cluster(tmp_path / "shared-dir")
    shutil.copytree(users_data, c.data)
    c.data.chmod(0o755)
    for f in c.data.iterdir():
        f.chmod(0o644)
    c.start_tracker()
    try:
        c.start_worker()
        out = tmp_path / "out.mp4"
        done = c.boss(clips["small.mp4"], out, "--preset", "ultrafast", "--keep-work")
        assert done.returncode == 0, done.stderr
        work = tmp_path / ".out.mp4.ffdt-work"
        assert stat.S_IMODE(work.stat().st_mode) == 0o700
    finally:
        c.close()
    assert stat.S_IMODE(c.data.stat().st_mode) == 0o700
    files = {f.name: stat.S_IMODE(f.stat().st_mode) for f in c.data.iterdir()}
    assert {"tracker.db", "audit.jsonl", "secret.key"} <= set(files)
    assert all(mode == 0o600 for mode in files.values()), files


# ---------------------------------------------------------------- a hostile boss client

def hostile_boss_sessions(cluster, msg_port: int, count: int) -> tuple[list[dict], list[socket.socket]]:
    """Log in as boss `b`, start a job, get a ticket for the one worker, and open `count` sessions
    with it; returns each session's reply and the open sockets."""
    tracker = TrackerClient(("127.0.0.1", cluster.tracker_port), "b", PASSWORD, Role.BOSS, tls=pinning_context(),
                            pin=cluster.fingerprint)
    tracker.connect()
    job = tracker.job_start("x.mp4", Settings())
    [offer] = tracker.workers(job, 1, "libx264", [])
    replies, socks = [], []
    for _ in range(count):
        sock = connect(("127.0.0.1", msg_port), io_timeout=10, tls=pinning_context(), pin=offer["fingerprint"])
        socks.append(sock)
        client_hello(sock, Role.BOSS, "b")
        send_msg(sock, Msg.SESSION, ticket=offer["ticket"], settings=Settings().to_wire())
        replies.append(recv_msg(sock))
    tracker.close()
    return replies, socks


def test_a_ticket_opens_one_session(cluster):
    """One ticket, 100 sessions: before, each was a session with its threads and directory."""
    proc, msg_port, _ = cluster.start_worker()
    replies, socks = hostile_boss_sessions(cluster, msg_port, 5)
    try:
        assert replies[0]["type"] is Msg.SESSION_OK
        assert all(r["type"] is Msg.ERROR and "open already" in r["reason"] for r in replies[1:]), replies
    finally:
        for sock in socks:
            sock.close()


def test_a_boss_that_never_answers_does_not_hold_the_workers_places(cluster, clips, tmp_path):
    """The session asks for chunks and the boss stays silent: after REQUEST_ANSWER_TIMEOUT the
    worker ends that session, and a real boss then gets the worker's places."""
    proc, msg_port, _ = cluster.start_worker(extra_env={"FFDT_TEST_ANSWER_TIMEOUT": "2"})
    replies, socks = hostile_boss_sessions(cluster, msg_port, 1)
    try:
        assert replies[0]["type"] is Msg.SESSION_OK
        assert recv_msg(socks[0])["type"] is Msg.REQUEST            # a place held for us...
        started = time.monotonic()
        with pytest.raises(ConnectionClosed):
            while True:
                recv_msg(socks[0])                                  # ...until the worker gives up
        assert time.monotonic() - started < 8
        done = cluster.boss(clips["small.mp4"], tmp_path / "out.mp4", "--preset", "ultrafast")
        assert done.returncode == 0, done.stderr
    finally:
        socks[0].close()


def test_a_result_bigger_than_its_frames_uncompressed_is_refused_before_its_bytes(cluster, tmp_path):
    """Before: a result announced at up to 8 GiB was received without a look at its size."""
    src = tmp_path / "tiny.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=32x32:rate=25:duration=4", "-c:v", "libx264", "-preset", "ultrafast",
           "-g", "25", str(src))
    _, bad_port, _ = cluster.start_worker(extra_env={"FFDT_TEST_FAULTS": "bloated-results"})
    cluster.start_worker()
    out = tmp_path / "out.mp4"
    done = cluster.boss(src, out, "--preset", "ultrafast", "--chunk-seconds", "1")
    assert done.returncode == 0, done.stderr
    failed = events(cluster, "chunk_failed", worker=f"w@127.0.0.1:{bad_port}", by="boss")
    assert failed and all("more than its frames uncompressed" in e["detail"] for e in failed), ([e["detail"] for e in failed], done.stderr)
    assert not list(tmp_path.glob(".out.mp4.ffdt-work/*.recv.mkv"))


def test_a_worker_whose_encodes_differ_is_caught_by_a_second_encode(cluster, clips, tmp_path):
    """A worker that returns each chunk at a much lower quality passes the comparison with the
    source; with --recheck-fraction 1 a second worker alike re-encodes its chunks, the bytes
    differ, a third worker's match the second's, and the first is dropped and reported."""
    _, bad_port, _ = cluster.start_worker(extra_env={"FFDT_TEST_FAULTS": "subtle-results"})
    cluster.start_worker()
    cluster.start_worker()
    out, report = tmp_path / "out.mp4", tmp_path / "report.json"
    done = cluster.boss(clips["mid20.mp4"], out, "--preset", "ultrafast", "--chunk-seconds", "2",
                        "--recheck-fraction", "1", "--verify-fraction", "0", "--report", str(report))
    assert done.returncode == 0, done.stderr
    assert_same_media(clips["mid20.mp4"], out)
    bad = worker_name(bad_port)
    dropped = events(cluster, "worker_dropped", worker=bad)
    assert dropped and "differs from 2 other workers'" in dropped[0]["detail"], dropped
    assert json.loads(report.read_text())["rechecked"] >= 1
    assert not any(e.get("worker") != bad for e in events(cluster, "worker_dropped"))


def test_honest_workers_second_encodes_match(cluster, clips, tmp_path):
    """Two honest workers of one build: every chunk drawn is encoded twice, to the same bytes."""
    cluster.start_worker()
    cluster.start_worker()
    out, report = tmp_path / "out.mp4", tmp_path / "report.json"
    done = cluster.boss(clips["mid20.mp4"], out, "--preset", "ultrafast", "--chunk-seconds", "2",
                        "--recheck-fraction", "1", "--report", str(report))
    assert done.returncode == 0, done.stderr
    assert_same_media(clips["mid20.mp4"], out)
    assert json.loads(report.read_text())["rechecked"] >= 1
    assert not events(cluster, "worker_dropped")
