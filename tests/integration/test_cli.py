"""The command lines as a user meets them: ffmpeg's habits, existing outputs, usage errors,
--help, pipes, and a python3 without the project's packages."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.conftest import ROOT, audit_events, env, poll_for, probe, run_cli, start_boss

pytestmark = pytest.mark.integration

PROGRAMS = ["client/boss.py", "client/worker.py", "tracker/tracker.py"]


@pytest.fixture
def live(cluster):
    cluster.start_worker()
    return cluster


def test_an_existing_output_is_kept_unless_y(live, clips, tmp_path):
    out = tmp_path / "out.mp4"
    out.write_bytes(b"precious")
    for flags in ([], ["-n"]):
        done = live.boss(clips["small.mp4"], out, "--preset", "ultrafast", *flags)
        assert done.returncode == 1 and "exists: pass -y to replace it" in done.stderr, done.stderr
        assert out.read_bytes() == b"precious"
    done = live.boss(clips["small.mp4"], out, "--preset", "ultrafast", "-y")
    assert done.returncode == 0, done.stderr
    assert probe(out)["streams"][0]["codec_name"] == "h264"


def test_ffmpegs_spellings_and_a_fractional_crf(live, clips, tmp_path):
    """`-i IN ... OUT` with ffmpeg's option names; x264 records the CRF it was given in its
    stream (the SEI with its settings), so 22.5 must reach every worker's encoder as 22.5."""
    out = tmp_path / "out.mkv"
    done = run_cli("client/boss.py", "-i", str(clips["small.mp4"]), "-c:v", "libx264", "-crf", "22.5",
                   "-preset", "ultrafast", "-c:a", "aac", "-b:a", "96k", "--tracker", live.addr, "--user", "b",
                   "--quiet", *live.pin(()), str(out))
    assert done.returncode == 0, done.stderr
    assert b"crf=22.5" in out.read_bytes()
    audio = [s for s in probe(out)["streams"] if s["codec_type"] == "audio"]
    assert audio and audio[0]["codec_name"] == "aac"


@pytest.mark.parametrize("args,needle", [
    (["--crf-typo", "5"], "unrecognized arguments"),
    (["in.mp4", "-o", "out.mp4", "--presett", "slow"], "(did you mean --preset?)"),
    (["in.mp4"], "no OUTPUT"),
    (["-i", "a.mp4", "b.mp4", "-o", "c.mp4"], "give the input once"),
    (["in.mp4", "-o", "out.webm", "--vcodec", "libvpx-vp9", "--crf", "30.5", "--local", "1"], "whole numbers"),
    (["in.mp4", "-o", "out.webm", "--vcodec", "libvpx-vp9", "--recheck-fraction", "0.1", "--local", "1"],
     "--recheck-fraction needs libx264 or libx265"),
], ids=["typo", "typo-suggested", "no-output", "two-inputs", "fractional-vp9", "recheck-vp9"])
def test_a_usage_error_is_two_lines_at_most(args, needle, tmp_path):
    done = run_cli("client/boss.py", *args, cwd=tmp_path)
    assert done.returncode in (1, 2) and "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) <= 2 and needle in lines[0], done.stderr


@pytest.mark.parametrize("program,command", [("client/boss.py", []), ("client/worker.py", []),
                                             ("tracker/tracker.py", ["serve"])])
def test_help_shows_real_defaults_and_never_none(program, command):
    done = run_cli(program, *command, "--help")
    assert done.returncode == 0
    assert "(default: None)" not in done.stdout and "(default: False)" not in done.stdout
    assert done.stdout.count("(default:") >= 1, done.stdout


def test_boss_help_names_the_encoders_defaults():
    text = " ".join(run_cli("client/boss.py", "--help").stdout.split())
    assert "23 for libx264" in text and "medium for x264/x265" in text and "128k for aac" in text


