"""The tracker's read-only web dashboard (`serve --http HOST:PORT`): the farm of `status` (live
workers, running jobs with their progress) and the latest audit events, as one HTML page that
reloads itself every few seconds; /farm.json gives the same as data. No JavaScript at all.

On loopback it has no login: only this machine's users reach it, and requests naming another
Host are refused, so a web page in the admin's browser cannot read it through a DNS name rebound
to 127.0.0.1. Anywhere else it is HTTPS (the tracker's own TLS key or --tls-cert) with an HTTP
Basic login of an admin user, checked against the user's stored SCRAM keys; a client address
with MAX_FAILURES wrong logins in FAILURE_WINDOW seconds is refused for that long.
"""
from __future__ import annotations

import base64
import collections
import hashlib
import html
import ipaddress
import json
import logging
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from ffdt.common.config import IO_TIMEOUT
from ffdt.common.errors import UsageError
from ffdt.tracker import farm as view
from ffdt.tracker.audit import format_event
from ffdt.tracker.auth import password_matches
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


MAX_FAILURES = 5              # wrong logins from one address ...
FAILURE_WINDOW = 60.0         # ... in this many seconds: refused for as long
LOGIN_CACHE = 60.0            # a login checked is trusted this long (a PBKDF2 per 2 s reload is not)
MAX_REMEMBERED = 4096         # addresses and logins kept for the two rules above
MAX_CLIENTS = 32              # requests served at once


def is_loopback(host: str) -> bool:
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_address(host: str, tls: bool) -> None:
    """Off loopback the dashboard needs TLS for its login (see the module's doc)."""
    if not is_loopback(host) and not tls:
        raise UsageError(f"--http {host}: off loopback the dashboard asks for an admin login, which needs TLS: "
                         "drop --plain, or listen on 127.0.0.1 and use ssh -L")


class AdminLogin:
    """HTTP Basic credentials of an admin user, checked against the tracker's user store."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._lock = threading.Lock()
        self._good: dict[bytes, float] = {}                         # digest of the header -> until
        self._failures: dict[str, collections.deque[float]] = {}    # client address -> times

    def check(self, header: str | None, peer: str) -> int:
        """200, 401 (no or wrong login), 403 (not an admin) or 429 (too many wrong logins)."""
        now = time.monotonic()
        with self._lock:
            if len(self._failures) > MAX_REMEMBERED:      # many addresses: forget the quiet ones
                self._failures = {p: d for p, d in self._failures.items() if d and now - d[-1] <= FAILURE_WINDOW}
            if len(self._good) > MAX_REMEMBERED:
                self._good = {k: t for k, t in self._good.items() if t > now}
            failures = self._failures.setdefault(peer, collections.deque())
            while failures and now - failures[0] > FAILURE_WINDOW:
                failures.popleft()
            if len(failures) >= MAX_FAILURES:
                return 429
            digest = hashlib.sha256((header or "").encode()).digest()
            if self._good.get(digest, 0.0) > now:
                return 200
        code = self._verify(header)
        with self._lock:
            if code == 200:
                self._good[digest] = now + LOGIN_CACHE
            elif code == 401 and header:       # a wrong password (a right one of a non-admin is no guess)
                self._failures[peer].append(now)
        return code

    def _verify(self, header: str | None) -> int:
        if not header or not header.startswith("Basic ") or len(header) > 1024:
            return 401
        try:
            user, sep, password = base64.b64decode(header[6:], validate=True).decode("utf-8").partition(":")
        except ValueError:            # not base64 (binascii.Error), not ASCII, not UTF-8
            return 401
        rec = self.store.get_user(user) if sep else None
        if rec is None or not password_matches(rec, password):
            return 401
        return 200 if rec.role == "admin" else 403


class Dashboard(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, addr: tuple[str, int], state: TrackerState, store: Store, tracker: str,
                 tls: ssl.SSLContext | None = None) -> None:
        check_address(addr[0], tls is not None)
        self.state, self.store, self.tracker = state, store, tracker
        self.login = None if is_loopback(addr[0]) else AdminLogin(store)
        self._clients = threading.BoundedSemaphore(MAX_CLIENTS)
        super().__init__(addr, _Handler)
        if self.login is not None:
            assert tls is not None
            # the handshake runs in the request's thread, under its timeout (_Handler.setup)
            self.socket = tls.wrap_socket(self.socket, server_side=True, do_handshake_on_connect=False)
        host, port = self.server_address[:2]
        self.url = f"{'http' if self.login is None else 'https'}://{host}:{port}/"
        self.hosts = {f"{host}:{port}", f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}"}
        self._thread = threading.Thread(target=self.serve_forever, name="dashboard", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.shutdown()
        self.server_close()

    def process_request(self, request: Any, client_address: Any) -> None:
        """At most MAX_CLIENTS requests at once, each in a thread of its own (no thread per idle
        connection beyond that: a browser keeps one or two)."""
        if not self._clients.acquire(blocking=False):
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._clients.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._clients.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that speaks no TLS or breaks off: one debug line, not socketserver's traceback."""
        log.debug("dashboard: %s: request failed", client_address[0])

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

    def setup(self) -> None:
        super().setup()
        if isinstance(self.request, ssl.SSLSocket):
            self.request.do_handshake()        # an OSError here ends this request only

    def do_GET(self) -> None:      # noqa: N802 - http.server's name
        login = self.server.login
        if login is None and self.headers.get("Host", "") not in self.server.hosts:
            return self._send(421, "text/plain", "this dashboard answers to its own address only\n")
        if login is not None:
            code = login.check(self.headers.get("Authorization"), self.client_address[0])
            if code != 200:
                why = {401: "an admin user's login, please\n", 403: "for admin users only\n",
                       429: "too many wrong logins from here; wait a minute\n"}[code]
                return self._send(code, "text/plain", why)
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
        extra = {"WWW-Authenticate": 'Basic realm="ffdt farm", charset="UTF-8"'} if code == 401 else {}
        for key, value in {**HEADERS, **extra, "Content-Type": kind, "Content-Length": str(len(data))}.items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:   # noqa: A002 - http.server's signature
        log.debug("dashboard: %s %s", self.address_string(), format % args)
