"""Fault switches for the test suite, off unless FFDT_TEST_FAULTS names them.

They live here, apart from the worker's code paths, which only ask `faults.on(name)` and call
`faults.tamper(path)` / `faults.hold(chunk)` at the few places a test needs to strike:
- corrupt-results: a result's middle bytes overwritten (its hash is taken after);
- slow-results: a result with the right frames at twice the source's timestamps;
- bloated-results: each result padded with 4 MiB of zeros (a worker out to fill the boss's disk);
- red-box: a result whose every frame has a red box over a quarter of the picture, otherwise
  well-formed (frames, timestamps, keyframes as an honest encode's); late-red-box: the same
  from the 10th frame of each result on; subtle-results: each result re-encoded at a much lower
  quality (CRF 38), a lie the comparison with the source lets through;
- disk-full: the worker refuses every upload as if its disk were full;
- playlist-results (a hostile worker) / playlist-chunks (a hostile boss): each result / chunk
  sent is an HLS playlist naming the file FFDT_TEST_SECRET (a file of the receiving host's that
  the sender wants encoded and returned);
- hold: each encode's ffmpeg is stopped (SIGSTOP) as soon as it starts, and continued once the
  file FFDT_TEST_RELEASE names exists; FFDT_TEST_RELEASE + ".held.N" appears while chunk N is
  held. A deterministic "worker in the middle of a chunk, its ffmpeg running" that does not
  depend on how fast this machine encodes.
"""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
from pathlib import Path

from ffdt.common import ffmpeg

ACTIVE = frozenset(filter(None, os.environ.get("FFDT_TEST_FAULTS", "").split(",")))
_RELEASE = os.environ.get("FFDT_TEST_RELEASE", "")
_SECRET = os.environ.get("FFDT_TEST_SECRET", "")
HOLD_POLL = 0.05          # how often a held encode looks for the release file
HOLD_LIMIT = 600.0        # a forgotten hold ends anyway


def on(name: str) -> bool:
    return name in ACTIVE


def hold(chunk: int, proc: subprocess.Popen) -> None:
    """With `hold` on: stop this chunk's ffmpeg now, continue it once the release file exists."""
    if not on("hold") or not _RELEASE:
        return
    os.kill(proc.pid, signal.SIGSTOP)
    Path(f"{_RELEASE}.held.{chunk}").touch()

    def release() -> None:
        waited, pause = 0.0, threading.Event()
        while not Path(_RELEASE).exists() and waited < HOLD_LIMIT and proc.poll() is None:
            pause.wait(HOLD_POLL)         # a test switch, polling for a file another process makes
            waited += HOLD_POLL
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGCONT)

    threading.Thread(target=release, name=f"hold-{chunk}", daemon=True).start()


def _playlist(path: Path) -> None:
    path.write_text(f"#EXTM3U\n#EXT-X-TARGETDURATION:60\n#EXTINF:60,\n{_SECRET}\n#EXT-X-ENDLIST\n",
                    encoding="utf-8")


def outgoing(path: Path) -> Path:
    """The file a boss sends for a chunk: with `playlist-chunks` on, a playlist beside it."""
    if not on("playlist-chunks"):
        return path
    hostile = path.with_name(path.name + ".m3u8")
    _playlist(hostile)
    return hostile


def tamper(tools: ffmpeg.Tools, path: Path) -> None:
    """Apply the result faults that are on to an encoded result."""
    if on("playlist-results"):
        _playlist(path)
    if on("bloated-results"):
        with path.open("ab") as f:
            f.write(bytes(4 << 20))
    if on("corrupt-results"):
        size = path.stat().st_size
        with path.open("r+b") as f:
            f.seek(size // 3)
            f.write(os.urandom(max(64, size // 3)))
    if on("red-box") or on("late-red-box"):
        # late: from the 10th frame on, past the frames every result has compared
        when = ":enable='gte(n,10)'" if on("late-red-box") else ""
        boxed = path.with_name(path.name + ".box")
        ffmpeg.run([tools.ffmpeg, *ffmpeg.BASE_FLAGS, "-i", ffmpeg.input_path(path),
                    "-vf", f"drawbox=x=0:y=0:w=iw/2:h=ih/2:color=red:t=fill{when}", "-fps_mode", "passthrough",
                    "-enc_time_base", "-1", "-c:v", "libx264", "-preset", "ultrafast", "-f", "matroska",
                    ffmpeg.input_path(boxed)])
        boxed.replace(path)
    if on("subtle-results"):
        worse = path.with_name(path.name + ".worse")
        ffmpeg.run([tools.ffmpeg, *ffmpeg.BASE_FLAGS, "-i", ffmpeg.input_path(path), "-fps_mode", "passthrough",
                    "-enc_time_base", "-1", "-c:v", "libx264", "-preset", "ultrafast", "-crf", "38",
                    "-fflags", "+bitexact", "-f", "matroska", ffmpeg.input_path(worse)])
        worse.replace(path)
    if on("slow-results"):
        slow = path.with_name(path.name + ".slow")
        ffmpeg.run([tools.ffmpeg, *ffmpeg.BASE_FLAGS, "-itsscale", "2", "-i", ffmpeg.input_path(path), "-c", "copy",
                    "-f", "matroska", ffmpeg.input_path(slow)])
        slow.replace(path)
