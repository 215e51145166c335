"""Audit event names: one vocabulary for the tracker and for what bosses and workers report.

README.md ("Audit log") lists each with its keys. AuditLog.record() takes only these, so a
misspelt name fails where it is sent instead of leaving a hole in the log.
"""
from __future__ import annotations

import enum


class Event(str, enum.Enum):
    TRACKER_STARTED = "tracker_started"
    TRACKER_STOPPED = "tracker_stopped"
    AUTH_OK = "auth_ok"
    AUTH_FAILED = "auth_failed"
    REGISTER = "register"
    WORKER_LOST = "worker_lost"
    JOB_STARTED = "job_started"
    WORKERS_GIVEN = "workers_given"
    WORKER_JOINED = "worker_joined"
    CHUNK_ASSIGNED = "chunk_assigned"
    CHUNK_DONE = "chunk_done"
    CHUNK_FAILED = "chunk_failed"
    CHUNK_ENCODED = "chunk_encoded"
    CHUNK_RETRY = "chunk_retry"
    JOB_PROGRESS = "job_progress"
    WORKER_DROPPED = "worker_dropped"
    JOB_FINISHED = "job_finished"
    PROTOCOL_ERROR = "protocol_error"


# what a boss or a worker may report with an `event` message; the rest the tracker writes itself
PEER_EVENTS = frozenset({Event.CHUNK_ASSIGNED, Event.CHUNK_DONE, Event.CHUNK_FAILED, Event.CHUNK_ENCODED,
                         Event.CHUNK_RETRY, Event.WORKER_LOST, Event.WORKER_JOINED, Event.JOB_PROGRESS,
                         Event.WORKER_DROPPED})
