"""Fixtures shared by the unit and integration tests: the repo on sys.path, generated clips,
and real tracker/worker processes on ephemeral loopback ports."""
from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def _shared_media() -> Path:
    """The team's real clips: $FFDT_SHARED_MEDIA, else ../shared/media beside the checkout, else /work's."""
    for candidate in (os.environ.get("FFDT_SHARED_MEDIA"), ROOT.parent / "shared" / "media", "/work/shared/media"):
        if candidate and Path(candidate, "MANIFEST.md").is_file():
            return Path(candidate).resolve()
    return (ROOT.parent / "shared" / "media").resolve()


SHARED_MEDIA = _shared_media()
PASSWORD = "correct horse battery staple"
HAVE_FFMPEG = shutil.which("ffmpeg") is not None and shutil.which("ffprobe") is not None
LISTENING = re.compile(r"listening on (\S+):(\d+)(?: file port (\d+))?")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    skip = pytest.mark.skip(reason="ffmpeg/ffprobe not installed")
    for item in items:
        if "integration" in item.keywords and not HAVE_FFMPEG:
            item.add_marker(skip)


def ffmpeg(*args: str, timeout: float = 120) -> None:
    subprocess.run(["ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error", "-y", *args],
                   check=True, timeout=timeout)


@pytest.fixture(scope="session", autouse=True)
def own_config_dir(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Keys trusted on first use go to a directory of the test run's, never ~/.config."""
    os.environ["FFDT_CONFIG_DIR"] = str(tmp_path_factory.mktemp("config"))


@pytest.fixture(scope="session")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Generated inputs, made once per session."""
    d = tmp_path_factory.mktemp("clips")
    made: dict[str, Path] = {}

    def make(name: str, *args: str) -> None:
        made[name] = d / name
        ffmpeg(*args, str(d / name))

    # 20 s 1280x720 with audio, a keyframe every second: the "Done when" clip
    make("hd20.mp4", "-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=30:duration=20",
         "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000:duration=20",
         "-c:v", "libx264", "-preset", "ultrafast", "-g", "30", "-pix_fmt", "yuv420p",
         "-c:a", "aac", "-shortest")
    # 20 s 640x360 with audio: fault tests encode it slowly enough to strike mid-chunk
    make("mid20.mp4", "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=30:duration=20",
         "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000:duration=20",
         "-c:v", "libx264", "-preset", "ultrafast", "-g", "30", "-pix_fmt", "yuv420p",
         "-c:a", "aac", "-shortest")
    # small and quick, 6 s
    make("small.mp4", "-f", "lavfi", "-i", "testsrc=size=320x240:rate=25:duration=6",
         "-f", "lavfi", "-i", "sine=frequency=300:duration=6",
         "-c:v", "libx264", "-preset", "ultrafast", "-g", "25", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest")
    return made


# ---------------------------------------------------------------- processes

def _read_line(proc: subprocess.Popen, within: float) -> str:
    """The child's next stdout line. A thread, not select(): when the child wrote two lines at
    once, the first readline() buffered both and the fd would look idle while the second waits."""
    assert proc.stdout is not None
    got: list[str] = []
    reader = threading.Thread(target=lambda: got.append(proc.stdout.readline()), daemon=True)
    reader.start()
    reader.join(within)
    if reader.is_alive():
        raise AssertionError(f"{proc.args[1]} did not report readiness in {within}s")
    if not got[0]:
        err = proc.stderr.read() if proc.stderr else ""
        raise AssertionError(f"{proc.args[1]} exited early: {err.strip()}")
    return got[0]


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    for stream in (proc.stdout, proc.stderr):
        if stream:
            stream.close()


def env(password: str = PASSWORD, **extra: str) -> dict[str, str]:
    # each process its own config dir: a tracker key trusted on first use by one test must not be
    # held against the next test's tracker on the same port
    config = tempfile.mkdtemp(prefix="process-", dir=os.environ.get("FFDT_CONFIG_DIR"))
    return {**os.environ, "FFDT_PASSWORD": password, "PYTHONUNBUFFERED": "1", "FFDT_CONFIG_DIR": config, **extra}


def run_cli(script: str, *args: str, cwd: Path | None = None, password: str = PASSWORD,
            timeout: float = 300, extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / script), *args], cwd=cwd, env=env(password, **(extra_env or {})),
                          capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


@dataclass
class Cluster:
    """A real tracker and workers on loopback, each its own process."""
    data: Path
    procs: list[subprocess.Popen] = field(default_factory=list)
    tracker_port: int = 0
    tracker: subprocess.Popen | None = None
    workers: list[tuple[subprocess.Popen, int, int]] = field(default_factory=list)
    fingerprint: str | None = None          # the tracker's TLS key, which clients pin

    def pin(self, extra: tuple[str, ...]) -> list[str]:
        """--tracker-fingerprint for a client, unless `extra` chooses its TLS itself."""
        chosen = {"--tls", "--tls-ca", "--plain", "--tracker-fingerprint"} & set(extra)
        return ["--tracker-fingerprint", self.fingerprint] if self.fingerprint and not chosen else []

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.tracker_port}"

    def add_user(self, name: str, role: str, password: str = PASSWORD) -> None:
        done = run_cli("tracker/tracker.py", "add-user", name, "--role", role, "--data-dir", str(self.data),
                       password=password, timeout=60)
        assert done.returncode == 0, done.stderr

    def start_tracker(self, *extra: str) -> int:
        proc = subprocess.Popen([sys.executable, str(ROOT / "tracker/tracker.py"), "serve", "--host", "127.0.0.1",
                                 "--port", str(self.tracker_port), "--data-dir", str(self.data), *extra],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env())
        self.procs.append(proc)
        line = _read_line(proc, 30)
        m = LISTENING.search(line)
        assert m, "no listening line"
        self.tracker, self.tracker_port = proc, int(m.group(2))
        key = re.search(r"TLS key (sha256:[0-9a-f]{64})", line)
        self.fingerprint = key[1] if key else None
        return self.tracker_port

    def start_worker(self, *extra: str, user: str = "w", extra_env: dict[str, str] | None = None
                     ) -> tuple[subprocess.Popen, int, int]:
        proc = subprocess.Popen([sys.executable, str(ROOT / "client/worker.py"), "0", "0", "--tracker", self.addr,
                                 "--user", user, "--host", "127.0.0.1", "--quiet", *self.pin(extra), *extra],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=env(**(extra_env or {})))
        self.procs.append(proc)
        m = LISTENING.search(_read_line(proc, 60))
        assert m and m.group(3), "no listening line"
        entry = (proc, int(m.group(2)), int(m.group(3)))
        self.workers.append(entry)
        return entry

    def boss(self, src: Path, out: Path, *extra: str, user: str = "b", password: str = PASSWORD,
             timeout: float = 300, extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        return run_cli("client/boss.py", str(src), "-o", str(out), "--tracker", self.addr, "--user", user,
                       "--quiet", *self.pin(extra), *extra, password=password, timeout=timeout, extra_env=extra_env)

    def audit(self, job: str | None = None) -> list[dict]:
        args = ["logs", "--data-dir", str(self.data), "--json"] + (["--job", job] if job else [])
        done = run_cli("tracker/tracker.py", *args, timeout=60)
        assert done.returncode == 0, done.stderr
        return [json.loads(line) for line in done.stdout.splitlines()]

    def close(self) -> None:
        for proc in reversed(self.procs):
            stop(proc)


@pytest.fixture(scope="session")
def users_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tracker data dir with users `b` (boss) and `w` (worker), made once per test run: each
    add-user is a process and 200,000 SCRAM iterations."""
    made = Cluster(tmp_path_factory.mktemp("users") / "tracker-data")
    made.add_user("b", "boss")              # by the command a user runs: the data dir as it makes it
    # then both at SCRAM's least iterations: every login of the suite's ~150 clusters paid 50 ms of
    # PBKDF2 at the default 200,000 (the command and its default have tests of their own).
    # Imported here: scripts/soak imports this module under a Python without the tracker's packages
    from ffdt.common.auth import MIN_ITERATIONS
    from ffdt.tracker.auth import create_user
    from ffdt.tracker.store import Store
    store = Store(made.data / "tracker.db")
    try:
        create_user(store, "b", "boss", PASSWORD, MIN_ITERATIONS)
        create_user(store, "w", "worker", PASSWORD, MIN_ITERATIONS)
    finally:
        store.close()
    return made.data


@pytest.fixture
def cluster(tmp_path: Path, users_data: Path) -> Iterator[Cluster]:
    """A tracker with users `b` (boss) and `w` (worker); start workers with cluster.start_worker()."""
    c = Cluster(tmp_path / "tracker-data")
    shutil.copytree(users_data, c.data)
    c.start_tracker()
    try:
        yield c
    finally:
        c.close()


# ---------------------------------------------------------------- media checks

def probe(path: Path) -> dict:
    out = subprocess.run(["ffprobe", "-v", "error", "-print_format", "json", "-show_format", "-show_streams",
                          "-show_chapters", str(path)], capture_output=True, text=True, check=True, timeout=60)
    return json.loads(out.stdout)


def packet_times(path: Path, stream: str = "v:0") -> list[tuple[float, float]]:
    """(pts, duration) of each packet of a stream, in presentation order."""
    out = subprocess.run(["ffprobe", "-v", "error", "-select_streams", stream, "-show_entries",
                          "packet=pts_time,duration_time", "-of", "csv=p=0", str(path)],
                         capture_output=True, text=True, check=True, timeout=120).stdout
    rows = []
    for line in out.splitlines():
        parts = line.strip().strip(",").split(",")
        if parts and parts[0] not in ("", "N/A"):
            dur = float(parts[1]) if len(parts) > 1 and parts[1] not in ("", "N/A") else 0.0
            rows.append((float(parts[0]), dur))
    return sorted(rows)


def decode_errors(path: Path) -> str:
    done = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-f", "null", "-"], capture_output=True,
                          text=True, timeout=300)
    return done.stderr.strip() + ("" if done.returncode == 0 else f" (exit {done.returncode})")


