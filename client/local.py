"""`boss --local N`: a tracker and N workers on loopback, started by the boss itself.

The same protocol and code path as a real deployment: an in-process tracker on an ephemeral
port, throwaway users with a random password (passed to the workers in their environment,
never in argv), and N worker processes.
"""
from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from ffdt.common.config import WORKER_SILENCE_TIMEOUT
from ffdt.common.ffmpeg import die_with_parent
from ffdt.common.errors import TranscoderError
from ffdt.tracker.audit import AuditLog
from ffdt.tracker.auth import create_user, load_secret
from ffdt.tracker.server import TrackerContext, TrackerServer
from ffdt.tracker.state import TrackerState
from ffdt.tracker.store import Store

WORKER_SCRIPT = Path(__file__).resolve().parent / "worker.py"
LOCAL_ITERATIONS = 4096      # throwaway credentials that never leave this machine


class LocalCluster:
    def __init__(self, workers: int, ffmpeg_args: list[str], *, start_timeout: float = 60.0) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="ffdt-local-"))
        self.password = secrets.token_urlsafe(24)
        self.boss_user = "local-boss"
        self._store = Store(self.dir / "tracker.db")
        create_user(self._store, self.boss_user, "boss", self.password, LOCAL_ITERATIONS)
        create_user(self._store, "local-worker", "worker", self.password, LOCAL_ITERATIONS)
        self._audit = AuditLog(self.dir / "audit.jsonl", self._store)
        self.state = TrackerState()
        ctx = TrackerContext(self.state, self._store, self._audit, load_secret(self.dir))
        self.server = TrackerServer(("127.0.0.1", 0), ctx)
        self.addr = ("127.0.0.1", self.server.server_address[1])
        threading.Thread(target=self.server.serve_forever, name="local-tracker", daemon=True).start()
        env = dict(os.environ, FFDT_PASSWORD=self.password)
        self.procs = [subprocess.Popen(
            [sys.executable, str(WORKER_SCRIPT), "0", "0", "--tracker", f"127.0.0.1:{self.addr[1]}",
             "--user", "local-worker", "--host", "127.0.0.1", "--quiet", "--workdir", str(self.dir / f"w{i}"),
             "--plain",     # loopback, between processes of this boss: no key to make and pin
             *ffmpeg_args], env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            preexec_fn=die_with_parent)     # no orphans if the boss is killed
            for i in range(workers)]
        if not self.state.wait_for_workers(workers, start_timeout):
            dead = [p.returncode for p in self.procs if p.poll() is not None]
            self.close()
            raise TranscoderError(f"--local: only {len(self.state.live_workers(WORKER_SILENCE_TIMEOUT))} of "
                                  f"{workers} local workers started" + (f" (exit codes {dead})" if dead else ""))

    def close(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.server.stop()
        self._audit.close()
        self._store.close()
        shutil.rmtree(self.dir, ignore_errors=True)
