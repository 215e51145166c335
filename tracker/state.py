"""Live workers and jobs. Thread-safe, no sockets, time from an injected clock."""
from __future__ import annotations

import random
import re
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from typing import Callable

JOB_ID = re.compile(r"^[0-9a-f]{12}$")
MAX_JOBS_PER_BOSS = 64          # live jobs of one boss user (each is a little tracker memory)
FINISHED_REMEMBERED = 10_000    # ended job ids kept, so their events and job_end are refused


@dataclass(frozen=True)
class WorkerInfo:
    name: str                  # user@host:msg_port, unique
    user: str
    host: str
    msg_port: int
    file_port: int
    slots: int
    ffmpeg: str
    encoders: tuple[str, ...]
    ticket_key: bytes
    tls: bool = False          # its ports speak TLS
    fingerprint: str | None = None   # its TLS key's, for bosses to pin
    last_seen: float = 0.0
    connection: int = 0        # id of the tracker connection that registered it
    busy: int = 0              # chunks it said it was encoding, at its last heartbeat


@dataclass
class Job:
    id: str
    boss: str
    input: str
    started: float
    workers: set[str] = field(default_factory=set)     # workers handed to it: they may report its events
    dropped: set[str] = field(default_factory=set)     # workers its boss dropped: not offered to it again
    frames: int | None = None      # to encode, as the boss said at job_start
    frames_done: int = 0           # in the chunks its boss reported done
    chunks_done: int = 0


@dataclass
class Speed:
    """What bosses reported of one worker's chunks: its speed as seen, for `status`."""
    frames: int = 0
    seconds: float = 0.0
    chunks: int = 0

    @property
    def fps(self) -> float | None:
        return self.frames / self.seconds if self.seconds > 0 else None

    def add(self, frames: int, seconds: float) -> None:
        self.frames, self.seconds, self.chunks = self.frames + frames, self.seconds + seconds, self.chunks + 1


class TrackerState:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._registered = threading.Condition(self._lock)
        self._workers: dict[str, WorkerInfo] = {}
        self._jobs: dict[str, Job] = {}
        self._finished: OrderedDict[str, None] = OrderedDict()
        self._speed: dict[str, Speed] = {}       # by worker name, for as long as it is registered

    def register(self, worker: WorkerInfo) -> None:
        with self._lock:
            self._workers[worker.name] = replace(worker, last_seen=self._clock())
            self._registered.notify_all()

    def wait_for_workers(self, count: int, timeout: float) -> bool:
        """Block until `count` workers are registered (used by `boss --local`)."""
        with self._lock:
            return self._registered.wait_for(lambda: len(self._workers) >= count, timeout)

    def heartbeat(self, name: str, connection: int, busy: int = 0) -> bool:
        """False when the worker is unknown here (expired, or registered over another connection)."""
        with self._lock:
            w = self._workers.get(name)
            if w is None or w.connection != connection:
                return False
            self._workers[name] = replace(w, last_seen=self._clock(), busy=busy)
            return True

    def drop(self, name: str, connection: int) -> bool:
        """Forget a worker if `connection` still owns its registration."""
        with self._lock:
            w = self._workers.get(name)
            if w is None or w.connection != connection:
                return False
            del self._workers[name]
            self._speed.pop(name, None)
            return True

    def expire(self, ttl: float) -> list[WorkerInfo]:
        """Remove and return the workers silent for longer than `ttl`."""
        now = self._clock()
        with self._lock:
            gone = [w for w in self._workers.values() if now - w.last_seen > ttl]
            for w in gone:
                del self._workers[w.name]
                self._speed.pop(w.name, None)
        return gone

    def live_workers(self, ttl: float, encoder: str | None = None, exclude: frozenset[str] = frozenset()
                     ) -> list[WorkerInfo]:
        now = self._clock()
        with self._lock:
            found = [w for w in self._workers.values()
                     if now - w.last_seen <= ttl and w.name not in exclude
                     and (encoder is None or encoder in w.encoders)]
        random.shuffle(found)                     # spread bosses over workers
        found.sort(key=lambda w: -w.slots)        # most capacity first
        return found

    def start_job(self, boss: str, input_name: str, frames: int | None = None) -> Job | None:
        """A new job, or None if this boss already has MAX_JOBS_PER_BOSS running."""
        job = Job(uuid.uuid4().hex[:12], boss, input_name, self._clock(), frames=frames)
        with self._lock:
            if sum(j.boss == boss for j in self._jobs.values()) >= MAX_JOBS_PER_BOSS:
                return None
            self._jobs[job.id] = job
        return job

    def job(self, job_id: str, boss: str) -> Job | None:
        """The job if it belongs to this boss and has not ended. A job unknown here (the tracker
        restarted since it began) is adopted by the boss that names it, so its events are still
        recorded: only a well-formed id, and within the boss's MAX_JOBS_PER_BOSS."""
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None:
                if (job_id in self._finished or not JOB_ID.match(job_id)
                        or sum(j.boss == boss for j in self._jobs.values()) >= MAX_JOBS_PER_BOSS):
                    return None
                job = self._jobs[job_id] = Job(job_id, boss, "?", self._clock())
        return job if job.boss == boss else None

    def job_of_worker(self, job_id: str, worker: str) -> Job | None:
        """The running job if `worker` was handed to it (a worker reports events of those only)."""
        with self._lock:
            job = self._jobs.get(job_id)
            return job if job is not None and worker in job.workers else None

    def gave(self, job_id: str, workers: list[str]) -> None:
        with self._lock:
            job = self._jobs.get(job_id)
            if job is not None:
                job.workers.update(workers)

    def dropped_from(self, job_id: str) -> frozenset[str]:
        with self._lock:
            job = self._jobs.get(job_id)
            return frozenset(job.dropped) if job is not None else frozenset()

    def dropped(self, job_id: str, worker: str) -> None:
        with self._lock:
            job = self._jobs.get(job_id)
            if job is not None and worker in job.workers:
                job.dropped.add(worker)

    def chunk_done(self, job_id: str, worker: str | None, frames: int | None, seconds: float | None) -> None:
        """A job's boss reported a chunk done: the job's progress and the worker's speed."""
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None:
                return
            job.chunks_done += 1
            job.frames_done += frames or 0
            if worker in self._workers and worker in job.workers and frames and seconds:
                self._speed.setdefault(worker, Speed()).add(frames, seconds)

    def snapshot(self) -> tuple[list[tuple[WorkerInfo, Speed, float]], list[tuple[Job, float]]]:
        """The live workers (each with its speed and seconds since its last heartbeat) and the
        running jobs (each with its age in seconds), for `status`."""
        now = self._clock()
        with self._lock:
            workers = [(w, replace(self._speed.get(w.name, Speed())), now - w.last_seen)
                       for w in sorted(self._workers.values(), key=lambda w: w.name)]
            jobs = [(replace(j, workers=set(j.workers), dropped=set(j.dropped)), now - j.started)
                    for j in sorted(self._jobs.values(), key=lambda j: j.started)]
        return workers, jobs

    def end_job(self, job_id: str) -> None:
        with self._lock:
            self._jobs.pop(job_id, None)
            self._finished[job_id] = None
            while len(self._finished) > FINISHED_REMEMBERED:
                self._finished.popitem(last=False)
