"""Encoders by capability: a worker offers only the encoders its ffmpeg opens here, and a boss
asking for one no worker has is told so in one line."""
from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess

import pytest

from tests.conftest import poll_for, run_cli


def listed_encoders() -> str:
    return subprocess.run(["ffmpeg", "-hide_banner", "-encoders"], capture_output=True, text=True).stdout


def offered(cluster) -> list[list[str]]:
    done = run_cli("tracker/tracker.py", "status", "--tracker", cluster.addr, "--user", "ada",
                   "--tracker-fingerprint", cluster.fingerprint, "--json", timeout=60)
    assert done.returncode == 0, done.stderr
    return [w["encoders"] for w in json.loads(done.stdout)["workers"]]


@pytest.mark.skipif(" h264_nvenc " not in listed_encoders(), reason="this ffmpeg build has no NVENC")
def test_a_listed_hardware_encoder_without_its_device_is_not_offered(cluster, clips, tmp_path):
    # Debian's ffmpeg lists NVENC and Quick Sync whether or not the machine has the hardware;
    # this machine has neither, so a one-frame test encode fails and the worker leaves them out
    cluster.add_user("ada", "admin")
    cluster.start_worker()
    [encoders] = poll_for(lambda: offered(cluster) or None, 30, "the worker registered")
    assert "libx264" in encoders and "libx265" in encoders
    assert not {"h264_nvenc", "hevc_nvenc", "h264_qsv", "hevc_qsv"} & set(encoders), encoders
    done = cluster.boss(clips["small.mp4"], tmp_path / "out.mp4", "--vcodec", "h264_nvenc", timeout=120)
    assert done.returncode == 1
    assert f"no live workers with h264_nvenc on tracker {cluster.addr}" in done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "out.mp4").exists()


def test_a_software_encoder_that_does_not_open_is_not_offered(cluster, clips, tmp_path):
    # an ffmpeg whose libx265 is broken (a wrapper around the real one): the worker says which
    # encoder it leaves out and why, offers the rest, and the rest still work
    cluster.add_user("ada", "admin")
    bindir = tmp_path / "bin"
    bindir.mkdir()
    real = shutil.which("ffmpeg")
    wrapper = bindir / "ffmpeg"
    wrapper.write_text("#!/bin/sh\ncase \" $* \" in *\" libx265 \"*) echo 'x265 [error]: broken build' >&2; exit 1;; esac\n"
                       f"exec {real} \"$@\"\n")
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    os.symlink(shutil.which("ffprobe"), bindir / "ffprobe")
    proc, _, _ = cluster.start_worker("--ffmpeg", str(wrapper))
    [encoders] = poll_for(lambda: offered(cluster) or None, 30, "the worker registered")
    assert "libx265" not in encoders and "libx264" in encoders, encoders
    refused = cluster.boss(clips["small.mp4"], tmp_path / "x265.mp4", "--vcodec", "libx265", timeout=120)
    assert refused.returncode == 1 and "no live workers with libx265" in refused.stderr
    done = cluster.boss(clips["small.mp4"], tmp_path / "x264.mp4", "--preset", "ultrafast", timeout=120)
    assert done.returncode == 0, done.stderr
    proc.terminate()
    said = proc.communicate(timeout=20)[1]
    assert "not offering libx265" in said and "broken build" in said, said