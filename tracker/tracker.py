#!/usr/bin/env python3
"""ffdt-tracker: run the tracker, add users, read the audit log."""
from __future__ import annotations

import argparse
import logging
import os
import resource
import shutil
import signal
import sys
import threading
from pathlib import Path

if __package__ in (None, ""):      # run as a script: make the checkout importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from ffdt.common import environment
    environment.ensure("ffdt-tracker")      # any python3: the checkout's .venv, or one line on what to run

from ffdt.common.audit_events import Event
from ffdt.common.cli import (PASSWORD_HELP, ArgumentParser, add_common_options, add_config_option, add_password_option,
                             add_tls_client_options, client_tls, read_password, run_main, setup_logging)
from ffdt.common.config import DEFAULT_TRACKER_PORT, PEER_TTL
from ffdt.common.errors import UsageError
from ffdt.common.net import parse_host_port
from ffdt.common.tls import server_identity
from ffdt.tracker import dashboard
from ffdt.tracker.audit import AuditLog, format_event
from ffdt.tracker.auth import create_user, load_secret
from ffdt.tracker.server import MAX_CONNECTIONS, TrackerContext, TrackerServer
from ffdt.tracker.state import TrackerState
from ffdt.tracker.store import Store

log = logging.getLogger("tracker")

DEFAULT_DATA_DIR = Path("tracker-data")


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="ffdt-tracker", description="Tracker of the FFmpeg distributed transcoder: "
                                "authenticates peers, lists live workers for bosses, keeps the audit log.",
                                epilog="With no command, serves on port %d with data in ./%s." % (
                                    DEFAULT_TRACKER_PORT, DEFAULT_DATA_DIR))
    add_common_options(p)
    sub = p.add_subparsers(dest="command")
    serve = sub.add_parser("serve", help="run the tracker")
    serve.add_argument("--host", default="0.0.0.0", help="address to listen on")
    serve.add_argument("--port", type=int, default=DEFAULT_TRACKER_PORT, help="port (0: any free port)")
    serve.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR, help="users, audit log, secret")
    serve.add_argument("--peer-ttl", type=float, default=PEER_TTL,
                       help="seconds without a heartbeat before a worker is dropped")
    serve.add_argument("--tls-cert", type=Path, help="serve TLS with this certificate (PEM), with --tls-key, "
                       "instead of the key the tracker makes in its data dir")
    serve.add_argument("--tls-key", type=Path, help="the certificate's private key (PEM)")
    serve.add_argument("--plain", action="store_true", help="no TLS: plain TCP (only on a network you trust)")
    serve.add_argument("--http", metavar="HOST:PORT",
                       help="also serve a read-only web dashboard of the farm here (off by default), e.g. "
                            "127.0.0.1:8080; on any other address it is HTTPS with an admin user's login")
    add_common_options(serve)
    add_config_option(serve)
    user = sub.add_parser("add-user", help="create or update a user", epilog=PASSWORD_HELP)
    user.add_argument("name")
    user.add_argument("--role", choices=["boss", "worker", "admin"], required=True)
    user.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    add_password_option(user)
    status = sub.add_parser("status", help="list a running tracker's live workers and jobs (an admin user)",
                            epilog=PASSWORD_HELP)
    status.add_argument("--tracker", default=f"127.0.0.1:{DEFAULT_TRACKER_PORT}", help="tracker HOST:PORT")
    status.add_argument("--user", required=True, help="tracker user with the admin role")
    status.add_argument("--json", action="store_true", help="one JSON object instead of tables")
    add_password_option(status)
    add_tls_client_options(status)
    add_config_option(status)
    logs = sub.add_parser("logs", help="print the audit log")
    logs.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    logs.add_argument("--job", help="only this job's events")
    logs.add_argument("--json", action="store_true", help="JSON lines instead of text")
    p.commands = {"serve": serve, "status": status}       # those that read the config file
    return p


def open_store(data_dir: Path, *, create: bool) -> Store:
    if not data_dir.is_dir():
        if not create:
            raise UsageError(f"{data_dir}: no tracker data here (run `add-user` or `serve` first)")
        try:
            data_dir.mkdir(parents=True, mode=0o700)
        except OSError as exc:
            raise UsageError(f"cannot create {data_dir}: {exc.strerror}") from None
    keep_private(data_dir)
    return Store(data_dir / "tracker.db")


def keep_private(data_dir: Path) -> None:
    """The data directory 0700 and its files 0600, also when they were made before (the users'
    SCRAM keys, the ticket secret and the audit log are for the tracker's user only)."""
    try:
        mode = data_dir.stat().st_mode & 0o777
        if mode & 0o077:
            log.warning("%s was open to other users (mode %o): making it 0700", data_dir, mode)
            data_dir.chmod(0o700)
        for path in data_dir.iterdir():
            if path.is_file() and path.stat().st_mode & 0o077:
                path.chmod(0o600)
    except OSError as exc:
        raise UsageError(f"cannot make {data_dir} private: {exc.strerror}") from None


