"""Progress: progressbar2 bars for the boss (frames and chunks of the whole job) and workers (one
chunk), or the boss's `--progress json` lines for scripts.

Bars only appear on a terminal and without --quiet; while one is shown, stderr is wrapped so
log lines scroll above it instead of breaking it. JSON lines go to stdout, one object a line.
"""
from __future__ import annotations

import collections
import json
import sys
import threading
import time
from typing import Any

import progressbar


def bars_wanted(quiet: bool) -> bool:
    return not quiet and sys.stderr.isatty()


class _Bar:
    def __init__(self, total: int, widgets: list, **variables: object) -> None:
        progressbar.streams.wrap_stderr()
        self._lock = threading.Lock()
        self._bar = progressbar.ProgressBar(max_value=max(total, 1), widgets=widgets, fd=sys.stderr,
                                            redirect_stderr=False, variables=variables)
        self._bar.start()

    def _set(self, value: int, **variables: object) -> None:
        with self._lock:
            self._bar.update(min(value, self._bar.max_value), **variables)

    def finish(self, keep: bool = True) -> None:
        """keep=False: wipe the bar's line (a worker's bar lasts one chunk; a line says it ended)."""
        with self._lock:
            if keep:
                self._bar.finish(dirty=True)
            else:
                self._bar.finish(end="\r", dirty=True)
                sys.stderr.write("\033[K")
                sys.stderr.flush()
        progressbar.streams.unwrap_stderr()


class WorkerBar(_Bar):
    """The chunk a worker is encoding: wiped when it ends, no frozen 100 % line per chunk."""

    def finish(self, keep: bool = False) -> None:
        super().finish(keep)

    def __init__(self, chunk: int, frames: int) -> None:
        super().__init__(frames, [f"chunk {chunk:05d} ", progressbar.Percentage(), " ", progressbar.Bar(),
                                  " ", progressbar.SimpleProgress(), " frames ",
                                  progressbar.AdaptiveTransferSpeed(format="%(scaled)5.1f fps", prefixes=("",)),
                                  " ", progressbar.AdaptiveETA()])

    def update(self, frames: int) -> None:
        self._set(frames)


class BossBar(_Bar):
    """The whole job: frames encoded (done chunks plus progress), chunks done, fps, ETA."""

    def __init__(self, frames: int) -> None:
        super().__init__(frames, [progressbar.Variable("chunks", format="chunks {formatted_value}", width=11),
                                  " ", progressbar.Percentage(), " ", progressbar.Bar(), " ",
                                  progressbar.SimpleProgress(), " frames ",
                                  progressbar.AdaptiveTransferSpeed(format="%(scaled)5.1f fps", prefixes=("",)),
                                  " ", progressbar.AdaptiveETA()], chunks="0/?")

    def update(self, frames: int, chunks_done: int, chunks: int) -> None:
        """chunks: how many there are so far (the split may still be adding)."""
        self._set(frames, chunks=f"{chunks_done}/{chunks}")


class JsonProgress:
    """`--progress json`: one JSON object a line on stdout, for scripts. Events: `phase` (probe,
    split, encode, audio_wait, join, with `file`), `progress` (about once a second while chunks
    are encoded: frames and chunks done of the total, the cluster's fps over the last RATE_WINDOW
    seconds, the ETA at that rate, and per worker its chunks and frames done and the chunk it is
    on), `done` and `failed` (one per file)."""

    RATE_WINDOW = 20.0
    _lock = threading.Lock()             # one stdout for every job of a queue

    def __init__(self, file: str) -> None:
        self.file = file
        self._seen: collections.deque[tuple[float, int]] = collections.deque()

    def emit(self, event: str, **fields: Any) -> None:
        line = json.dumps({"event": event, "file": self.file, **fields}, separators=(",", ":"))
        with self._lock:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()

    def progress(self, frames_done: int, frames: int, chunks_done: int, chunks: int,
                 workers: list[dict[str, Any]]) -> None:
        now = time.monotonic()
        self._seen.append((now, frames_done))
        while len(self._seen) > 2 and now - self._seen[0][0] > self.RATE_WINDOW:
            self._seen.popleft()
        (t0, f0), (t1, f1) = self._seen[0], self._seen[-1]
        fps = (f1 - f0) / (t1 - t0) if t1 > t0 else 0.0
        eta = round((frames - frames_done) / fps, 1) if fps > 0 else None
        self.emit("progress", frames_done=frames_done, frames=frames, chunks_done=chunks_done, chunks=chunks,
                  fps=round(fps, 1), eta=eta, workers=workers)