def test_a_closed_pipe_ends_quietly():
    """`tracker.py logs | head`: the reader leaving early is not an error."""
    code = ("import sys; sys.path.insert(0, %r); from ffdt.common.cli import run_main; "
            "sys.exit(run_main('t', lambda: [print('x' * 100) for _ in range(100000)] and 0))" % str(ROOT))
    done = subprocess.run(f"{sys.executable} -c \"{code}\" | head -c 10 >/dev/null; exit ${{PIPESTATUS[0]}}",
                          shell=True, executable="/bin/bash", capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stderr == "", done.stderr


def system_python_lacks_our_packages() -> bool:
    python = shutil.which("python3", path="/usr/bin:/bin")
    return python is not None and subprocess.run([python, "-c", "import progressbar, scramp"],
                                                 capture_output=True).returncode != 0


@pytest.mark.skipif(not system_python_lacks_our_packages(), reason="the system python3 has the packages")
@pytest.mark.parametrize("program", PROGRAMS)
def test_any_python3_finds_the_environment_or_says_what_to_run(program, tmp_path):
    python = shutil.which("python3", path="/usr/bin:/bin")
    if (ROOT / ".venv").is_dir():          # the checkout has its environment: it is used
        done = subprocess.run([python, str(ROOT / program), "--version"], capture_output=True, text=True,
                              timeout=60, env=env())
        assert done.returncode == 0 and "0." in done.stdout, done.stderr
    bare = tmp_path / "checkout"            # a checkout without one: one line, no traceback
    for part in ("client", "common", "tracker", "ffdt"):
        shutil.copytree(ROOT / part, bare / part, ignore=shutil.ignore_patterns("ffmpeg", "__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", bare)
    done = subprocess.run([python, str(bare / program), "--help"], capture_output=True, text=True, timeout=60,
                          env=env())
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "scripts/setup-env" in done.stderr, done.stderr


def test_scripts_install_puts_the_three_programs_on_a_path(tmp_path):
    """One command for any machine of the farm: the wrappers run the checkout's code with its
    environment, from any directory, with any PATH."""
    bin_dir = tmp_path / "bin"
    done = subprocess.run([str(ROOT / "scripts/install"), "--bin", str(bin_dir)], capture_output=True, text=True,
                          timeout=300, env=env())
    assert done.returncode == 0, done.stderr
    for name in ("ffdt-tracker", "ffdt-worker", "ffdt-boss"):
        ran = subprocess.run([str(bin_dir / name), "--version"], capture_output=True, text=True, timeout=60,
                             cwd=tmp_path, env={"PATH": "/usr/bin:/bin"})
        assert ran.returncode == 0 and ran.stdout.startswith(name), ran.stderr


@pytest.mark.parametrize("script", ["bench", "parity", "soak", "install", "tracker-load"])
def test_the_scripts_explain_themselves(script):
    """The benchmark and measurement scripts are not run whole by the suite (minutes each): at
    least they parse and answer --help."""
    done = subprocess.run([str(ROOT / "scripts" / script), "--help"], capture_output=True, text=True, timeout=60,
                          env=env())
    assert done.returncode == 0 and "Traceback" not in done.stderr and len(done.stdout) > 100, done.stderr


def test_tracker_load_registers_every_simulated_worker(tmp_path):
    """scripts/tracker-load (the README's load figures) against a real tracker, small: every
    simulated worker logs in from its own address, registers and heartbeats; then the tracker
    restarts under them and each registers again by the worker's own loop, once, within a beat
    and the random spread; nothing left behind."""
    out = tmp_path / "load.json"
    before = set(Path(tempfile.gettempdir()).glob("ffdt-load-*"))
    done = subprocess.run([str(ROOT / "scripts/tracker-load"), "--workers", "40", "--procs", "2", "--beats", "1",
                           "--restart", "--json", str(out), "--timeout", "90"], capture_output=True, text=True,
                          timeout=200, env=env())
    assert done.returncode == 0, done.stdout + done.stderr
    summary = json.loads(out.read_text())["summary"]
    assert summary["registered"] == 40 and summary["errors"] == []
    runs = json.loads(out.read_text())["runs"]
    assert len({r["index"] for r in runs}) == 40 and all(len(r["beats"]) == 1 for r in runs)
    assert "40 of 40 simulated workers registered" in done.stdout
    again = json.loads(out.read_text())["again"]
    assert summary["restart"]["registered_again"] == 40 and summary["restart"]["errors"] == []
    assert sorted(r["index"] for r in again) == list(range(40))
    spread = max(r["registered_at"] for r in again) - min(r["registered_at"] for r in again)
    assert 1.0 < spread and summary["restart"]["all_registered_again_s"] < 5 + 10 + 5      # a beat, the spread, slack
    assert set(Path(tempfile.gettempdir()).glob("ffdt-load-*")) == before


def write_config(tmp_path: Path, text: str) -> Path:
    directory = tmp_path / "config"
    directory.mkdir(exist_ok=True)
    (directory / "config.toml").write_text(text, encoding="utf-8")
    return directory


def test_a_worker_takes_its_tracker_user_and_slots_from_the_config_file(cluster, tmp_path):
    """README, Config file: the worker's command line shrinks to its ports."""
    directory = write_config(tmp_path, f'tracker = "{cluster.addr}"\ntracker-fingerprint = "{cluster.fingerprint}"\n'
                                       '[worker]\nuser = "w"\nslots = 2\nhost = "127.0.0.1"\n')
    proc = subprocess.Popen([sys.executable, str(ROOT / "client/worker.py"), "0", "0", "--quiet"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env(FFDT_CONFIG_DIR=str(directory)))
    cluster.procs.append(proc)
    registered = poll_for(lambda: [e for e in audit_events(cluster.data) if e["event"] == "register"], 60,
                          "the worker registering")
    assert registered[0]["user"] == "w" and registered[0]["slots"] == 2


def test_the_tracker_serves_and_the_admin_looks_with_the_config_file(cluster, tmp_path):
    """[serve] sets `ffdt-tracker serve`'s options (port, data dir); the top-level keys, `status`'s."""
    cluster.add_user("ada", "admin")
    cluster.start_worker()
    data = tmp_path / "second-tracker"
    directory = write_config(tmp_path, f'tracker = "{cluster.addr}"\ntracker-fingerprint = "{cluster.fingerprint}"\n'
                                       f'user = "ada"\n[serve]\nport = 0\nhost = "127.0.0.1"\n'
                                       f'data-dir = "{data}"\n')
    looked = run_cli("tracker/tracker.py", "status", "--json", timeout=60, extra_env={"FFDT_CONFIG_DIR": str(directory)})
    assert looked.returncode == 0, looked.stderr
    assert len(json.loads(looked.stdout)["workers"]) == 1
    tracker = subprocess.Popen([sys.executable, str(ROOT / "tracker/tracker.py"), "serve"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=env(FFDT_CONFIG_DIR=str(directory)))
    cluster.procs.append(tracker)
    poll_for(lambda: (data / "tracker.db").exists(), 30, "the tracker making its data dir from the config file")
    (tmp_path / "bad").mkdir()
    bad = write_config(tmp_path / "bad", '[serve]\nprot = 9000\n')
    refused = run_cli("tracker/tracker.py", "serve", timeout=60, extra_env={"FFDT_CONFIG_DIR": str(bad)})
    assert refused.returncode == 2 and "unknown setting 'prot'" in refused.stderr


@pytest.mark.parametrize("text, says", [
    ('[worker]\nsltos = 2\n', "unknown setting 'sltos'"),
    ('[worker]\npassword = "hunter2"\n', "no passwords in the config file"),
    ('[worker]\nslots = "many"\n', "slots"),
    ('[worker]\nslots = 2.5\n', "slots must be a whole number"),
    ('slots = 2\n', "at the top level"),
    ('[wroker]\nuser = "w"\n', "unknown table [wroker]"),
    ('tracker = \n', "not valid TOML"),
])
def test_a_bad_config_file_is_one_clear_line(tmp_path, text, says):
    directory = write_config(tmp_path, text)
    done = run_cli("client/worker.py", "0", "0", "--tracker", "127.0.0.1:9", "--user", "w", timeout=60,
                   extra_env={"FFDT_CONFIG_DIR": str(directory)})
    assert done.returncode == 2 and says in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) <= 2


def test_the_config_file_sets_the_defaults_help_shows_and_a_named_file_must_exist(tmp_path):
    directory = write_config(tmp_path, '[boss]\nwait-workers = 99\n')
    done = run_cli("client/boss.py", "--help", extra_env={"FFDT_CONFIG_DIR": str(directory)}, timeout=60)
    options = done.stdout.split("\noptions:", 1)[1]
    assert "(default: 99.0)" in options.split("--wait-workers", 1)[1].split("\n  -", 1)[0]
    missing = run_cli("client/boss.py", "in.mp4", "--config", str(tmp_path / "nope.toml"), timeout=60)
    assert missing.returncode == 2 and "no such config file" in missing.stderr


def test_a_second_boss_on_the_same_output_is_refused_at_once(cluster, clips, tmp_path):
    env_hold = {"FFDT_TEST_FAULTS": "hold", "FFDT_TEST_RELEASE": str(tmp_path / "release")}
    cluster.start_worker(extra_env=env_hold)
    out = tmp_path / "out.mp4"
    first = start_boss(cluster, clips["small.mp4"], out)
    try:
        poll_for(lambda: list(tmp_path.glob("release.held.*")), 60, "the first boss's chunk being encoded")
        second = cluster.boss(clips["small.mp4"], out, timeout=60)
        assert second.returncode == 1 and "another boss is already writing" in second.stderr, second.stderr
        assert len(second.stderr.strip().splitlines()) == 1
    finally:
        (tmp_path / "release").touch()
    _, err = first.communicate(timeout=240)
    assert first.returncode == 0, err                 # the first one was not disturbed
    assert out.exists() and not list(tmp_path.glob(".out.mp4.ffdt-*"))   # no lock or work left behind


def test_pip_install_puts_everything_under_one_package_of_our_name(tmp_path):
    """Installed, the code is ffdt.client, ffdt.common and ffdt.tracker (no top-level `client`
    to clash with other projects), the three programs run, and the build leaves nothing behind."""
    before = sorted(p.name for p in ROOT.iterdir())
    target, scratch = tmp_path / "site", tmp_path / "tmp"
    scratch.mkdir()
    done = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                           "--target", str(target), str(ROOT)], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "TMPDIR": str(scratch)})
    assert done.returncode == 0, done.stderr
    assert not list(scratch.glob("ffdt-build-*"))        # setup.py's build scratch is gone too
    assert sorted(p.name for p in target.iterdir() if not p.name.endswith(".dist-info")) == ["bin", "ffdt"]
    assert sorted(p.name for p in (target / "ffdt").iterdir() if p.name != "__pycache__") == \
        ["__init__.py", "client", "common", "tracker"]
    assert (target / "ffdt" / "common" / "PROTOCOL.md").is_file()
    for prog in ("ffdt-boss", "ffdt-worker", "ffdt-tracker"):
        ran = subprocess.run([str(target / "bin" / prog), "--version"], capture_output=True, text=True, timeout=60,
                             cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(target)})
        assert ran.returncode == 0 and ran.stdout.startswith(f"{prog} "), ran.stderr
    assert sorted(p.name for p in ROOT.iterdir()) == before      # no build/, no *.egg-info


