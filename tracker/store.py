"""The tracker's SQLite database in its data dir: users, audit events and jobs.

One connection shared by the handler threads, guarded by a lock; WAL so `logs` can read while
the tracker writes.
"""
from __future__ import annotations

import json
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    name TEXT PRIMARY KEY, role TEXT NOT NULL,
    salt BLOB NOT NULL, stored_key BLOB NOT NULL, server_key BLOB NOT NULL, iterations INTEGER NOT NULL,
    created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT, ts REAL NOT NULL, event TEXT NOT NULL,
    user TEXT, peer TEXT, job TEXT, worker TEXT, chunk INTEGER, fields TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS audit_job ON audit(job);
"""


@dataclass(frozen=True)
class UserRecord:
    name: str
    role: str
    salt: bytes
    stored_key: bytes
    server_key: bytes
    iterations: int


class Store:
    def __init__(self, path: Path) -> None:
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=10)
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            # no fsync per audit line (WAL stays consistent; a power cut loses only the last few):
            # with one, a thousand workers logging in at once waited seconds on the disk
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def put_user(self, rec: UserRecord, created: float) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO users VALUES (?,?,?,?,?,?,?)",
                             (rec.name, rec.role, rec.salt, rec.stored_key, rec.server_key, rec.iterations, created))

    def get_user(self, name: str) -> UserRecord | None:
        with self._lock:
            row = self._db.execute("SELECT name, role, salt, stored_key, server_key, iterations FROM users "
                                   "WHERE name = ?", (name,)).fetchone()
        return UserRecord(*row) if row else None

    def add_audit(self, event: dict[str, Any]) -> None:
        core = {k: event.get(k) for k in ("user", "peer", "job", "worker", "chunk")}
        rest = {k: v for k, v in event.items() if k not in core and k not in ("ts", "event")}
        with self._lock:
            self._db.execute("INSERT INTO audit (ts, event, user, peer, job, worker, chunk, fields) "
                             "VALUES (?,?,?,?,?,?,?,?)",
                             (event["ts"], event["event"], core["user"], core["peer"], core["job"],
                              core["worker"], core["chunk"] if isinstance(core["chunk"], int) else None,
                              json.dumps(rest, sort_keys=True)))

    def audit_events(self, job: str | None = None, last: int | None = None) -> Iterator[dict[str, Any]]:
        """In order; `job`: that job's only; `last`: the most recent N only."""
        query = "SELECT id, ts, event, user, peer, job, worker, chunk, fields FROM audit"
        args: tuple = ()
        if job:
            query, args = query + " WHERE job = ?", (job,)
        with self._lock:
            if last is None:
                rows = self._db.execute(query + " ORDER BY id", args).fetchall()
            else:
                rows = self._db.execute(query + " ORDER BY id DESC LIMIT ?", (*args, last)).fetchall()[::-1]
        for _, ts, event, user, peer, job_id, worker, chunk, fields in rows:
            out = {"ts": ts, "event": event, "user": user, "peer": peer, "job": job_id, "worker": worker,
                   "chunk": chunk, **json.loads(fields)}
            yield {k: v for k, v in out.items() if v is not None}
