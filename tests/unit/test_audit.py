"""The audit trail (tracker/audit.py): JSON lines on disk, mirrored into SQLite, readable output."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from ffdt.tracker.audit import AuditLog, MemoryAudit, format_event
from ffdt.tracker.store import Store

T0 = 1_700_000_000.0


class Ticker:
    """A clock that returns T0, T0+1.25, T0+2.5, ... (and a fraction to test rounding)."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> float:
        self.calls += 1
        return T0 + 1.25 * (self.calls - 1) + 0.0004


@pytest.fixture
def store(tmp_path: Path):
    s = Store(tmp_path / "tracker.db")
    yield s
    s.close()


@pytest.fixture
def audit(tmp_path: Path, store: Store):
    log = AuditLog(tmp_path / "audit.jsonl", store, clock=Ticker())
    yield log
    log.close()


def lines(path: Path) -> list[dict]:
    text = path.read_text(encoding="utf-8")
    assert text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]


def test_one_json_object_per_event_with_ts_and_event(tmp_path, audit):
    audit.record("auth_ok", peer="127.0.0.1:5000", user="alice", role="boss")
    audit.record("job_started", peer="127.0.0.1:5000", user="alice", job="j1", input="movie.mp4", chunks=7)
    got = lines(tmp_path / "audit.jsonl")
    assert got == [
        {"ts": T0, "event": "auth_ok", "peer": "127.0.0.1:5000", "user": "alice", "role": "boss"},
        {"ts": T0 + 1.25, "event": "job_started", "peer": "127.0.0.1:5000", "user": "alice", "job": "j1",
         "input": "movie.mp4", "chunks": 7},
    ]


def test_each_event_is_flushed_as_it_is_recorded(tmp_path, audit):
    audit.record("tracker_started", peer="0.0.0.0:9000")
    # read back while the log is still open: nothing may sit in a buffer
    assert [e["event"] for e in lines(tmp_path / "audit.jsonl")] == ["tracker_started"]


def test_none_values_are_left_out(tmp_path, audit):
    audit.record("chunk_failed", job="j1", chunk=3, worker=None, detail=None, frames=0, reason="")
    raw = (tmp_path / "audit.jsonl").read_text(encoding="utf-8")
    assert "null" not in raw
    entry = lines(tmp_path / "audit.jsonl")[0]
    assert "worker" not in entry and "detail" not in entry
    assert entry["frames"] == 0 and entry["reason"] == ""      # falsy but present values are kept


def test_appends_to_an_existing_log(tmp_path, store):
    first = AuditLog(tmp_path / "audit.jsonl", store, clock=Ticker())
    first.record("tracker_started")
    first.close()
    second = AuditLog(tmp_path / "audit.jsonl", store, clock=Ticker())
    second.record("tracker_started")
    second.close()
    assert len(lines(tmp_path / "audit.jsonl")) == 2


def test_events_are_mirrored_into_the_store_and_filtered_by_job(audit, store):
    audit.record("job_started", user="alice", job="j1", input="a.mp4")
    audit.record("job_started", user="bob", job="j2", input="b.mp4")
    audit.record("chunk_done", job="j1", chunk=0, worker="w@h:1", frames=25, seconds=1.5)
    audit.record("workers_given", job="j1", count=2, workers=["w@h:1", "w@h:2"], detail=None)
    j1 = list(store.audit_events(job="j1"))
    assert [e["event"] for e in j1] == ["job_started", "chunk_done", "workers_given"]
    assert all(e["job"] == "j1" for e in j1)
    assert j1[1] == {"ts": T0 + 2.5, "event": "chunk_done", "job": "j1", "chunk": 0, "worker": "w@h:1",
                     "frames": 25, "seconds": 1.5}
    assert j1[2]["workers"] == ["w@h:1", "w@h:2"] and "detail" not in j1[2]
    assert [e["job"] for e in store.audit_events()] == ["j1", "j2", "j1", "j1"]
    assert list(store.audit_events(job="j3")) == []


def test_store_and_file_agree(tmp_path, audit, store):
    audit.record("register", peer="10.0.0.2:4000", user="w", worker="w@10.0.0.2:9100", slots=4,
                 ffmpeg="ffmpeg 6.1", file_port=9101)
    audit.record("worker_lost", worker="w@10.0.0.2:9100", user="w", reason="missed heartbeats")
    assert list(store.audit_events()) == lines(tmp_path / "audit.jsonl")


def test_format_event_is_one_readable_line():
    text = format_event({"ts": T0, "event": "chunk_failed", "job": "j1", "chunk": 3, "worker": "w@h:1",
                         "detail": "exit 1: Invalid data", "workers": ["a", "b"]})
    assert "\n" not in text
    assert re.match(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}  chunk_failed ", text), text
    assert " job=j1 " in text and " chunk=3 " in text and " worker=w@h:1 " in text
    assert 'detail="exit 1: Invalid data"' in text        # values with spaces are quoted
    listed = re.search(r" workers=(.*)$", text)
    assert listed, text
    shown = json.loads(listed.group(1))                   # quoted because it has a space...
    assert json.loads(shown) == ["a", "b"]                # ...and the list reads back intact
    assert "ts=" not in text and "event=" not in text


def test_format_event_quotes_empty_values():
    assert format_event({"ts": T0, "event": "auth_failed", "reason": ""}).endswith('reason=""')


def test_format_event_without_fields_has_no_trailing_space():
    text = format_event({"ts": T0, "event": "tracker_started"})
    assert text.endswith("tracker_started")


@pytest.mark.parametrize("value", ["a\n2024-01-01\t00:00:00\tauth_ok\tuser=admin", "x\ry", "tab\there"])
def test_format_event_cannot_be_split_by_control_characters(value):
    text = format_event({"ts": T0, "event": "job_started", "input": value})
    assert "\n" not in text and "\r" not in text and "\t" not in text


def test_memory_audit_has_the_same_interface():
    mem = MemoryAudit()
    mem.record("auth_failed", peer="p", user="u", reason="bad credentials")
    assert mem.events == [{"event": "auth_failed", "peer": "p", "user": "u", "reason": "bad credentials"}]
