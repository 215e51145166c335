"""The audit trail: who did what, when, with what outcome. JSON lines and SQLite, never secrets.

Event names and their keys are listed in README.md ("Audit log").
"""
from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any, Callable, Protocol

from ffdt.common.audit_events import Event
from ffdt.tracker.store import Store


class Recorder(Protocol):
    def record(self, event: Event, **fields: Any) -> None: ...


class AuditLog:
    """Append-only: one JSON object per line, flushed per event, mirrored into SQLite."""

    def __init__(self, path: Path, store: Store, clock: Callable[[], float] = time.time) -> None:
        self._stream = path.open("a", encoding="utf-8")
        self._store, self._clock, self._lock = store, clock, threading.Lock()

    def record(self, event: Event, **fields: Any) -> None:
        entry = {"ts": round(self._clock(), 3), "event": Event(event).value,
                 **{k: v for k, v in fields.items() if v is not None}}
        line = json.dumps(entry, sort_keys=True)
        with self._lock:
            self._stream.write(line + "\n")
            self._stream.flush()
            self._store.add_audit(entry)

    def close(self) -> None:
        with self._lock:
            self._stream.close()


class MemoryAudit:
    """The same interface for unit tests."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def record(self, event: Event, **fields: Any) -> None:
        self.events.append({"event": Event(event).value, **fields})


def format_event(e: dict[str, Any]) -> str:
    """One audit event as a line a person reads: time, event, then key=value pairs."""
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e["ts"]))
    rest = " ".join(f"{k}={_show(v)}" for k, v in e.items() if k not in ("ts", "event"))
    return f"{stamp}  {e['event']:<16} {rest}".rstrip()


def _show(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    # quote anything that could pass for another field or line (values come from peers)
    plain = text and text.isprintable() and not any(c in text for c in ' "=')
    return text if plain else json.dumps(text)
