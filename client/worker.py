#!/usr/bin/env python3
"""ffdt-worker: offer this machine's ffmpeg to bosses the tracker sends (the command line only).

The ports, sessions and registration are client/session.py; encoding a chunk is client/encode.py.
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import socket
import ssl
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):      # run as a script: make the checkout importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from ffdt.common import environment
    environment.ensure("ffdt-worker")      # any python3: the checkout's .venv, or one line on what to run

from ffdt.client.progress import bars_wanted
from ffdt.client.session import Worker
from ffdt.common import ffmpeg
from ffdt.common.cli import (PASSWORD_HELP, ArgumentParser, add_common_options, add_config_option, add_ffmpeg_options,
                             add_password_option, add_tls_client_options, client_tls, read_password, run_main,
                             setup_logging)
from ffdt.common.config import DEFAULT_PREFETCH, MAX_SLOTS, RECONNECT_BACKOFF_CAP, RECONNECT_BACKOFF_FIRST
from ffdt.common.errors import ConnectionClosed, PeerUnreachable, UsageError
from ffdt.common.net import Backoff, parse_host_port
from ffdt.common.tls import ClientTls, server_identity

log = logging.getLogger("worker")


@dataclass(frozen=True)
class WorkerConfig:
    tracker: tuple[str, int]
    user: str
    password: str = field(repr=False)
    bind: str
    advertise: str
    msg_port: int
    file_port: int
    slots: int
    prefetch: int
    threads: int
    workdir: Path | None
    tools: ffmpeg.Tools
    bars: bool
    tls_server: ssl.SSLContext | None = None     # TLS on our two ports (None: plain TCP)
    tls_fingerprint: str | None = None           # of the key they serve, registered for bosses to pin
    tls_client: ClientTls = ClientTls(None)      # TLS to the tracker
    early_encodes: bool = True                   # encode a chunk while it arrives (session.EarlyEncode)


# ---------------------------------------------------------------- command line

def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(
        prog="ffdt-worker", description="Offer this machine's ffmpeg to bosses: listen on MSG_PORT and "
        "FILE_PORT, register with the tracker, encode the chunks bosses send.",
        epilog=PASSWORD_HELP + ". Environment: FFDT_PASSWORD, FFMPEG_PATH.")
    p.add_argument("msg_port", type=int, metavar="MSG_PORT", help="message port (0: any free port)")
    p.add_argument("file_port", type=int, metavar="FILE_PORT", help="file port (0: any free port)")
    p.add_argument("--tracker", required=True, help="tracker HOST:PORT")
    p.add_argument("--user", required=True, help="tracker user with the worker role")
    p.add_argument("--host", default="0.0.0.0", help="address to listen on")
    p.add_argument("--advertise", help="address bosses should use to reach this worker "
                   "(default: --host, or this machine's address toward the tracker)")
    p.add_argument("--slots", type=int, default=1, help="chunks encoded at the same time")
    p.add_argument("--prefetch", type=int, default=DEFAULT_PREFETCH,
                   help="chunks fetched ahead and held while encoding, so an encode never waits on the network")
    p.add_argument("--threads", type=int, default=0, help="ffmpeg threads per chunk (0: ffmpeg decides)")
    p.add_argument("--workdir", type=Path, help="where chunks are kept while encoding (default: system temp)")
    add_ffmpeg_options(p, quiet_help="no progress bars, warnings only")
    p.add_argument("--tls-cert", type=Path, help="serve both ports with this certificate (PEM) instead of a key "
                   "made at start")
    p.add_argument("--tls-key", type=Path, help="the certificate's private key (PEM)")
    add_tls_client_options(p)
    add_password_option(p)
    add_config_option(p)
    add_common_options(p)
    return p


def advertised_host(args: argparse.Namespace, tracker: tuple[str, int]) -> str:
    if args.advertise:
        return args.advertise
    if args.host not in ("0.0.0.0", "::", ""):
        return args.host
    # the local address a connection toward the tracker would use (UDP connect sends nothing)
    with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect(tracker)
        return probe.getsockname()[0]
    return "127.0.0.1"


def tls_options(args: argparse.Namespace) -> dict[str, Any]:
    """Our ports: a certificate given, or a key made now for this run (bosses pin its
    fingerprint, which we register), or plain TCP with --plain."""
    server, fingerprint = server_identity(args.tls_cert, args.tls_key, args.plain, None, "ffdt-worker")
    return {"tls_server": server, "tls_fingerprint": fingerprint, "tls_client": client_tls(args)}


def register_when_reachable(worker: Worker) -> None:
    """A tracker that is down (not up yet, restarting) is waited for, as a worker that loses it
    later does: a farm can start in any order. A refusal (wrong password) ends the worker."""
    backoff = Backoff(RECONNECT_BACKOFF_FIRST, RECONNECT_BACKOFF_CAP)
    while True:
        try:
            worker.register()
            return
        except (PeerUnreachable, ConnectionClosed) as exc:
            log.warning("%s; trying again in up to %.0fs (Ctrl-C to stop)", exc, backoff.ceiling)
            time.sleep(backoff.next())


def run_worker(args: argparse.Namespace) -> int:
    for port in (args.msg_port, args.file_port):
        if not 0 <= port < 65536:
            raise UsageError(f"port {port} out of range")
    if not 1 <= args.slots <= MAX_SLOTS:
        raise UsageError(f"--slots must be 1..{MAX_SLOTS}")
    if not 0 <= args.prefetch <= MAX_SLOTS:
        raise UsageError(f"--prefetch must be 0..{MAX_SLOTS}")
    tracker = parse_host_port(args.tracker)
    cfg = WorkerConfig(tracker=tracker, user=args.user, password=read_password(args.password_file),
                       bind=args.host, advertise=advertised_host(args, tracker), msg_port=args.msg_port,
                       file_port=args.file_port, slots=args.slots, prefetch=args.prefetch, threads=max(0, args.threads),
                       workdir=args.workdir, tools=ffmpeg.find_tools(args.ffmpeg, args.use_global),
                       bars=bars_wanted(args.quiet), **tls_options(args))
    worker = Worker(cfg)
    try:
        register_when_reachable(worker)
        print(f"listening on {cfg.bind}:{worker.msg_port} file port {worker.file_port}", flush=True)
        log.info("registered as %s with %s (%s)", worker.name, worker.tracker.where, worker.version)
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        worker.serve()
        stop.wait()
        log.info("stopping")
    finally:
        worker.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_with_config(argv, "worker")
    setup_logging("worker", verbose=args.verbose, quiet=args.quiet)
    return run_main("worker", lambda: run_worker(args))


if __name__ == "__main__":
    sys.exit(main())
