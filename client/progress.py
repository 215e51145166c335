"""Progress: progressbar2 bars for the boss (frames and chunks of the whole job) and workers (one
chunk), or the boss's `--progress json` lines for scripts.

Bars only appear on a terminal and without --quiet; while one is shown, stderr is wrapped so
log lines scroll above it instead of breaking it. JSON lines go to stdout, one object a line.
"""
from __future__ import annotations

import collections
import contextlib
import json
import os
import sys
import threading
import time
from typing import Any, Callable, Sequence

import progressbar


def bars_wanted(quiet: bool) -> bool:
    return not quiet and sys.stderr.isatty()


class _Bar:
    def __init__(self, total: int, widgets: list, fd: Any = None, **variables: object) -> None:
        progressbar.streams.wrap_stderr()
        self._lock = threading.Lock()
        self._bar = progressbar.ProgressBar(max_value=max(total, 1), widgets=widgets, fd=fd or sys.stderr,
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


class Rate:
    """Frames a second over the last `window` seconds, and the ETA at that rate: the cluster's
    real pace (progressbar's adaptive ETA jumped each time a chunk's frames came in at once)."""

    MIN_SHARE = 200     # no ETA until the window has seen 1/200 of the frames done

    def __init__(self, window: float = 20.0) -> None:
        self.window = window
        self._seen: collections.deque[tuple[float, int]] = collections.deque()

    def add(self, done: int, total: int, now: float | None = None) -> tuple[float, float | None]:
        """(fps, seconds left or None while the rate is unknown) after `done` of `total` frames."""
        now = time.monotonic() if now is None else now
        self._seen.append((now, done))
        while len(self._seen) > 2 and now - self._seen[0][0] > self.window:
            self._seen.popleft()
        (t0, f0), (t1, f1) = self._seen[0], self._seen[-1]
        fps = max(0.0, (f1 - f0) / (t1 - t0)) if t1 > t0 else 0.0
        if f1 - f0 < max(1, total // self.MIN_SHARE):
            return fps, None            # a pace from a chunk's first two frames said "1:30:31" left
        return fps, ((total - done) / fps if fps > 0 else None)


class _Below:
    """The stream the boss's bar draws on: after each redraw of the bar's line, the lines under
    it (one per worker); a wipe of the bar's line (a log line is about to land there and scroll
    up) clears them too. The cursor always ends back on the bar's line, where progressbar
    expects it."""

    def __init__(self, target: Any, lines: Callable[[], list[str]]) -> None:
        self.target, self.lines = target, lines
        self._lock = threading.Lock()      # a log line from another thread redraws the bar too

    def write(self, text: str) -> int:
        if not text.startswith("\r"):
            return self.target.write(text)
        out = "\r\033[J"                   # the bar's line and everything under it
        body = text.strip("\r")
        if body.strip():
            out += body
            lines = [line[:self._width()] for line in self.lines()]     # a wrapped line would break the count
            if lines:
                out += "\n" + "\n".join(lines) + f"\033[{len(lines)}A\r"
        with self._lock:                    # one write: two redraws cannot interleave
            self.target.write(out)
        return len(text)

    def _width(self) -> int:
        """The terminal's width, from $COLUMNS or the terminal stderr is on (not stdout's, which
        may be a file); 80 when neither says."""
        columns = int(os.environ["COLUMNS"]) if os.environ.get("COLUMNS", "").isdigit() else 0
        if not columns:
            with contextlib.suppress(OSError, ValueError, AttributeError):
                columns = os.get_terminal_size(self.target.fileno()).columns
        return max(20, (columns or 80) - 1)

    def __getattr__(self, name: str) -> Any:      # flush, isatty, fileno, encoding: the terminal's
        return getattr(self.target, name)


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
    """The whole job: chunks done, frames encoded (done chunks plus progress), the cluster's fps
    and the ETA at it; under it a line per worker (the chunk it is on, how far, its fps)."""

    MAX_WORKER_LINES = 8

    def __init__(self, frames: int) -> None:
        self._lines: list[str] = []
        self._rate = Rate()
        self._worker_rates: dict[str, Rate] = {}
        below = _Below(progressbar.streams.original_stderr, lambda: self._lines)
        super().__init__(frames, [progressbar.Variable("chunks", format="chunks {formatted_value}", width=11),
                                  " ", progressbar.Percentage(), " ", progressbar.Bar(), " ",
                                  progressbar.SimpleProgress(), " frames ",
                                  # width/precision 0: the text as given (else cut to 3 characters)
                                  progressbar.Variable("rate", format="{formatted_value}", width=0, precision=0)],
                         fd=below, chunks="0/?", rate="  0.0 fps ETA --:--")

    def update(self, frames: int, chunks_done: int, chunks: int, workers: Sequence[dict[str, Any]] = (),
               cutting: float | None = None) -> None:
        """chunks: how many there are so far (the split may still be adding); workers: the job's
        worker_states(); cutting: how far a split that hands out nothing until done is (0-1),
        shown in place of the chunk count."""
        fps, left = self._rate.add(frames, self._bar.max_value)
        with self._lock:
            self._lines = self._worker_lines(workers)
        shown = f"cut {100 * cutting:3.0f}%" if cutting is not None else f"{chunks_done}/{chunks}"
        self._set(frames, chunks=shown, rate=f"{fps:5.1f} fps ETA {clock(left)}")

    def _worker_lines(self, workers: Sequence[dict[str, Any]]) -> list[str]:
        lines = []
        for w in workers:
            rate = self._worker_rates.setdefault(w["worker"], Rate(window=10.0))
            fps, _ = rate.add(w["frames_done"] + w["chunk_progress"], 0)
            if w["chunk"] is None:
                doing = "waiting for a chunk"
            else:
                share = 100 * w["chunk_progress"] // max(1, w["chunk_frames"])
                doing = f"chunk {w['chunk']:05d} {share:3d}% {fps:5.1f} fps"
            lines.append(f"  {w['worker']:<32.32} {doing}   {w['chunks_done']} done")
        if len(lines) > self.MAX_WORKER_LINES:
            lines = lines[:self.MAX_WORKER_LINES - 1] + [f"  ... and {len(lines) - self.MAX_WORKER_LINES + 1} more"]
        return lines

    def finish(self, keep: bool = True) -> None:
        with self._lock:
            self._lines = []              # the last redraw clears the worker lines
        super().finish(keep)
        # a bar finished without a last redraw (the job failed) leaves them below: clear them
        progressbar.streams.original_stderr.write("\033[J")
        progressbar.streams.original_stderr.flush()


def clock(seconds: float | None) -> str:
    """H:MM:SS (or M:SS) for an ETA; --:-- while it is not known."""
    if seconds is None:
        return "--:--"
    minutes, secs = divmod(int(seconds + 0.5), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class PhaseBar(_Bar):
    """A phase before the chunks go out (reading the input's packets, copying its chosen
    streams): how far, and the ETA."""

    def __init__(self, label: str, total: int) -> None:
        super().__init__(total, [f"{label} ", progressbar.Percentage(), " ", progressbar.Bar(), " ",
                                 progressbar.ETA()])

    def update(self, done: int) -> None:
        self._set(done)


class PhaseProgress:
    """The progress of one phase, as the boss shows it: a PhaseBar on a terminal once the phase
    has lasted PHASE_BAR_AFTER (a short one would only flash), and with --progress json a
    `phase_progress` line at most once a second. `update(done, total)` from any thread."""

    PHASE_BAR_AFTER = 1.0   # seconds
    JSON_EVERY = 1.0        # seconds

    def __init__(self, phase: str, label: str, bars: bool, json_out: "JsonProgress | None") -> None:
        self.phase, self.label, self.bars, self.json = phase, label, bars, json_out
        self._started = time.monotonic()
        self._said = 0.0
        self._bar: PhaseBar | None = None
        self._lock = threading.Lock()

    def update(self, done: float, total: float) -> None:
        if total <= 0:
            return
        now = time.monotonic()
        with self._lock:
            if self.json is not None and now - self._said >= self.JSON_EVERY:
                self._said = now
                self.json.emit("phase_progress", phase=self.phase, done=round(done, 1), total=round(total, 1))
            if self.bars and self._bar is None and now - self._started >= self.PHASE_BAR_AFTER:
                self._bar = PhaseBar(self.label, int(total))
            if self._bar is not None:
                self._bar.update(int(min(done, total)))

    def close(self) -> None:
        with self._lock:
            if self._bar is not None:
                self._bar.finish(keep=False)
                self._bar = None


class JsonProgress:
    """`--progress json`: one JSON object a line on stdout, for scripts. Events: `phase` (probe,
    copy, split, encode, audio_wait, join, with `file`), `phase_progress` (about once a second in
    a long probe, copy, split or output check (phase `join`): `done` of `total`, seconds read
    in the probe and the check, frames in the copy and the split; a split that hands chunks out
    as it cuts has none), `progress` (about once a second while chunks
    are encoded: frames and chunks done of the total, the cluster's fps over the last 20
    seconds, the ETA at that rate, and per worker its chunks and frames done, the chunk it is on
    and that chunk's frames encoded and in all), `done` and `failed` (one per file)."""

    _lock = threading.Lock()             # one stdout for every job of a queue

    def __init__(self, file: str) -> None:
        self.file = file
        self._rate = Rate()

    def emit(self, event: str, **fields: Any) -> None:
        line = json.dumps({"event": event, "file": self.file, **fields}, separators=(",", ":"))
        with self._lock:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()

    def progress(self, frames_done: int, frames: int, chunks_done: int, chunks: int,
                 workers: list[dict[str, Any]]) -> None:
        fps, left = self._rate.add(frames_done, frames)
        eta = round(left, 1) if left is not None else None
        self.emit("progress", frames_done=frames_done, frames=frames, chunks_done=chunks_done, chunks=chunks,
                  fps=round(fps, 1), eta=eta, workers=workers)
