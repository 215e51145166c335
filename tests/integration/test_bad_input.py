"""Each bad input ends with one clear line on stderr, a non-zero exit and nothing at OUTPUT."""
from __future__ import annotations

import socket
import subprocess
import sys

import pytest

from tests.conftest import ROOT, env, ffmpeg, run_cli

pytestmark = pytest.mark.integration


def assert_clean_failure(done: subprocess.CompletedProcess, *needles: str) -> str:
    assert done.returncode != 0
    assert "Traceback" not in done.stderr, done.stderr
    errors = [line for line in done.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1, done.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


@pytest.fixture
def live(cluster):
    cluster.start_worker()
    return cluster


def test_missing_file(live, tmp_path):
    out = tmp_path / "o.mp4"
    assert_clean_failure(live.boss(tmp_path / "nope.mp4", out), "no such file")
    assert not out.exists()


def test_not_media(live, tmp_path):
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"this is not a video\n" * 100)
    out = tmp_path / "o.mp4"
    assert_clean_failure(live.boss(junk, out), "not a media file")
    assert not out.exists()


def test_audio_only(live, tmp_path):
    src = tmp_path / "a.m4a"
    ffmpeg("-f", "lavfi", "-i", "sine=duration=2", "-c:a", "aac", str(src))
    out = tmp_path / "o.mp4"
    assert_clean_failure(live.boss(src, out), "no video stream")
    assert not out.exists()


@pytest.mark.parametrize("faststart", [False, True], ids=["moov-at-end", "moov-first"])
def test_truncated(live, clips, tmp_path, faststart):
    full = tmp_path / "full.mp4"
    ffmpeg("-i", str(clips["hd20.mp4"]), "-c", "copy", *(["-movflags", "+faststart"] if faststart else []),
           str(full))
    data = full.read_bytes()
    src = tmp_path / "cut.mp4"
    src.write_bytes(data[: len(data) // 3])
    out = tmp_path / "o.mp4"
    assert_clean_failure(live.boss(src, out, "--preset", "ultrafast"), str(src.name))
    assert not out.exists()


def test_wrong_password_is_refused_and_audited(live, clips, tmp_path):
    out = tmp_path / "o.mp4"
    assert_clean_failure(live.boss(clips["small.mp4"], out, password="wrong"), "wrong user name or password")
    assert not out.exists()
    failures = [e for e in live.audit() if e["event"] == "auth_failed"]
    assert failures and failures[-1]["user"] == "b"
    assert "wrong" not in live.data.joinpath("audit.jsonl").read_text()


def test_unknown_user_is_refused(live, clips, tmp_path):
    assert_clean_failure(live.boss(clips["small.mp4"], tmp_path / "o.mp4", user="nobody"),
                         "wrong user name or password")


def test_unreachable_tracker(clips, tmp_path):
    with socket.socket() as s:      # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "o.mp4"
    done = run_cli("client/boss.py", str(clips["small.mp4"]), "-o", str(out), "--tracker", f"127.0.0.1:{port}",
                   "--user", "b", "--quiet")
    assert_clean_failure(done, "unreachable")
    assert not out.exists()


def test_no_live_workers(cluster, clips, tmp_path):
    out = tmp_path / "o.mp4"
    assert_clean_failure(cluster.boss(clips["small.mp4"], out), "no live workers")
    assert not out.exists()


def test_worker_port_in_use(live, tmp_path):
    _, msg_port, _ = live.workers[0]
    done = run_cli("client/worker.py", str(msg_port), "0", "--tracker", live.addr, "--user", "w",
                   "--host", "127.0.0.1", timeout=60)
    assert_clean_failure(done, "in use")
    assert not (tmp_path / "d2").exists(), "a tracker that could not listen left its data dir behind"


def test_tracker_port_in_use(cluster, tmp_path):
    done = run_cli("tracker/tracker.py", "serve", "--host", "127.0.0.1", "--port", str(cluster.tracker_port),
                   "--data-dir", str(tmp_path / "d2"), timeout=60)
    assert_clean_failure(done, "in use")


def test_impossible_container_combination_refused_before_work(live, clips, tmp_path):
    out = tmp_path / "o.mov"
    assert_clean_failure(live.boss(clips["small.mp4"], out, "--vcodec", "libvpx-vp9"), "cannot hold vp9")
    assert not out.exists()


def test_worker_with_wrong_password_exits(cluster):
    proc = subprocess.run([sys.executable, str(ROOT / "client/worker.py"), "0", "0", "--tracker", cluster.addr,
                           "--user", "w", "--host", "127.0.0.1"], env=env("wrong"), capture_output=True,
                          text=True, timeout=60)
    assert_clean_failure(proc, "refused")


def test_password_never_on_disk_or_in_the_log(live, clips, tmp_path):
    from tests.conftest import PASSWORD
    for path in live.data.iterdir():
        assert PASSWORD.encode() not in path.read_bytes(), path
