"""Many files in one boss run: a folder mirrored into OUTDIR, a failed file reported without
stopping the rest, and the same command again resuming the queue."""
from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys

from tests.conftest import ROOT, assert_same_media, audit_events, env, poll_for, run_cli


def queue(cluster, *args: str, timeout: float = 400):
    preset = [] if "--preset" in args else ["--preset", "ultrafast"]
    return run_cli("client/boss.py", *args, "--tracker", cluster.addr, "--user", "b", *preset,
                   *cluster.pin(args), timeout=timeout)


def test_a_folder_is_mirrored_a_bad_file_reported_and_the_queue_resumes(cluster, clips, tmp_path):
    cluster.start_worker()
    shows = tmp_path / "shows"
    (shows / "season 1").mkdir(parents=True)
    shutil.copy(clips["small.mp4"], shows / "season 1" / "ep1.mp4")
    shutil.copy(clips["mid20.mp4"], shows / "ep0.mkv")
    (shows / "broken.mov").write_bytes(b"not a video at all\n" * 100)
    (shows / "notes.txt").write_text("not a video, not queued\n")
    out = tmp_path / "out"
    report = tmp_path / "queue.json"

    first = queue(cluster, str(shows), "--recursive", "-o", f"{out}/", "--report", str(report))
    # the bad file fails; the others are written all the same, with the sub-folder mirrored
    assert first.returncode == 1, first.stderr
    assert_same_media(shows / "season 1" / "ep1.mp4", out / "season 1" / "ep1.mp4")
    assert_same_media(shows / "ep0.mkv", out / "ep0.mp4")
    assert not (out / "broken.mp4").exists() and not (out / "notes.mp4").exists()
    assert "broken.mov: failed: not a media file" in first.stderr
    assert "queue: 2 done, 0 skipped (already there), 1 failed" in first.stderr
    rows = {r["input"]: r for r in json.loads(report.read_text())["files"]}
    assert {r["status"] for r in rows.values()} == {"done", "failed"}
    assert rows[str(shows / "season 1" / "ep1.mp4")]["frames"] == 150
    assert not list(out.rglob(".*ffdt-work")), "a finished file's work directory is left behind"

    # the same command again: the finished files are skipped, untouched
    stamp = (out / "ep0.mp4").stat().st_mtime_ns
    again = queue(cluster, str(shows), "--recursive", "-o", str(out))
    assert again.returncode == 1
    assert "queue: 0 done, 2 skipped (already there), 1 failed" in again.stderr
    assert (out / "ep0.mp4").stat().st_mtime_ns == stamp

    # one file into a folder that does not exist yet: written as OUTDIR/, it is a queue of one
    single = queue(cluster, str(shows / "season 1" / "ep1.mp4"), "-o", f"{tmp_path / 'new'}/")
    assert single.returncode == 0, single.stderr
    assert_same_media(shows / "season 1" / "ep1.mp4", tmp_path / "new" / "ep1.mp4")

    # without --recursive a folder's own files only; files and folders mix, in the order given
    flat = tmp_path / "flat"
    only = queue(cluster, str(shows / "season 1" / "ep1.mp4"), str(shows), "--extensions", "mkv",
                 "-o", str(flat), "--container", "mkv")
    assert only.returncode == 0, only.stderr
    assert sorted(p.name for p in flat.iterdir()) == ["ep0.mkv", "ep1.mkv"]
    assert_same_media(shows / "season 1" / "ep1.mp4", flat / "ep1.mkv")


def test_queue_mistakes_are_one_line_before_any_work(cluster, clips, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for d in (a, b):
        d.mkdir()
        shutil.copy(clips["small.mp4"], d / "clip.mp4")
    clash = queue(cluster, str(a), str(b), "-o", str(tmp_path / "out"))
    assert clash.returncode == 1 and "would both be written to" in clash.stderr
    missing = queue(cluster, str(a), str(tmp_path / "nope"), "-o", str(tmp_path / "out"))
    assert missing.returncode == 1 and "nope: no such file or folder" in missing.stderr
    afile = tmp_path / "out.mp4"
    afile.write_bytes(b"x")
    not_dir = queue(cluster, str(a), str(b / "clip.mp4"), "-o", str(afile))
    assert not_dir.returncode == 1 and "is not a folder" in not_dir.stderr
    as_file = queue(cluster, str(a), "-o", str(tmp_path / "new.mkv"))        # a folder into a file name
    assert as_file.returncode == 1 and "is not a folder" in as_file.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    nothing = queue(cluster, str(empty), "-o", str(tmp_path / "out2"))
    assert nothing.returncode == 1 and "nothing to transcode" in nothing.stderr
    for done in (clash, missing, not_dir, as_file, nothing):
        assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) <= 3, done.stderr
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_the_next_file_starts_while_the_last_ones_tail_is_encoded(cluster, clips, tmp_path):
    # five 4 s chunks on two workers: the last round is one chunk, and the worker without one
    # takes the next file's first chunks instead of idling
    for _ in range(2):
        cluster.start_worker()
    report = tmp_path / "queue.json"
    first, second = tmp_path / "a.mp4", tmp_path / "b.mp4"
    shutil.copy(clips["mid20.mp4"], first)
    shutil.copy(clips["small.mp4"], second)
    done = queue(cluster, str(first), str(second), "-o", str(tmp_path / "out"), "--chunk-seconds", "4",
                 "--preset", "medium", "--report", str(report))
    assert done.returncode == 0, done.stderr
    a, b = json.loads(report.read_text())["files"]
    assert (a["status"], b["status"]) == ("done", "done")
    assert b["first_chunk_out"] < a["ended"], (a, b)
    assert_same_media(first, tmp_path / "out" / "a.mp4")
    assert_same_media(second, tmp_path / "out" / "b.mp4")


def test_a_stopped_queue_keeps_its_work_and_the_same_command_finishes_it(cluster, clips, tmp_path):
    cluster.start_worker()
    first, second = tmp_path / "a.mp4", tmp_path / "b.mp4"
    shutil.copy(clips["mid20.mp4"], first)
    shutil.copy(clips["small.mp4"], second)
    out = tmp_path / "out"
    args = [str(first), str(second), "-o", str(out), "--chunk-seconds", "4", "--preset", "medium"]
    boss = subprocess.Popen([sys.executable, str(ROOT / "client/boss.py"), *args, "--tracker", cluster.addr,
                             "--user", "b", *cluster.pin(())], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env())
    poll_for(lambda: [e for e in audit_events(cluster.data) if e["event"] == "chunk_done"], 120, "a first chunk done")
    boss.send_signal(signal.SIGTERM)              # as `kill` or systemd stops it: the Ctrl-C path
    _, err = boss.communicate(timeout=60)
    assert boss.returncode == 130, err
    assert "a.mp4  interrupted" in err and "run the same command again to go on" in err
    assert (out / ".a.mp4.ffdt-work" / "state.json").exists() and not (out / "a.mp4").exists()
    again = queue(cluster, *args)
    assert again.returncode == 0, again.stderr
    assert re.search(r"resuming: [1-4] of 5 chunks already done", again.stderr), again.stderr
    assert "queue: 2 done, 0 skipped (already there), 0 failed" in again.stderr
    assert_same_media(first, out / "a.mp4")
    assert_same_media(second, out / "b.mp4")