def raise_open_files_limit(wanted: int) -> None:
    """Each connection is a file descriptor: the usual soft limit of 1,024 would stop a farm of
    a thousand workers short of MAX_CONNECTIONS, so take up to `wanted` of the hard limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    if target < wanted:
        log.warning("at most %d open files (ulimit -n): fewer than %d connections fit", target, wanted)


def serve(args: argparse.Namespace) -> int:
    if not 0 <= args.port < 65536:
        raise UsageError(f"port {args.port} out of range (0-65535)")
    http_addr = parse_host_port(args.http, any_port=True) if args.http else None
    if http_addr is not None:
        dashboard.check_address(http_addr[0], tls=not args.plain)      # before anything is made
    raise_open_files_limit(MAX_CONNECTIONS + 256)
    created = not args.data_dir.exists()
    store = open_store(args.data_dir, create=True)
    audit = AuditLog(args.data_dir / "audit.jsonl", store)
    # a key of its own is made on the first start and kept, so that clients can pin it
    tls, fingerprint = server_identity(args.tls_cert, args.tls_key, args.plain, args.data_dir, "ffdt-tracker")
    ctx = TrackerContext(TrackerState(), store, audit, load_secret(args.data_dir), ttl=args.peer_ttl, tls=tls)
    server = web = None
    try:
        where = f"{args.host}:{args.port}"
        server = TrackerServer((args.host, args.port), ctx)
        if http_addr is not None:
            where = f"{http_addr[0]}:{http_addr[1]}"
            web = dashboard.Dashboard(http_addr, ctx.state, store, "%s:%d" % server.server_address[:2], tls=tls)
    except OSError as exc:
        if server is not None:
            server.server_close()
        audit.close()
        store.close()
        if created:          # nothing was served: leave no ./tracker-data behind
            shutil.rmtree(args.data_dir, ignore_errors=True)
        raise UsageError(f"cannot listen on {where}: {exc.strerror}") from None
    host, port = server.server_address[:2]
    # the fingerprint is what workers and bosses pin (--tracker-fingerprint)
    print(f"listening on {host}:{port} " + (f"TLS key {fingerprint}" if fingerprint else "plain TCP"), flush=True)
    audit.record(Event.TRACKER_STARTED, peer=f"{host}:{port}")
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    thread = threading.Thread(target=server.serve_forever, name="accept", daemon=True)
    thread.start()
    if web is not None:
        web.start()
        print(f"dashboard on {web.url}", flush=True)
    stop.wait()
    if web is not None:
        web.stop()
    server.stop()
    audit.record(Event.TRACKER_STOPPED, peer=f"{host}:{port}")
    audit.close()
    store.close()
    return 0


def add_user(args: argparse.Namespace) -> int:
    if not args.name or len(args.name) > 64 or not all(c.isalnum() or c in "._-" for c in args.name):
        raise UsageError("user names are 1-64 letters, digits, '.', '_' or '-'")
    password = read_password(args.password_file, confirm=True)
    store = open_store(args.data_dir, create=True)
    create_user(store, args.name, args.role, password)
    store.close()
    print(f"user {args.name} ({args.role}) saved in {args.data_dir}")
    return 0


def show_logs(args: argparse.Namespace) -> int:
    import json
    store = open_store(args.data_dir, create=False)
    count = 0
    for event in store.audit_events(args.job):
        print(json.dumps(event, sort_keys=True) if args.json else format_event(event))
        count += 1
    store.close()
    if args.job and not count:
        raise UsageError(f"no events for job {args.job}")
    return 0


def show_status(args: argparse.Namespace) -> int:
    from ffdt.tracker import status
    addr = parse_host_port(args.tracker, DEFAULT_TRACKER_PORT)
    farm = status.fetch(addr, args.user, read_password(args.password_file), client_tls(args))
    print(status.show(farm, f"{addr[0]}:{addr[1]}", as_json=args.json))
    return 0


def parse(argv: list[str]) -> argparse.Namespace:
    """The command line over the config file: its [serve] table for `serve` (port, data-dir,
    http, ...), its top-level keys (tracker, user, password-file, tracker-fingerprint) for `status`."""
    parser = build_parser()
    command = next((a for a in argv if not a.startswith("-")), None)
    if command in parser.commands:
        return parser.parse_with_config(argv, command, parser.commands[command])
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse(argv)
    if args.command is None:     # bare `tracker.py`: serve with defaults (and the config file's)
        args = parse(["serve", *(["-v"] if args.verbose else [])])
    setup_logging("tracker", verbose=args.verbose)
    os.umask(0o077)      # whatever the tracker writes (database, audit log, secret) is its user's only
    command = {"serve": serve, "add-user": add_user, "logs": show_logs, "status": show_status}[args.command]
    return run_main("tracker", lambda: command(args))


if __name__ == "__main__":
    sys.exit(main())