def assert_same_media(src: Path, out: Path, *, vcodec: str = "h264") -> dict:
    """The foundation's output checks, done independently of the boss with ffprobe/ffmpeg."""
    s_pk, o_pk = packet_times(src), packet_times(out)
    assert len(o_pk) == len(s_pk), f"{len(o_pk)} frames out, {len(s_pk)} in"
    frame = (s_pk[-1][0] - s_pk[0][0]) / max(1, len(s_pk) - 1)
    s_dur = s_pk[-1][0] + (s_pk[-1][1] or frame) - s_pk[0][0]
    o_dur = o_pk[-1][0] + (o_pk[-1][1] or frame) - o_pk[0][0]
    assert abs(o_dur - s_dur) <= frame + 0.002, f"duration {o_dur:.3f}s vs {s_dur:.3f}s"
    s_info, o_info = probe(src), probe(out)
    kinds = lambda info, k: [s for s in info["streams"] if s["codec_type"] == k]  # noqa: E731
    assert len(kinds(o_info, "audio")) == len(kinds(s_info, "audio"))
    assert kinds(o_info, "video")[0]["codec_name"] == vcodec
    assert decode_errors(out) == ""
    return o_info


def poll_for(predicate, timeout: float, what: str, interval: float = 0.1):
    """Wait until predicate() is truthy (returns it) or fail saying what did not happen."""
    import time
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)      # polling an external process's file; not synchronisation within ours


def audit_events(data: Path) -> list[dict]:
    """The tracker's audit log as it stands (it is flushed after every event)."""
    path = data / "audit.jsonl"
    if not path.exists():
        return []
    events = []
    for line in path.read_text(encoding="utf-8").splitlines():
        with contextlib.suppress(ValueError):
            events.append(json.loads(line))
    return events


def start_boss(cluster: "Cluster", src: Path, out: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(ROOT / "client/boss.py"), str(src), "-o", str(out),
                             "--tracker", cluster.addr, "--user", "b", "--quiet", *cluster.pin(extra), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env())
