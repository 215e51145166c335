"""The boss's chunk table: which chunk is pending, with which worker, done or failed.

No sockets here. Worker links call take/done/fail/release; the boss's main thread waits on
`finished` (or `changed`, to refresh its progress bar).
"""
from __future__ import annotations

import enum
import threading
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from common.config import MAX_ATTEMPTS


class ChunkState(enum.Enum):
    PENDING = "pending"
    ASSIGNED = "assigned"
    DONE = "done"
    FAILED = "failed"


@dataclass
class Chunk:
    """A chunk's manifest and status."""
    index: int
    source: Path
    size: int
    sha256: str
    frames: int                 # expected frame count, from the source chunk's packets
    start: float                # first timestamp within the input's video, seconds
    skip: int = 0               # frames to decode and drop first (a chunk cut inside a long GOP)
    whole: bool = True          # the chunk is its whole source piece (else: `frames` after `skip`)
    span: float | None = None   # its last frame's timestamp minus its first's (None: not known)
    state: ChunkState = ChunkState.PENDING
    attempts: int = 0
    workers: set[str] = field(default_factory=set)        # where it is being encoded now
    tried_on: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)       # failed attempts: "worker: reason"
    losses: list[str] = field(default_factory=list)       # workers lost while holding it
    result: Path | None = None
    result_sha256: str | None = None
    progress: int = 0           # frames encoded so far, as the worker reports

    @property
    def name(self) -> str:
        return f"chunk_{self.index:05d}"


