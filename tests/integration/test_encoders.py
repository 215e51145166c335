"""Encoders by capability: a worker offers only the encoders its ffmpeg opens here, and a boss
asking for one no worker has is told so in one line."""
from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess

import pytest

from tests.conftest import audit_events, poll_for, run_cli


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
    assert not {"h264_nvenc", "hevc_nvenc", "h264_qsv", "hevc_qsv", "h264_vaapi", "hevc_vaapi"} & set(encoders), \
        encoders
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
    said = proc.communicate(timeout=20)[1]     # a software encoder that fails is a warning, even with --quiet
    assert "not offering libx265" in said and "broken build" in said, said

def video_stream(path) -> dict:
    out = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_streams", "-of", "json", str(path)],
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out)["streams"][0]


def picture_types(path) -> list[str]:
    out = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries", "frame=pict_type",
                          "-of", "csv=p=0", str(path)], capture_output=True, text=True, check=True).stdout
    return [line.strip() for line in out.splitlines() if line.strip()]


@pytest.mark.parametrize("vcodec, tuning, profile, level, written", [
    ("libx264", ["--tune", "film", "--profile", "main", "--level", "3.1", "--x264-params", "bframes=0:ref=1"],
     "Main", 31, [b"bframes=0", b"ref=1", b"psy_rd=1.00:0.15"]),       # film: psy-rd 1.0:0.15
    ("libx265", ["-profile:v", "main", "-level", "4.1", "-x265-params", "bframes=0:sao=0"],
     "Main", 123, [b"bframes=0", b"no-sao"]),
])
def test_tuning_reaches_every_chunk(cluster, clips, tmp_path, vcodec, tuning, profile, level, written):
    cluster.start_worker()
    out = tmp_path / "out.mkv"
    # veryfast: B-frames by default in both encoders, so a chunk encoded without the parameters shows
    done = cluster.boss(clips["small.mp4"], out, "--vcodec", vcodec, "--preset", "veryfast", "--chunk-seconds", "2",
                        *tuning)
    assert done.returncode == 0, done.stderr
    stream = video_stream(out)
    assert (stream["profile"], stream["level"]) == (profile, level)
    types = picture_types(out)
    assert len(types) == 150 and "B" not in types, types
    data = out.read_bytes()       # the encoder's options, as it wrote them (the first chunk's header)
    assert all(option in data for option in written), written
    # and without the parameters the same encode has B-frames: the check above can fail
    plain = tmp_path / "plain.mkv"
    assert cluster.boss(clips["small.mp4"], plain, "--vcodec", vcodec, "--preset", "veryfast",
                        "--chunk-seconds", "2").returncode == 0
    assert "B" in picture_types(plain)


def test_tuning_the_encoder_refuses_is_one_line_before_any_work(cluster, clips, tmp_path):
    cluster.start_worker()
    done = cluster.boss(clips["small.mp4"], tmp_path / "out.mp4", "--profile", "baseline", "--pix-fmt", "yuv444p",
                        timeout=120)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == \
        "boss: error: libx264 does not open with these settings: x264 [error]: baseline profile doesn't support 4:4:4"
    # before any work: no job was started at the tracker, no chunk went out
    assert not [e for e in audit_events(cluster.data) if e["event"] in ("job_started", "chunk_assigned")]
