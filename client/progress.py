"""progressbar2 bars for the boss (frames and chunks of the whole job) and workers (one chunk).

Bars only appear on a terminal and without --quiet; while one is shown, stderr is wrapped so
log lines scroll above it instead of breaking it.
"""
from __future__ import annotations

import sys
import threading

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

    def finish(self) -> None:
        with self._lock:
            self._bar.finish(dirty=True)
        progressbar.streams.unwrap_stderr()


class WorkerBar(_Bar):
    """The chunk a worker is encoding."""

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