class Scheduler:
    def __init__(self, chunks: list[Chunk], max_attempts: int = MAX_ATTEMPTS, max_copies: int = 2,
                 on_done: Callable[[Chunk], None] | None = None) -> None:
        self.chunks = chunks
        self.max_attempts = max_attempts
        self.max_copies = max_copies      # straggler copies: a chunk runs on at most this many workers
        self.on_done = on_done            # called under the lock, e.g. to save the job state
        self._pending: deque[Chunk] = deque(c for c in chunks if c.state is ChunkState.PENDING)
        self._cond = threading.Condition()
        self.finished = threading.Event()
        self.fatal: str | None = None
        if all(c.state is ChunkState.DONE for c in chunks):
            self.finished.set()

    def take(self, worker: str, wait: float) -> Chunk | None:
        """The next pending chunk for `worker`, waiting up to `wait` seconds for one to appear.

        With the queue empty, an idle worker gets a copy of the slowest chunk still being
        encoded elsewhere (a straggler); the first valid result wins.
        """
        with self._cond:
            self._cond.wait_for(lambda: self._pending or self.finished.is_set(), timeout=wait)
            # a chunk requeued by a lost worker may have been verified done since: skip it
            while self._pending and self._pending[0].state is not ChunkState.PENDING:
                self._pending.popleft()
            if self.finished.is_set():
                return None
            if not self._pending:
                chunk = self._straggler(worker)
                if chunk is not None:
                    chunk.workers.add(worker)
                    chunk.tried_on.append(worker)
                return chunk
            chunk = self._pending.popleft()
            chunk.state = ChunkState.ASSIGNED
            chunk.workers.add(worker)
            chunk.tried_on.append(worker)
            chunk.attempts += 1
            chunk.progress = 0
            return chunk

    def _straggler(self, worker: str) -> Chunk | None:
        # a copy started from scratch can only win against a chunk less than half done
        running = [c for c in self.chunks if c.state is ChunkState.ASSIGNED and c.progress < c.frames / 2
                   and len(c.workers) < self.max_copies and worker not in c.workers]
        return min(running, key=lambda c: c.progress / max(1, c.frames), default=None)

    def progress(self, index: int, worker: str, frames: int) -> None:
        with self._cond:
            chunk = self._get(index)
            if chunk is not None and worker in chunk.workers and chunk.state is ChunkState.ASSIGNED:
                chunk.progress = min(frames, chunk.frames)

    def assigned_to(self, index: int, worker: str) -> Chunk | None:
        with self._cond:
            chunk = self._get(index)
            return chunk if chunk is not None and worker in chunk.workers else None

    def done(self, chunk: Chunk, worker: str, result: Path, sha256: str,
             received: Path | None = None) -> set[str] | None:
        """Record a verified result (moving the `received` file to `result` if given). Returns the
        other workers still encoding a copy (to be cancelled), or None if the chunk was already
        done: this result is a duplicate and is left where it is."""
        with self._cond:
            chunk.workers.discard(worker)
            if chunk.state is ChunkState.DONE:
                return None
            if received is not None:
                received.replace(result)     # under the lock: a second copy cannot overwrite it
            others, chunk.workers = set(chunk.workers), set()
            chunk.state, chunk.result, chunk.result_sha256 = ChunkState.DONE, result, sha256
            chunk.progress = chunk.frames
            if self.on_done is not None:
                self.on_done(chunk)
            if all(c.state is ChunkState.DONE for c in self.chunks):
                self.finished.set()
            self._cond.notify_all()
            return others

    def fail(self, chunk: Chunk, worker: str, reason: str) -> None:
        """A failed attempt: back to the queue, or the job fails after max_attempts."""
        with self._cond:
            chunk.workers.discard(worker)
            if chunk.state is not ChunkState.ASSIGNED or chunk.workers:
                return                      # done elsewhere, or still being encoded elsewhere
            chunk.errors.append(f"{worker}: {reason}")
            if chunk.attempts >= self.max_attempts:
                chunk.state = ChunkState.FAILED
                self.fatal = (f"{chunk.name} failed {chunk.attempts} times (on {', '.join(chunk.tried_on)}); "
                              f"last error: {reason}")
                self.finished.set()
            else:
                chunk.state = ChunkState.PENDING
                self._pending.appendleft(chunk)   # retry first: it holds up the concat
            self._cond.notify_all()

    def release(self, worker: str, reason: str) -> list[Chunk]:
        """A worker is gone: its chunks go back to the queue (not counted as the chunk's fault)."""
        with self._cond:
            lost = [c for c in self.chunks if worker in c.workers]
            for chunk in lost:
                chunk.losses.append(f"{worker}: {reason}")
                self._requeue_uncounted(chunk, worker)
            self._cond.notify_all()
            return lost

    def giveback(self, chunk: Chunk, worker: str) -> None:
        """A worker could not start the chunk (refused the upload): requeue it, attempt uncounted."""
        with self._cond:
            self._requeue_uncounted(chunk, worker)
            self._cond.notify_all()

    def _requeue_uncounted(self, chunk: Chunk, worker: str) -> None:
        """Take the chunk from `worker`; if no copy runs elsewhere, queue it first again without
        counting the attempt (it was not the chunk's fault). Call with the lock held."""
        chunk.workers.discard(worker)
        if chunk.state is ChunkState.ASSIGNED and not chunk.workers:
            chunk.state = ChunkState.PENDING
            chunk.attempts = max(0, chunk.attempts - 1)
            self._pending.appendleft(chunk)

    def abort(self, reason: str) -> None:
        """Fail the job; the reason names the last chunk that failed, where, and why."""
        with self._cond:
            # a real failure (ffmpeg's or the check's words) says more than "worker lost"
            failed = [c for c in self.chunks if c.state is not ChunkState.DONE and c.errors] or \
                     [c for c in self.chunks if c.state is not ChunkState.DONE and c.losses]
            if failed:
                last = failed[-1]
                reason += f"; {last.name} last failed on {(last.errors or last.losses)[-1]}"
            self.fatal = self.fatal or reason
            self.finished.set()
            self._cond.notify_all()

    def counts(self) -> tuple[int, int]:
        """(chunks done, frames done including work in progress)."""
        with self._cond:
            done = sum(c.state is ChunkState.DONE for c in self.chunks)
            return done, sum(c.progress for c in self.chunks)

    def _get(self, index: int) -> Chunk | None:
        return self.chunks[index] if 0 <= index < len(self.chunks) else None
