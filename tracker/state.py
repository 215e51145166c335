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


@dataclass
class Job:
    id: str
    boss: str
    input: str
    started: float
    workers: set[str] = field(default_factory=set)     # workers handed to it: they may report its events
    dropped: set[str] = field(default_factory=set)     # workers its boss dropped: not offered to it again


class TrackerState:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._registered = threading.Condition(self._lock)
        self._workers: dict[str, WorkerInfo] = {}
        self._jobs: dict[str, Job] = {}
        self._finished: OrderedDict[str, None] = OrderedDict()

    def register(self, worker: WorkerInfo) -> None:
        with self._lock:
            self._workers[worker.name] = replace(worker, last_seen=self._clock())
            self._registered.notify_all()

    def wait_for_workers(self, count: int, timeout: float) -> bool:
        """Block until `count` workers are registered (used by `boss --local`)."""
        with self._lock:
            return self._registered.wait_for(lambda: len(self._workers) >= count, timeout)

    def heartbeat(self, name: str, connection: int) -> bool:
        """False when the worker is unknown here (expired, or registered over another connection)."""
        with self._lock:
            w = self._workers.get(name)
            if w is None or w.connection != connection:
                return False
            self._workers[name] = replace(w, last_seen=self._clock())
            return True

    def drop(self, name: str, connection: int) -> bool:
        """Forget a worker if `connection` still owns its registration."""
        with self._lock:
            w = self._workers.get(name)
            if w is None or w.connection != connection:
                return False
            del self._workers[name]
            return True

    def expire(self, ttl: float) -> list[WorkerInfo]:
        """Remove and return the workers silent for longer than `ttl`."""
        now = self._clock()
        with self._lock:
            gone = [w for w in self._workers.values() if now - w.last_seen > ttl]
            for w in gone:
                del self._workers[w.name]
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

    def start_job(self, boss: str, input_name: str) -> Job | None:
        """A new job, or None if this boss already has MAX_JOBS_PER_BOSS running."""
        job = Job(uuid.uuid4().hex[:12], boss, input_name, self._clock())
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

    def end_job(self, job_id: str) -> None:
        with self._lock:
            self._jobs.pop(job_id, None)
            self._finished[job_id] = None
            while len(self._finished) > FINISHED_REMEMBERED:
                self._finished.popitem(last=False)
