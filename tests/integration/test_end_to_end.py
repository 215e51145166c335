"""A real tracker, real workers and a real boss on loopback, transcoding real media."""
from __future__ import annotations

import json

import pytest

from tests.conftest import assert_same_media, ffmpeg, probe, run_cli

pytestmark = pytest.mark.integration


def test_720p_clip_through_tracker_and_two_workers(cluster, clips, tmp_path):
    cluster.start_worker()
    cluster.start_worker()
    out = tmp_path / "out.mp4"
    report = tmp_path / "report.json"
    done = cluster.boss(clips["hd20.mp4"], out, "--preset", "ultrafast", "--chunk-seconds", "4",
                        "--report", str(report))
    assert done.returncode == 0, done.stderr
    assert_same_media(clips["hd20.mp4"], out)
    summary = json.loads(report.read_text())
    assert sum(w["chunks"] for w in summary["workers"].values()) == 5
    assert all(w["chunks"] > 0 for w in summary["workers"].values()), "both workers should share the work"
    assert not list(tmp_path.glob(".*ffdt-work")), "the work directory is removed after success"

    events = cluster.audit(summary["job"])
    kinds = [e["event"] for e in events]
    assert kinds[0] == "job_started" and kinds[-1] == "job_finished"
    assert events[-1]["status"] == "done"
    done_chunks = sorted(e["chunk"] for e in events if e["event"] == "chunk_done")
    assert done_chunks == [0, 1, 2, 3, 4]
    assigned = {e["chunk"] for e in events if e["event"] == "chunk_assigned"}
    assert assigned == set(done_chunks)
    encoded_by_workers = {e["chunk"] for e in events if e["event"] == "chunk_encoded" and e["by"] == "worker"}
    assert encoded_by_workers == set(done_chunks)


def test_results_are_compared_with_the_source_by_their_samples(cluster, clips, tmp_path):
    """Workers send the start of each result while they encode it (PROTOCOL.md, "sample"); the
    boss compares it with the source then, and the finished result that starts with the same bytes
    needs no comparison of its own: the output is as good as one ffmpeg run's."""
    cluster.start_worker()
    cluster.start_worker()
    out, report = tmp_path / "out.mkv", tmp_path / "report.json"
    # (an encode slow enough for a sample to be checked before its result comes)
    done = cluster.boss(clips["mid20.mp4"], out, "--preset", "medium", "--chunk-seconds", "5",
                        "--verify-fraction", "0", "--samples", "always", "--report", str(report))
    assert done.returncode == 0, done.stderr
    assert_same_media(clips["mid20.mp4"], out)
    workers = json.loads(report.read_text())["workers"].values()
    # four chunks: the first result's start is decoded (HEAD_FRAMES); of the others, those whose
    # sample came before their end
    early = sum(w["compared_early"] for w in workers)
    assert 1 <= early <= 3, list(workers)


def test_local_mode_needs_no_tracker(clips, tmp_path):
    out = tmp_path / "out.mkv"
    done = run_cli("client/boss.py", str(clips["hd20.mp4"]), "-o", str(out), "--local", "2",
                   "--preset", "ultrafast", "--quiet", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert_same_media(clips["hd20.mp4"], out)
    assert probe(out)["format"]["format_name"].startswith("matroska")


def test_scale_and_codec_settings_reach_every_chunk(cluster, clips, tmp_path):
    cluster.start_worker()
    cluster.start_worker()
    out = tmp_path / "small.mkv"
    done = cluster.boss(clips["small.mp4"], out, "--vcodec", "libx265", "--preset", "ultrafast",
                        "--scale", "160:-2", "--chunk-seconds", "1")
    assert done.returncode == 0, done.stderr
    video = assert_same_media(clips["small.mp4"], out, vcodec="hevc")["streams"][0]
    assert (video["width"], video["height"]) == (160, 120)


def test_runs_from_any_directory_with_relative_paths(cluster, clips, tmp_path):
    cluster.start_worker()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "in put 'é'.mp4").write_bytes(clips["small.mp4"].read_bytes())
    done = run_cli("client/boss.py", "in put 'é'.mp4", "-o", "out 'é'.mp4", "--tracker", cluster.addr,
                   "--user", "b", "--quiet", "--preset", "ultrafast", cwd=elsewhere)
    assert done.returncode == 0, done.stderr
    assert_same_media(clips["small.mp4"], elsewhere / "out 'é'.mp4")


