"""`tracker.py status`: the farm as a running tracker sees it, asked over the tracker's own
protocol by an admin user (PROTOCOL.md section 6.4): live workers and running jobs."""
from __future__ import annotations

import json
import time
from typing import Any

from ffdt.client.tracker_client import TrackerClient
from ffdt.common.protocol import Role
from ffdt.common.tls import ClientTls
from ffdt.tracker import farm as view


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
        lines += ["", *_table([view.WORKER_COLUMNS, *view.worker_rows(farm)])]
    if jobs:
        lines += ["", *_table([view.JOB_COLUMNS, *view.job_rows(farm)])]
    if farm.get("more"):
        lines += ["", f"(and {farm['more']} more that did not fit in one reply)"]
    return "\n".join(lines)


def _count(n: int, what: str) -> str:
    return f"{n} {what}{'' if n == 1 else 's'}"


def _table(rows: list[tuple[str, ...]]) -> list[str]:
    rows = [tuple(view.printable(c) for c in r) for r in rows]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
