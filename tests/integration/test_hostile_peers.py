"""Hostile peers against real processes on loopback (issue: hostile peers). A boss or worker
turned hostile is played by a fault switch (client/faults.py) in an otherwise real process."""
from __future__ import annotations

import pytest

from tests.conftest import PASSWORD, audit_events, ffmpeg, poll_for, start_boss
from tests.integration.test_faults import assert_bad_worker_dropped, ffmpeg_of, held_worker

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
    failed = events(cluster, "chunk_failed")
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
    frames of every result with the source's."""
    assert_bad_worker_dropped(cluster, clips, tmp_path, {"FFDT_TEST_FAULTS": "red-box"}, "not the source's picture")
