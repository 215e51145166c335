"""The farm as the tracker sees it (live workers, running jobs), as data and as table rows: one
view for the `status` reply (server.py), its command-line client (status.py) and the dashboard
(dashboard.py)."""
from __future__ import annotations

import json
from typing import Any

from ffdt.common.encoders import ENCODERS
from ffdt.tracker.state import TrackerState


def snapshot(state: TrackerState, budget: int) -> dict[str, Any]:
    """`farm` (PROTOCOL.md section 6.4), cut to fit `budget` bytes of JSON: jobs first (few),
    then as many workers as fit; `more` counts what was left out."""
    workers, jobs = state.snapshot()
    worker_entries = [{"name": w.name, "host": w.host, "msg_port": w.msg_port, "slots": w.slots, "busy": w.busy,
                       "ffmpeg": w.ffmpeg, "encoders": [e for e in w.encoders if e in ENCODERS], "tls": w.tls,
                       "fps": None if speed.fps is None else round(speed.fps, 2), "chunks_done": speed.chunks,
                       "last_heartbeat": round(silent, 1)}
                      for w, speed, silent in workers]
    job_entries = [{"job": j.id, "boss": j.boss, "input": j.input, "seconds": round(age, 1), "frames": j.frames,
                    "frames_done": j.frames_done, "chunks_done": j.chunks_done,
                    "workers": len(j.workers - j.dropped)}
                   for j, age in jobs]
    shown_jobs = _fitting(job_entries, budget // 4)
    shown_workers = _fitting(worker_entries, budget - sum(len(json.dumps(j)) + 1 for j in shown_jobs))
    return {"workers": shown_workers, "jobs": shown_jobs,
            "more": len(worker_entries) - len(shown_workers) + len(job_entries) - len(shown_jobs)}


def _fitting(entries: list[dict[str, Any]], budget: int) -> list[dict[str, Any]]:
    """The first entries whose JSON fits in `budget` bytes."""
    kept, used = [], 0
    for entry in entries:
        used += len(json.dumps(entry, separators=(",", ":"))) + 1
        if used > budget:
            break
        kept.append(entry)
    return kept


WORKER_COLUMNS = ("WORKER", "BUSY", "FFMPEG", "ENCODERS", "FPS", "CHUNKS", "HEARD")
JOB_COLUMNS = ("JOB", "BOSS", "INPUT", "DONE", "FPS", "ETA", "WORKERS", "RUNNING")


def worker_rows(farm: dict[str, Any]) -> list[tuple[str, ...]]:
    return [(str(w.get("name")), f"{w.get('busy', 0)}/{w.get('slots', '?')}",
             str(w.get("ffmpeg", "")).removeprefix("ffmpeg ")[:30] or "?",   # as workers register it
             ",".join(map(str, w.get("encoders", []))), _number(w.get("fps")), str(w.get("chunks_done", 0)),
             f"{_number(w.get('last_heartbeat'))}s ago")
            for w in farm["workers"]]


def job_rows(farm: dict[str, Any]) -> list[tuple[str, ...]]:
    rows = []
    for j in farm["jobs"]:
        share, fps, eta = progress(j)
        rows.append((str(j.get("job")), str(j.get("boss")), str(j.get("input")), share, _number(fps), _duration(eta),
                     str(j.get("workers", 0)), _duration(j.get("seconds"))))
    return rows


def progress(job: dict[str, Any]) -> tuple[str, float | None, float | None]:
    """("done/total (n%)", frames per second since the job started, seconds left at that rate)."""
    total, done, age = job.get("frames"), job.get("frames_done", 0) or 0, job.get("seconds", 0) or 0
    fps = done / age if age > 0 and done else None
    eta = (total - done) / fps if fps and total else None
    share = f"{done}/{total} ({100 * done / total:.0f}%)" if total else f"{done} frames"
    return share, fps, eta


def _number(value: Any) -> str:
    return "-" if not isinstance(value, (int, float)) else f"{value:.1f}"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def printable(text: str) -> str:
    """Peers chose these strings: no control characters reach a terminal."""
    return "".join(c if c.isprintable() else "?" for c in text)
