"""The tracker's read-only web dashboard (`serve --http HOST:PORT`): the farm of `status` (live
workers, running jobs with their progress) and the latest audit events, as one HTML page that
reloads itself every few seconds; /farm.json gives the same as data. No JavaScript at all.

Loopback only: the page has no login of its own, so it is served where only this machine's users
reach it (others use `ssh -L`). Requests naming another Host are refused, so a web page in the
admin's browser cannot read it through a DNS name rebound to 127.0.0.1.
"""
from __future__ import annotations

import html
import ipaddress
import json
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from ffdt.common.config import IO_TIMEOUT
from ffdt.common.errors import UsageError
from ffdt.tracker import farm as view
from ffdt.tracker.audit import format_event
from ffdt.tracker.state import TrackerState
from ffdt.tracker.store import Store

log = logging.getLogger("tracker")

REFRESH_SECONDS = 2
RECENT_EVENTS = 40
PAGE_BUDGET = 1 << 20          # bytes of farm JSON on one page (a farm of thousands fits)
HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'",   # no script, no fetch
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
STYLE = """body{font:14px system-ui,sans-serif;margin:1.5em;color:#222}h1{font-size:1.4em;margin:0}
h2{font-size:1.1em;margin:1.4em 0 .4em}table{border-collapse:collapse}td,th{padding:.2em .8em;
text-align:left;border-bottom:1px solid #ddd;white-space:nowrap}th{background:#f3f3f3}.dim{color:#777}
progress{width:9em;vertical-align:middle}td.events{white-space:pre-wrap;font-family:monospace}"""


def check_address(host: str) -> None:
    """The dashboard listens on loopback only (see the module's doc)."""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise UsageError(f"--http {host}: the dashboard has no login, so it listens on loopback only "
                         "(127.0.0.1); from elsewhere use ssh -L PORT:127.0.0.1:PORT to the tracker host")


class Dashboard(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, addr: tuple[str, int], state: TrackerState, store: Store, tracker: str) -> None:
        check_address(addr[0])
        self.state, self.store, self.tracker = state, store, tracker
        super().__init__(addr, _Handler)
        host, port = self.server_address[:2]
        self.url = f"http://{host}:{port}/"
        self.hosts = {f"{host}:{port}", f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}"}
        self._thread = threading.Thread(target=self.serve_forever, name="dashboard", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.shutdown()
        self.server_close()

    def page(self) -> str:
        farm = view.snapshot(self.state, PAGE_BUDGET)
        events = list(self.store.audit_events(last=RECENT_EVENTS))
        e = html.escape
        workers, jobs = farm["workers"], farm["jobs"]
        parts = [f"<!doctype html><html lang=en><head><meta charset=utf-8>"
                 f"<meta http-equiv=refresh content={REFRESH_SECONDS}><title>ffdt farm</title>"
                 f"<style>{STYLE}</style></head><body>",
                 f"<h1>ffdt farm</h1><p class=dim>tracker {e(self.tracker)} · "
                 f"<span id=summary>{len(workers)} live worker{'s' * (len(workers) != 1)}, "
                 f"{len(jobs)} running job{'s' * (len(jobs) != 1)}</span> · {time.strftime('%H:%M:%S')}</p>"]
        parts.append("<h2>Workers</h2>" + (_table("workers", view.WORKER_COLUMNS, view.worker_rows(farm))
                                           if workers else "<p class=dim>none registered</p>"))
        if jobs:
            rows = view.job_rows(farm)
            bars = [f"<progress value={j.get('frames_done', 0)} max={j['frames']}></progress> " if j.get("frames")
                    else "" for j in jobs]
            rows = [(*r[:3], (bar, r[3]), *r[4:]) for r, bar in zip(rows, bars)]
            parts.append("<h2>Jobs</h2>" + _table("jobs", view.JOB_COLUMNS, rows))
        else:
            parts.append("<h2>Jobs</h2><p class=dim>none running</p>")
        if farm.get("more"):
            parts.append(f"<p class=dim>and {farm['more']} more</p>")
        lines = "\n".join(e(view.printable(format_event(ev))) for ev in reversed(events))
        parts.append(f"<h2>Recent events</h2><table id=events><tr><td class=events>{lines}</td></tr></table>")
        return "".join(parts) + "</body></html>\n"

    def farm_json(self) -> str:
        return json.dumps({**view.snapshot(self.state, PAGE_BUDGET), "tracker": self.tracker,
                           "events": list(self.store.audit_events(last=RECENT_EVENTS))}, sort_keys=True)


def _table(name: str, columns: tuple[str, ...], rows: list[tuple[Any, ...]]) -> str:
    """Cells are text (escaped here) or (trusted markup, text) pairs."""
    def cell(c: Any) -> str:
        return c[0] + html.escape(view.printable(c[1])) if isinstance(c, tuple) else html.escape(view.printable(c))
    head = "".join(f"<th>{html.escape(c.lower())}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{cell(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table id={name}><tr>{head}</tr>{body}</table>"


class _Handler(BaseHTTPRequestHandler):
    server: Dashboard
    timeout = IO_TIMEOUT           # a client that stops sending is dropped
    server_version = "ffdt-dashboard"
    sys_version = ""

    def do_GET(self) -> None:      # noqa: N802 - http.server's name
        if self.headers.get("Host", "") not in self.server.hosts:
            return self._send(421, "text/plain", "this dashboard answers to its own address only\n")
        path = self.path.split("?", 1)[0]
        if path == "/":
            return self._send(200, "text/html; charset=utf-8", self.server.page())
        if path == "/farm.json":
            return self._send(200, "application/json", self.server.farm_json())
        return self._send(404, "text/plain", "not found\n")

    def do_HEAD(self) -> None:     # noqa: N802
        self.do_GET()

    def _send(self, code: int, kind: str, body: str) -> None:
        data = body.encode("utf-8")
        self.send_response(code)
        for key, value in {**HEADERS, "Content-Type": kind, "Content-Length": str(len(data))}.items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:   # noqa: A002 - http.server's signature
        log.debug("dashboard: %s %s", self.address_string(), format % args)