def test_help_explains_each_program():
    for script, words in (("tracker/tracker.py", "serve"), ("client/worker.py", "MSG_PORT"),
                          ("client/boss.py", "--local")):
        done = run_cli(script, "--help", timeout=30)
        assert done.returncode == 0 and words in done.stdout


def test_hdr10_and_colour_tags_are_carried_with_libx265(tmp_path):
    from tests.conftest import ffmpeg as make
    src = tmp_path / "hdr.mkv"
    make("-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25:duration=3", "-c:v", "libx265",
         "-pix_fmt", "yuv420p10le", "-preset", "ultrafast", "-color_primaries", "bt2020", "-color_trc", "smpte2084",
         "-colorspace", "bt2020nc", "-x265-params",
         "hdr10=1:master-display=G(13250,34500)B(7500,3000)R(34000,16000)WP(15635,16450)L(10000000,50):"
         "max-cll=1000,400:log-level=error", str(src))
    out = tmp_path / "out.mkv"
    done = run_cli("client/boss.py", str(src), "-o", str(out), "--local", "2", "--vcodec", "libx265",
                   "--preset", "ultrafast", "--chunk-seconds", "1", "--quiet")
    assert done.returncode == 0, done.stderr
    video = assert_same_media(src, out, vcodec="hevc")["streams"][0]
    assert (video["pix_fmt"], video["color_primaries"], video["color_transfer"], video["color_space"]) == \
        ("yuv420p10le", "bt2020", "smpte2084", "bt2020nc")
    import subprocess
    side = json.loads(subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "v:0", "-read_intervals", "%+#1", "-show_entries",
         "frame_side_data", "-of", "json", str(out)], capture_output=True, text=True, check=True).stdout)
    kinds = {d["side_data_type"]: d for d in side["frames"][0]["side_data_list"]}
    assert kinds["Mastering display metadata"]["red_x"] == "34000/50000"
    assert kinds["Mastering display metadata"]["max_luminance"] == "10000000/10000"
    assert kinds["Content light level metadata"]["max_content"] == 1000


def test_a_long_input_in_many_chunks(tmp_path):
    """Thousands of chunks cost per chunk, not per chunk squared: this one makes 77 (a keyframe
    every 0.52 s, --chunk-seconds 0.5; kept small for the suite's time budget); 1,154 took 170 s
    on this 2-core box (README)."""
    src = tmp_path / "long.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=64x36:rate=25:duration=40", "-f", "lavfi", "-i", "sine=d=40",
           "-c:v", "libx264", "-preset", "ultrafast", "-g", "13", "-keyint_min", "13", "-c:a", "aac", str(src))
    out, report = tmp_path / "long.mkv", tmp_path / "report.json"
    done = run_cli("client/boss.py", str(src), "-o", str(out), "--local", "2", "--quiet", "--preset", "ultrafast",
                   "--chunk-seconds", "0.5", "--report", str(report), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    summary = json.loads(report.read_text())
    assert summary["chunks"] == 77 == sum(w["chunks"] for w in summary["workers"].values())
    # every result is checked by its packets, a sample decoded: the start of the ffmpeg build's
    # first, about a tenth of the rest in full (P(more than half) is far below 1e-15)
    decoded = sum(w["decoded_by_boss"] for w in summary["workers"].values())
    assert 1 <= decoded < 77 // 2, decoded
    timeline = summary["timeline"]
    assert 0 < timeline["first_assigned"] <= timeline["last_result"] <= timeline["finished"]
    assert_same_media(src, out)
