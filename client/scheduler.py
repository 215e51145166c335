"""The boss's chunk table: which chunk is pending, with which worker, done or failed.

No sockets here. Worker links call take/done/fail/release; the boss's main thread waits on
`finished` (or `changed`, to refresh its progress bar).
"""
from __future__ import annotations

import enum
import threading
from collections import deque
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Callable

from ffdt.common.config import MAX_ATTEMPTS


class ChunkState(enum.Enum):
    PENDING = "pending"
    ASSIGNED = "assigned"
    DONE = "done"
    FAILED = "failed"


@dataclass(frozen=True)
class Manifest:
    """What a chunk is, fixed once the split has made it. The state file keeps these fields
    (to_state/from_state) and `assign` sends a projection of them (assign_fields)."""
    index: int
    source: Path                # the bytes a worker gets (a piece of the input, stream copy)
    size: int
    sha256: str
    frames: int                 # expected frame count, from the source chunk's packets
    start: float                # first timestamp within the input's video, seconds
    skip: int = 0               # frames to decode and drop first (a chunk cut inside a long GOP)
    whole: bool = True          # the chunk is its whole source piece (else: `frames` after `skip`)
    span: float | None = None   # its last frame's timestamp minus its first's (None: not known)

    @property
    def name(self) -> str:
        return f"chunk_{self.index:05d}"

    @property
    def frame_range(self) -> tuple[int, int] | None:
        """(skip, frames) of a chunk cut by frame range, as ffmpeg.picture_filters takes it; None
        for a whole piece."""
        return None if self.whole else (self.skip, self.frames)

    def assign_fields(self) -> dict[str, object]:
        """The keys of `assign` (common/PROTOCOL.md 8.3) for this chunk."""
        return {"chunk": self.index, "size": self.size, "sha256": self.sha256, "frames": self.frames,
                **({} if self.whole else {"skip": self.skip, "limit": self.frames})}

    def to_state(self) -> dict[str, object]:
        """Every field, the source by its name in the work directory's src/."""
        return {f.name: (self.source.name if f.name == "source" else getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def from_state(cls, data: dict, src_dir: Path) -> Manifest:
        """The manifest to_state() wrote (KeyError, TypeError or ValueError if it is damaged)."""
        values = {f.name: data[f.name] for f in fields(cls) if f.name in data}
        values["source"] = src_dir / Path(str(data["source"])).name      # never a path from the file
        return cls(**values)


@dataclass
class Chunk:
    """A chunk in the scheduler: its manifest, and its scheduling state (changed under the
    scheduler's lock only)."""
    manifest: Manifest
    state: ChunkState = ChunkState.PENDING
    attempts: int = 0
    workers: set[str] = field(default_factory=set)        # where it is being encoded now
    tried_on: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)       # failed attempts: "worker: reason"
    losses: list[str] = field(default_factory=list)       # workers lost while holding it
    result: Path | None = None
    result_sha256: str | None = None
    progress: int = 0           # frames encoded so far, as the worker reports
    started: bool = False       # a worker reported its encode began (else it may be held, prefetched)
    only: set[str] | None = None    # the workers that may take it (a re-encode check's); None: any
    made_by: str | None = None      # the worker whose result counts, once done

    # the manifest's fields, read-only, for the code that schedules and checks chunks
    index = property(lambda self: self.manifest.index)
    source = property(lambda self: self.manifest.source)
    size = property(lambda self: self.manifest.size)
    sha256 = property(lambda self: self.manifest.sha256)
    frames = property(lambda self: self.manifest.frames)
    start = property(lambda self: self.manifest.start)
    skip = property(lambda self: self.manifest.skip)
    whole = property(lambda self: self.manifest.whole)
    frame_range = property(lambda self: self.manifest.frame_range)
    span = property(lambda self: self.manifest.span)
    name = property(lambda self: self.manifest.name)


class Scheduler:
    def __init__(self, chunks: list[Chunk], max_attempts: int = MAX_ATTEMPTS, max_copies: int = 2,
                 on_done: Callable[[Chunk], None] | None = None, complete: bool = True,
                 copies_wanted: Callable[[], bool] = lambda: True) -> None:
        self.chunks = list(chunks)
        self.complete = complete          # every chunk is in the table (else the split is still adding)
        self.max_attempts = max_attempts
        self.max_copies = max_copies      # straggler copies: a chunk runs on at most this many workers
        # whether a straggler copy is worth a worker's slot now (a queue: not while the next file
        # has chunks waiting, which that worker can take instead). Called with the lock held: it
        # may only look at later jobs' schedulers, never this one's or an earlier one's
        self.copies_wanted = copies_wanted
        self.on_done = on_done            # called (outside the lock) with each chunk done, to journal it
        # longest first: the short ones fill the gaps at the end, when workers finish unevenly
        self._pending: deque[Chunk] = deque(sorted((c for c in chunks if c.state is ChunkState.PENDING),
                                                   key=lambda c: -c.frames))
        self._cond = threading.Condition()
        self.finished = threading.Event()
        self.fatal: str | None = None
        self._moving: set[int] = set()    # chunks done whose result is being moved into place outside the lock
        self._known: set[str] = set()     # workers that have asked for chunks and are still there
        self._finish_if_done()

    def add(self, chunks: list[Chunk], complete: bool) -> None:
        """More chunks from the split (indices following on); complete=True: that was the last."""
        with self._cond:
            if [c.index for c in chunks] != list(range(len(self.chunks), len(self.chunks) + len(chunks))):
                raise ValueError("chunks must be added in index order")
            self.chunks.extend(chunks)
            self._pending.extend(sorted((c for c in chunks if c.state is ChunkState.PENDING), key=lambda c: -c.frames))
            self.complete = complete
            self._finish_if_done()
            self._cond.notify_all()

    def take(self, worker: str, wait: float) -> Chunk | None:
        """The next pending chunk for `worker`, waiting up to `wait` seconds for one to appear.

        A worker that already holds a chunk (asking ahead while it encodes) gets one only while
        there are more pending than workers holding none: the idle ones come first. With the
        queue empty, an idle worker gets a copy of the slowest chunk still being encoded
        elsewhere (a straggler), or one held there but not started; the first valid result wins.
        """
        with self._cond:
            self._known.add(worker)
            self._cond.wait_for(lambda: self._pending or self.finished.is_set(), timeout=wait)
            # a chunk requeued by a lost worker may have been verified done since: skip it
            if any(c.state is not ChunkState.PENDING for c in self._pending):
                self._pending = deque(c for c in self._pending if c.state is ChunkState.PENDING)
            if self.finished.is_set():
                return None
            holding = self._holding()
            if self._pending and worker in holding and \
                    len(self._pending) <= len(self._known - holding - {worker}):
                return None               # a worker with nothing to do gets these first
            chunk = next((c for c in self._pending if c.only is None or worker in c.only), None)
            if chunk is None:            # (what is pending is kept for other workers: a second encode)
                if not self.complete or worker in holding or not self.copies_wanted():
                    return None           # more chunks are coming; or busy: copies are for idle workers only
                chunk = self._straggler(worker)
                if chunk is not None:
                    chunk.workers.add(worker)
                    chunk.tried_on.append(worker)
                return chunk
            self._pending.remove(chunk)
            chunk.state = ChunkState.ASSIGNED
            chunk.workers.add(worker)
            chunk.tried_on.append(worker)
            chunk.attempts += 1
            chunk.progress = 0
            chunk.started = False
            return chunk

    def hold(self, chunk: Chunk, worker: str, only: set[str]) -> set[str] | None:
        """A checked result of `chunk` from `worker` is kept aside until another worker's encode
        matches it (the re-encode check): the chunk goes back to the queue first, for `only` these
        workers, the attempt not counted. Returns the others still encoding a copy (to cancel), or
        None if the chunk is done already (a copy of it was counted)."""
        with self._cond:
            if chunk.state is ChunkState.DONE:
                return None               # another copy was counted meanwhile: this result is a duplicate
            others = chunk.workers - {worker}
            chunk.workers = set()
            chunk.state, chunk.only = ChunkState.PENDING, set(only) - {worker}
            chunk.attempts = max(0, chunk.attempts - 1)
            self._pending.appendleft(chunk)
            self._cond.notify_all()
            return others

    def _holding(self) -> set[str]:
        """Workers that hold at least one chunk being encoded or waiting to be. Lock held."""
        return {w for c in self.chunks if c.state is ChunkState.ASSIGNED for w in c.workers}

    def _straggler(self, worker: str) -> Chunk | None:
        # a copy started from scratch can only win against a chunk less than half done; one that
        # another worker holds behind the chunk it is encoding (prefetched) is taken first
        # (never to a worker that was lost while it held the chunk: a frozen one that woke up)
        running = [c for c in self.chunks if c.state is ChunkState.ASSIGNED and c.progress < c.frames / 2
                   and len(c.workers) < self.max_copies and worker not in c.workers
                   and (c.only is None or worker in c.only)      # a second encode: not by the first's worker
                   and not any(loss.startswith(worker + ": ") for loss in c.losses)]
        return min(running, key=lambda c: (not self._prefetched(c), c.progress / max(1, c.frames), -c.frames),
                   default=None)

    def _prefetched(self, chunk: Chunk, holders: set[str] | None = None) -> bool:
        """Held, not started, by workers (`holders`, default all of the chunk's) that are each
        encoding another chunk. (A chunk just handed to an idle worker is about to start: taking
        it would only move it.) Lock held."""
        holders = chunk.workers if holders is None else holders
        encoding = {w for c in self.chunks if c.state is ChunkState.ASSIGNED and c.started for w in c.workers}
        return not chunk.started and bool(holders) and holders <= encoding

    def steal(self, chunk: Chunk, worker: str) -> set[str]:
        """`worker` took a straggler copy of `chunk`: if the others hold it behind another encode
        and have not started it (prefetched), it becomes `worker`'s alone. Returns the workers it was taken
        from, whose copies are to be cancelled."""
        with self._cond:
            if chunk.state is not ChunkState.ASSIGNED or worker not in chunk.workers:
                return set()
            others = chunk.workers - {worker}
            if not self._prefetched(chunk, others):
                return set()
            chunk.workers = {worker}
            return others

    def progress(self, index: int, worker: str, frames: int) -> None:
        with self._cond:
            chunk = self._get(index)
            if chunk is not None and worker in chunk.workers and chunk.state is ChunkState.ASSIGNED:
                chunk.progress = min(frames, chunk.frames)
                chunk.started = True

    def assigned_to(self, index: int, worker: str) -> Chunk | None:
        with self._cond:
            chunk = self._get(index)
            return chunk if chunk is not None and worker in chunk.workers else None

    def done(self, chunk: Chunk, worker: str, result: Path, sha256: str,
             received: Path | None = None, made_by: str | None = None) -> set[str] | None:
        """Record a verified result (moving the `received` file to `result` if given). Returns the
        other workers still encoding a copy (to be cancelled), or None if the chunk was already
        done: this result is a duplicate and is left where it is.

        The file work (the rename, on_done's journal line) runs outside the lock: the chunk is
        marked done first, so a second copy cannot overwrite it, and `finished` waits until every
        such file is in place."""
        with self._cond:
            chunk.workers.discard(worker)
            if chunk.state is ChunkState.DONE:
                return None
            others, chunk.workers = set(chunk.workers), set()
            chunk.state, chunk.result, chunk.result_sha256 = ChunkState.DONE, result, sha256
            chunk.made_by, chunk.only = made_by or worker, None   # (a kept result may be another's)
            chunk.progress = chunk.frames
            self._moving.add(chunk.index)
        try:
            if received is not None:
                received.replace(result)
            if self.on_done is not None:
                self.on_done(chunk)
        finally:
            with self._cond:
                self._moving.discard(chunk.index)
                self._finish_if_done()
                self._cond.notify_all()
        return others

    def _finish_if_done(self) -> None:
        """Set `finished` once every chunk is known, done, and its result file in place. Lock held."""
        if self.complete and not self._moving and all(c.state is ChunkState.DONE for c in self.chunks):
            self.finished.set()

    def wait_done(self, chunk: Chunk, timeout: float) -> bool | None:
        """Wait up to `timeout` seconds for `chunk` to be done with its result file in place:
        True once it is, False if the job failed, None on timeout."""
        def placed() -> bool:
            return chunk.state is ChunkState.DONE and chunk.index not in self._moving

        with self._cond:
            self._cond.wait_for(lambda: self.fatal or placed(), timeout=timeout)
            if self.fatal:
                return False
            return True if placed() else None

    def fail(self, chunk: Chunk, worker: str, reason: str) -> None:
        """A failed attempt: back to the queue, or the job fails after max_attempts."""
        with self._cond:
            chunk.workers.discard(worker)
            if chunk.state is not ChunkState.ASSIGNED or chunk.workers:
                return                      # done elsewhere, or still being encoded elsewhere
            chunk.errors.append(f"{worker}: {reason}")
            if chunk.attempts >= self.max_attempts and chunk.only is not None:
                # a second encode that keeps failing does not fail the job: a checked result is
                # kept for it, and with nobody left to take the chunk the job counts that one
                chunk.state, chunk.only = ChunkState.PENDING, set()
                self._pending.appendleft(chunk)   # (opened to all again if that result stops counting)
                self._cond.notify_all()
                return
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
            self._known.discard(worker)
            for chunk in self.chunks:
                if chunk.only is not None:
                    chunk.only.discard(worker)     # (the job settles a check left with nobody: Rechecks)
            lost = [c for c in self.chunks if worker in c.workers]
            for chunk in lost:
                chunk.losses.append(f"{worker}: {reason}")
                self._requeue_uncounted(chunk, worker)
            self._cond.notify_all()
            return lost

    def open_to_all(self, chunk: Chunk) -> None:
        """A chunk kept for a second encode that no longer is: any worker may take it (from scratch)."""
        with self._cond:
            chunk.only = None
            if chunk.state is ChunkState.PENDING and chunk not in self._pending:
                self._pending.appendleft(chunk)
            self._cond.notify_all()

    def redo(self, worker: str) -> list[Chunk]:
        """The chunks whose counted result is `worker`'s go back to the queue (it lied about
        another): their results no longer count (the caller removes the files)."""
        with self._cond:
            redone = [c for c in self.chunks if c.state is ChunkState.DONE and c.made_by == worker]
            for chunk in redone:
                chunk.state, chunk.result, chunk.result_sha256, chunk.made_by = ChunkState.PENDING, None, None, None
                chunk.progress, chunk.attempts = 0, 0
                self._pending.appendleft(chunk)
            self._cond.notify_all()
            return redone

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

    def has_pending(self) -> bool:
        """A chunk waits to be handed out."""
        with self._cond:
            return self._any_pending()

    def all_out(self) -> bool:
        """Every chunk is known and none waits to be handed out: what is left is the tail (the
        last encodes, their checks, the join), when a queue's next file may start."""
        with self._cond:
            return self.complete and not self._any_pending()

    def may_end_with(self, chunk: Chunk, worker: str) -> bool:
        """Whether `worker` may have nothing to do after `chunk`: every chunk is known, none waits
        to be handed out, and it holds none it has not started (one it has encoded may still be
        on its way in). Only then may the checks of this result stand between the last encode and
        the output (the boss takes a sample then: PROTOCOL.md 8.3)."""
        with self._cond:                 # (an RLock: all_out takes it again)
            return self.all_out() and not any(
                c is not chunk and c.state is ChunkState.ASSIGNED and worker in c.workers and not c.started
                for c in self.chunks)

    def _any_pending(self) -> bool:
        """Lock held."""
        return any(c.state is ChunkState.PENDING for c in self.chunks)

    def counts(self) -> tuple[int, int]:
        """(chunks done, frames done including work in progress)."""
        with self._cond:
            done = sum(c.state is ChunkState.DONE for c in self.chunks)
            return done, sum(c.progress for c in self.chunks)

    def _get(self, index: int) -> Chunk | None:
        return self.chunks[index] if 0 <= index < len(self.chunks) else None
