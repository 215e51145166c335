"""`tracker.py status`: the farm as a running tracker sees it, asked over the tracker's own
protocol by an admin user (PROTOCOL.md section 6.4): live workers and running jobs."""
from __future__ import annotations

import json
import time
from typing import Any

from client.tracker_client import TrackerClient
from common.protocol import Role
from common.tls import ClientTls


def fetch(addr: tuple[str, int], user: str, password: str, tls: ClientTls) -> dict[str, Any]:
    client = TrackerClient(addr, user, password, Role.ADMIN, tls=tls.context, pin=tls.pin, known=tls.known)
    try:
        client.connect()
        return client.status()
    finally:
        client.close()


def show(farm: dict[str, Any], where: str, as_json: bool = False) -> str:
    """The farm as text a person reads (two tables), or as one JSON object."""
    if as_json:
        return json.dumps({**farm, "tracker": where, "time": round(time.time(), 3)}, sort_keys=True)
    workers, jobs = farm["workers"], farm["jobs"]
    lines = [f"tracker {where}: {_count(len(workers), 'live worker')}, {_count(len(jobs), 'running job')}"]
    if workers:
        rows = [("WORKER", "BUSY", "FFMPEG", "ENCODERS", "FPS", "CHUNKS", "HEARD")]
        for w in workers:
            rows.append((str(w.get("name")), f"{w.get('busy', 0)}/{w.get('slots', '?')}",
                         _ffmpeg_version(str(w.get("ffmpeg", ""))), ",".join(map(str, w.get("encoders", []))),
                         _number(w.get("fps")), str(w.get("chunks_done", 0)), f"{_number(w.get('last_heartbeat'))}s ago"))
        lines += ["", *_table(rows)]
    if jobs:
        rows = [("JOB", "BOSS", "INPUT", "DONE", "FPS", "ETA", "WORKERS", "RUNNING")]
        for j in jobs:
            total, done, age = j.get("frames"), j.get("frames_done", 0), j.get("seconds", 0) or 0
            fps = done / age if age > 0 and done else None
            eta = (total - done) / fps if fps and total else None
            share = f"{done}/{total} ({100 * done / total:.0f}%)" if total else f"{done} frames"
            rows.append((str(j.get("job")), str(j.get("boss")), str(j.get("input")), share, _number(fps),
                         _duration(eta), str(j.get("workers", 0)), _duration(age)))
        lines += ["", *_table(rows)]
    if farm.get("more"):
        lines += ["", f"(and {farm['more']} more that did not fit in one reply)"]
    return "\n".join(lines)


def _count(n: int, what: str) -> str:
    return f"{n} {what}{'' if n == 1 else 's'}"


def _number(value: Any) -> str:
    return "-" if not isinstance(value, (int, float)) else f"{value:.1f}"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def _ffmpeg_version(build: str) -> str:
    """'ffmpeg 5.1.9-0+deb12u1' (as workers register it) -> '5.1.9-0+deb12u1'."""
    return build.removeprefix("ffmpeg ")[:30] or "?"


def _table(rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    # peers chose these strings: no control characters reach the admin's terminal
    return ["  ".join(_printable(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]


def _printable(text: str) -> str:
    return "".join(c if c.isprintable() else "?" for c in text)