def test_a_split_that_hands_out_nothing_until_done_says_how_far_it_is(cluster, tmp_path):
    """One keyframe in 8 s and 2 s chunks: every chunk is a frame range, cut only once the whole
    split is done (no streaming split), so the split reports its own progress in frames."""
    src = tmp_path / "one-gop.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25:duration=8",
                    "-c:v", "libx264", "-preset", "ultrafast", "-g", "1000", str(src)], check=True, timeout=60)
    cluster.start_worker()
    done = run_cli("client/boss.py", str(src), "-o", str(tmp_path / "out.mp4"), "--tracker", cluster.addr,
                   "--user", "b", "--preset", "ultrafast", "--chunk-seconds", "2", "--progress", "json", "--quiet",
                   *cluster.pin(()))
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    cut = [e for e in lines if e["event"] == "phase_progress" and e["phase"] == "split"]
    assert cut and all(0 <= e["done"] <= e["total"] == 200 for e in cut)
    assert [e for e in lines if e["event"] == "progress"][-1]["chunks"] == 4


def test_progress_json_lines_for_scripts(cluster, clips, tmp_path):
    """--progress json: stdout is one JSON object a line: the phases in order, progress while
    chunks are encoded (frames never going back, per worker), and the file's end."""
    for _ in range(2):
        cluster.start_worker()
    out = tmp_path / "out.mp4"
    done = run_cli("client/boss.py", str(clips["mid20.mp4"]), "-o", str(out), "--tracker", cluster.addr, "--user", "b",
                   "--preset", "medium", "--chunk-seconds", "4", "--progress", "json", "--quiet", *cluster.pin(()))
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]       # every line is JSON
    assert all(e["file"] == str(clips["mid20.mp4"]) for e in lines)
    phases = [e["phase"] for e in lines if e["event"] == "phase"]
    assert phases[0] == "probe" and phases[-1] == "join" and phases.index("split") < phases.index("join")
    # the probe's and the output check's reads of the packets say how far they are, in seconds
    # (1,540 packets each: one line a read)
    [read, check] = [e for e in lines if e["event"] == "phase_progress"]
    assert read["phase"] == "probe" and 0 < read["done"] <= read["total"] and abs(read["total"] - 20) < 0.1
    assert lines.index(read) < next(i for i, e in enumerate(lines) if e.get("phase") == "split")
    assert check["phase"] == "join" and 0 < check["done"] <= check["total"] and abs(check["total"] - 20) < 0.1
    assert lines.index(check) > next(i for i, e in enumerate(lines) if e.get("phase") == "join")
    progress = [e for e in lines if e["event"] == "progress"]
    assert progress, "no progress line in a job of several seconds"
    done_frames = [e["frames_done"] for e in progress]
    assert done_frames == sorted(done_frames) and all(0 <= f <= 600 for f in done_frames)
    assert all(e["frames"] == 600 and e["chunks"] <= 5 for e in progress)
    assert {w["worker"] for e in progress for w in e["workers"]} and all(
        set(w) == {"worker", "chunks_done", "frames_done", "chunk", "chunk_progress", "chunk_frames"}
        and 0 <= w["chunk_progress"] <= w["chunk_frames"] for e in progress for w in e["workers"])
    assert lines[-1]["event"] == "done" and lines[-1]["frames"] == 600 and lines[-1]["output"] == str(out)
    failed = run_cli("client/boss.py", str(tmp_path / "missing.mp4"), "-o", str(tmp_path / "x.mp4"), "--tracker",
                     cluster.addr, "--user", "b", "--progress", "json", *cluster.pin(()))
    assert failed.returncode == 1
    [last] = [json.loads(line) for line in failed.stdout.splitlines()][-1:]
    assert last["event"] == "failed" and "no such file" in last["error"]
