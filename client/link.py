"""Hand out / collect: the boss's side of one worker session (common/PROTOCOL.md, "Boss and worker").

One thread per worker: it answers the worker's messages (dispatched by type, as the tracker
does), pushes chunk bytes to its file port and fetches results, which it hands to the job's
checker (`JobContext.on_result`). A silent or broken worker gives its chunks back.
"""
from __future__ import annotations

import contextlib
import ipaddress
import logging
import shutil
import socket
import ssl
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ffdt.client import faults
from ffdt.client.scheduler import Chunk, ChunkState, Scheduler
from ffdt.common.audit_events import Event
from ffdt.common.config import (CONNECT_TIMEOUT, MAX_CHUNK_BYTES, MAX_CHUNK_INDEX, MAX_FRAMES, MAX_REASON,
                                MAX_SAMPLE_BYTES, SAMPLE_MAX_FRAMES, TRANSFER_STALL_TIMEOUT, WAIT_RETRY, WORKER_SILENCE_TIMEOUT)
from ffdt.common.errors import (ChunkError, ConnectionClosed, PeerUnreachable, ProtocolError, RequestRejected, TransferError,
                                TranscoderError)
from ffdt.common.net import connect
from ffdt.common.protocol import (Msg, Role, client_hello, expect, field, int_field, recv_msg_or_reject,
                                  send_msg)
from ffdt.common.settings import Settings
from ffdt.common.tls import FINGERPRINT, pinning_context
from ffdt.common.transfer import recv_file, send_file, sha256_file

log = logging.getLogger("boss")

REFUSAL_BACKOFF = 5.0
MAX_BAD_RESULTS = 2       # results failing verification before the job stops using a worker
_PINNING = pinning_context()
RESULT_SLACK = 1 << 20    # container overhead allowed beyond the frames uncompressed
BOSS_DISK_HEADROOM = 256 * 1024 * 1024      # free space the boss keeps beyond a result
MAX_REFUSALS = 3          # uploads a worker may refuse (disk full, bad copy) before the job stops using it


def on_loopback(host: str) -> bool:
    """A worker on this machine, as far as its address tells."""
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return host in ("localhost", "ip6-localhost")
    mapped = getattr(address, "ipv4_mapped", None)        # ::ffff:127.0.0.1
    return (mapped or address).is_loopback


@dataclass(frozen=True)
class WorkerOffer:
    """A worker the tracker gave us, with its ticket."""
    name: str
    host: str
    msg_port: int
    file_port: int
    slots: int
    ffmpeg: str
    ticket: dict[str, Any]
    tls: bool = False           # its ports speak TLS
    fingerprint: str | None = None      # its TLS key's, as it registered it with the tracker: pinned

    @classmethod
    def from_wire(cls, w: dict[str, Any]) -> WorkerOffer:
        msg = {"type": Msg.WORKER_LIST, **w}
        fingerprint = field(msg, "fingerprint", str, optional=True)
        if fingerprint is not None and not FINGERPRINT.match(fingerprint):
            raise ProtocolError("worker_list: bad key fingerprint")
        return cls(field(msg, "name", str), field(msg, "host", str), int_field(msg, "msg_port", 1, 65535),
                   int_field(msg, "file_port", 1, 65535), int_field(msg, "slots", 1, 1024),
                   field(msg, "ffmpeg", str), field(msg, "ticket", dict), msg.get("tls") is True or
                   fingerprint is not None, fingerprint)


# on_result(link, chunk, received file, its sha256, the worker's encode seconds)
ResultHandler = Callable[["WorkerLink", Chunk, Path, str, float], None]


@dataclass
class JobContext:
    """What every link of one job shares."""
    name: str                       # the boss's name, as the worker sees it
    settings: Settings
    scheduler: Scheduler
    work_dir: Path
    report: Callable[..., None]     # report(event, **fields) to the tracker, best effort
    on_result: ResultHandler        # a fetched result, to be checked (must not block)
    # a fetched sample of a result being encoded, (link, chunk, path), to be compared (must not block)
    on_sample: Callable[[WorkerLink, Chunk, Path], None] | None = None
    # whether a sample of this chunk's result is worth fetching now (its comparison costs the boss
    # more than the result's own: only where the result's check would delay the output)
    wants_sample: Callable[[WorkerLink, Chunk], bool] = lambda link, chunk: True
    # ask workers on this machine for samples too: their encodes share its CPUs with the checks,
    # and a result's own check at the end runs on the cores they have left
    samples_here: bool = False
    on_assigned: Callable[[], None] = lambda: None
    cancel: Callable[[int, set[str]], None] = lambda index, workers: None   # tell these workers to drop a chunk
    silence_timeout: float = WORKER_SILENCE_TIMEOUT
    # verifies workers that speak TLS without a registered key: made when first needed (loading
    # the system's CAs took 20-40 ms of CPU, on a quarter-core boss's critical path at every job)
    tls: Callable[[], ssl.SSLContext] | None = None
    frame_bytes: int = 0                    # the most one output frame can take, uncompressed (0: no bound)


@dataclass
class LinkStats:
    """What one worker did for the job, for the summary and the benchmark."""
    chunks_done: int = 0
    frames_done: int = 0
    encode_seconds: float = 0.0
    bytes_sent: int = 0
    bytes_received: int = 0
    refusals: int = 0
    bad_results: int = 0
    full_checks: int = 0        # results the boss decoded, in full or their start (the rest: packet checks)
    compared_early: int = 0     # results whose comparison with the source was their sample's

    def summary(self) -> dict[str, Any]:
        return {"chunks": self.chunks_done, "frames": self.frames_done,
                "fps": round(self.frames_done / self.encode_seconds, 1) if self.encode_seconds else 0.0,
                "encode_seconds": round(self.encode_seconds, 3),
                "bytes_sent": self.bytes_sent, "bytes_received": self.bytes_received,
                "decoded_by_boss": self.full_checks, "compared_early": self.compared_early}


# settings keys a worker of protocol 1 before them ignores (unknown keys are ignored): a job using
# one needs a worker that says it read them (`settings` in session_ok)
ECHO_REQUIRED = ("tune", "profile", "level", "codec_params")


def check_settings_echo(ours: Settings, echoed: object) -> None:
    """ProtocolError unless the worker read the job's settings as sent: an older worker (or
    another client) that ignores a key would encode every chunk without it."""
    wire = ours.to_wire()
    if echoed is None:
        missing = [k for k in ECHO_REQUIRED if k in wire]
        if missing:
            raise ProtocolError(f"it does not say it understood {', '.join(missing)} (an older worker?)")
    elif echoed != wire:
        raise ProtocolError(f"it read the settings as {str(echoed)[:200]}, not as sent")


class WorkerLink(threading.Thread):
    def __init__(self, job: JobContext, offer: WorkerOffer) -> None:
        super().__init__(name=f"link-{offer.name}", daemon=True)
        self.job, self.offer = job, offer
        self.session = ""
        self.key = ""
        self.sock: socket.socket | None = None
        self.send_lock = threading.Lock()
        self.stats = LinkStats()
        self.failure: str | None = None
        self.closed_by_us = False       # close() was called: the job is over or the boss is stopping
        self.dropped = False
        # (ffmpeg build, threads, CPUs when threads is 0, CPU kind, sampled): workers alike in these
        # encode a chunk to the same bytes (a sampled result has short clusters); None: it did not
        # say (an older worker), so it is never compared
        self.encoder: tuple[str, int, tuple[int, int], str, bool] | None = None
        self.samples = False            # it sends samples of its results (PROTOCOL.md, "sample")
        self.reuse = False              # it keeps file-port connections open for the next transfer
        self._file: socket.socket | None = None     # that connection, between transfers
        self._sampled: set[int] = set()  # chunks whose present assignment had its sample (one each)
        self.lied: str | None = None    # its result differed from two others' of the same chunk
        self._handlers: dict[Msg, Callable[[dict], bool]] = {
            Msg.ERROR: self.handle_error,
            Msg.REQUEST: self.handle_request,
            Msg.PROGRESS: self.handle_progress,
            Msg.DONE: self.handle_done,
            Msg.FAILED: self.handle_failed,
            Msg.SAMPLE: self.handle_sample,
        }

    # ------------------------------------------------------------ thread body

    def run(self) -> None:
        try:
            self._open()
            self._serve()
        except (ConnectionClosed, ProtocolError, PeerUnreachable, RequestRejected, TransferError) as exc:
            self.failure = str(exc)
        finally:
            for sock in (self.sock, self._take_file()):
                if sock is not None:
                    with contextlib.suppress(OSError):
                        sock.close()
            lost = self.job.scheduler.release(self.offer.name, self.failure or "session ended")
            # a session the boss itself closed (the job over, or Ctrl-C) is not a lost worker
            if self.failure and not self.job.scheduler.finished.is_set() and not self.closed_by_us:
                log.warning("worker %s lost: %s%s", self.offer.name, self.failure,
                            f" ({len(lost)} chunk(s) back in the queue)" if lost else "")
                self.job.report(Event.WORKER_LOST, worker=self.offer.name, detail=self.failure[:MAX_REASON])
                for chunk in lost:
                    self.job.report(Event.CHUNK_FAILED, chunk=chunk.index, worker=self.offer.name,
                                    detail="worker lost")

    def drop(self, why: str) -> None:
        """Stop using this worker at once (its result was a lie): reported to the tracker, its
        session closed, the chunks it holds back in the queue; the tracker does not offer it to
        this job again."""
        self.lied = why
        log.warning("worker %s %s; not using it for this job", self.offer.name, why)
        self.job.report(Event.WORKER_DROPPED, worker=self.offer.name, detail=why[:MAX_REASON])
        self.dropped = True
        self.close()

    def close(self) -> None:
        """End the session from outside (the job is over): the worker sees the connection close."""
        self.closed_by_us = True
        for sock in (self.sock, self._take_file()):
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                    sock.close()

    def _open(self) -> None:
        o = self.offer
        sock = connect((o.host, o.msg_port), deadline=CONNECT_TIMEOUT, io_timeout=self.job.silence_timeout,
                       **self._tls())
        self.sock = sock
        client_hello(sock, Role.BOSS, self.job.name)
        wanted = self.job.on_sample is not None and (self.job.samples_here or not on_loopback(o.host))
        send_msg(sock, Msg.SESSION, ticket=o.ticket, settings=self.job.settings.to_wire(), samples=wanted,
                 reuse_file_connection=True)
        reply = expect(sock, Msg.SESSION_OK)
        self.session, self.key = field(reply, "session", str), field(reply, "key", str)
        check_settings_echo(self.job.settings, reply.get("settings"))
        self.samples = wanted and reply.get("samples") is True
        self.reuse = reply.get("reuse_file_connection") is True
        threads, cpus, host_cpus, cpu = (reply.get(k) for k in ("threads", "cpus", "host_cpus", "cpu"))
        if isinstance(threads, int) and isinstance(cpus, int) and isinstance(host_cpus, int) and \
                isinstance(cpu, str) and 0 <= threads <= 1024 and 1 <= cpus <= 65536 and 1 <= host_cpus <= 65536 \
                and len(cpu) <= 64:
            # threads=0 (the encoder decides): x264 counts the CPUs it may use, x265 the machine's
            self.encoder = (o.ffmpeg, threads, (cpus, host_cpus) if threads == 0 else (0, 0), cpu, self.samples)
        log.info("worker %s joined (%d slot%s)", o.name, o.slots, "" if o.slots == 1 else "s")
        self.job.report(Event.WORKER_JOINED, worker=o.name)

    def _send(self, kind: Msg, **fields: Any) -> None:
        assert self.sock is not None
        with self.send_lock:
            send_msg(self.sock, kind, **fields)

    def _serve(self) -> None:
        """Dispatch the worker's messages until a handler ends the session (returns False)."""
        assert self.sock is not None
        while True:
            msg = recv_msg_or_reject(self.sock, self._send)   # a silent worker times out here
            if msg is None:
                continue
            handler = self._handlers.get(msg["type"])
            if handler is None:
                self._send(Msg.ERROR, reason="unexpected message", in_reply_to=msg["type"].value)
            elif not handler(msg):
                return

    # ------------------------------------------------------------ handlers: True to go on

    def handle_error(self, msg: dict) -> bool:
        log.warning("worker %s: %s", self.offer.name, str(msg.get("reason", "?"))[:200])
        return True                       # never answer an error with an error

    def handle_request(self, msg: dict) -> bool:
        sched = self.job.scheduler
        why = self._drop_reason()
        if why is not None:
            log.warning("worker %s %s; not using it for this job", self.offer.name, why)
            self.job.report(Event.WORKER_DROPPED, worker=self.offer.name, detail=why)
            self.dropped = True
            self._end()
            return False
        if sched.finished.is_set():
            self._end()
            return False
        chunk = sched.take(self.offer.name, wait=WAIT_RETRY)
        if chunk is None:
            self._send(Msg.WAIT, retry_after=WAIT_RETRY)
            return True
        holders = sched.steal(chunk, self.offer.name)
        if holders:
            log.debug("%s: taken from %s, which had not started it", chunk.name, ", ".join(sorted(holders)))
            self.job.cancel(chunk.index, holders)
        self._assign(chunk)
        return True

    def handle_progress(self, msg: dict) -> bool:
        self.job.scheduler.progress(int_field(msg, "chunk", 0, MAX_CHUNK_INDEX), self.offer.name,
                                    int_field(msg, "frames", 0, MAX_FRAMES))
        return True

    def handle_done(self, msg: dict) -> bool:
        self._collect(msg)
        return True

    def handle_sample(self, msg: dict) -> bool:
        """The start of a result still being encoded: fetched and handed to the checks, whose
        comparison with the source then stands for the result's if the result starts with the
        same bytes (checks.sample_stands_for). A sample that cannot be fetched is only not used."""
        if not self.samples:
            self._send(Msg.ERROR, reason="unexpected message", in_reply_to=Msg.SAMPLE.value)
            return True
        chunk = self.job.scheduler.assigned_to(int_field(msg, "chunk", 0, MAX_CHUNK_INDEX), self.offer.name)
        if chunk is None or chunk.state is ChunkState.DONE or chunk.index in self._sampled:
            return True                          # (one per assignment: more would be a worker out to keep us busy)
        self._sampled.add(chunk.index)
        size = int_field(msg, "size", 1, MAX_SAMPLE_BYTES)
        sha = field(msg, "sha256", str)
        if not self.job.wants_sample(self, chunk):
            return True
        if self.job.frame_bytes and size > SAMPLE_MAX_FRAMES * self.job.frame_bytes + RESULT_SLACK:
            return True                          # not the start of an honest result
        path = self._received(chunk, "sample")
        try:
            self._room_for(chunk, size)          # (ChunkError: not the start of an honest result)
            self._get(chunk, path, size, sha, sample=True)
        except (ConnectionClosed, PeerUnreachable):
            path.unlink(missing_ok=True)
            raise                             # the worker is gone
        except (TransferError, RequestRejected, ProtocolError, ChunkError) as exc:
            path.unlink(missing_ok=True)
            log.debug("no sample of %s from %s: %s", chunk.name, self.offer.name, exc)
            return True
        self.stats.bytes_received += size
        assert self.job.on_sample is not None
        self.job.on_sample(self, chunk, path)
        return True

    def handle_failed(self, msg: dict) -> bool:
        chunk = self.job.scheduler.assigned_to(int_field(msg, "chunk", 0, MAX_CHUNK_INDEX), self.offer.name)
        reason = str(msg.get("reason", "unknown"))[:MAX_REASON]
        if chunk is not None:
            log.warning("%s failed on %s: %s", chunk.name, self.offer.name, reason)
            self.job.report(Event.CHUNK_FAILED, chunk=chunk.index, worker=self.offer.name, detail=reason)
            self.job.scheduler.fail(chunk, self.offer.name, reason)
        return True

    def _drop_reason(self) -> str | None:
        """Why this worker should get no more chunks of this job, if it should not."""
        if self.stats.refusals >= MAX_REFUSALS:
            return f"refused {self.stats.refusals} chunks"
        if self.lied:
            return self.lied
        if self.stats.bad_results >= MAX_BAD_RESULTS:
            return f"returned {self.stats.bad_results} bad results"
        return None

    def _end(self) -> None:
        self._send(Msg.END)
        with contextlib.suppress(TranscoderError):
            expect(self.sock, Msg.BYE)  # type: ignore[arg-type]

    # ------------------------------------------------------------ chunks

    def _assign(self, chunk: Chunk) -> None:
        try:
            sent = self._put(chunk)
        except RequestRejected as exc:
            # the worker refused it (disk nearly full, the copy arrived damaged): not the chunk's
            # fault, so it goes back to the queue uncounted and this worker waits a little
            self.stats.refusals += 1
            log.warning("%s refused %s: %s", self.offer.name, chunk.name, exc)
            self.job.report(Event.CHUNK_FAILED, chunk=chunk.index, worker=self.offer.name,
                            detail=f"refused: {exc}"[:MAX_REASON])
            self.job.scheduler.giveback(chunk, self.offer.name)
            self._send(Msg.WAIT, retry_after=REFUSAL_BACKOFF)
            return
        except (TransferError, ConnectionClosed, ProtocolError, PeerUnreachable) as exc:
            log.warning("could not send %s to %s: %s", chunk.name, self.offer.name, exc)
            raise                         # the worker is unreachable: the link ends, its chunks go back
        if self.job.scheduler.assigned_to(chunk.index, self.offer.name) is None:
            self._send(Msg.WAIT, retry_after=WAIT_RETRY)    # finished elsewhere during the upload
            return
        self._sampled.discard(chunk.index)
        self._send(Msg.ASSIGN, **{**chunk.manifest.assign_fields(), **sent})
        self.job.on_assigned()
        self.job.report(Event.CHUNK_ASSIGNED, chunk=chunk.index, worker=self.offer.name)
        log.debug("%s -> %s (attempt %d)", chunk.name, self.offer.name, chunk.attempts)

    def _tls(self) -> dict[str, Any]:
        """How to reach this worker's ports: pinned to the key it registered, else (a CA-issued
        certificate without one) verified by the job's CA context, else plain TCP."""
        o = self.offer
        if o.fingerprint is not None:
            return {"tls": _PINNING, "pin": o.fingerprint}
        return {"tls": self.job.tls() if o.tls and self.job.tls else None}

    def _file_conn(self) -> socket.socket:
        o = self.offer
        # a worker that stops reading or sending is as lost as a silent one (--worker-timeout)
        stall = min(TRANSFER_STALL_TIMEOUT, self.job.silence_timeout)
        sock = connect((o.host, o.file_port), deadline=CONNECT_TIMEOUT, io_timeout=stall, **self._tls())
        try:
            client_hello(sock, Role.BOSS, self.job.name)
        except BaseException:
            sock.close()
            raise
        return sock

    def _take_file(self) -> socket.socket | None:
        sock, self._file = self._file, None
        return sock

    def _exchange(self, kind: Msg, reply: Msg, **fields: Any) -> tuple[socket.socket, dict[str, Any]]:
        """A file-port request and its first reply, on the connection kept from the last transfer
        if there is one (PROTOCOL.md 9): one the worker closed meanwhile (idle too long) is
        replaced by a new one, once. The caller hands the connection to _finished()."""
        fields.update(session=self.session, key=self.key)
        kept = self._take_file()
        if kept is not None:
            try:
                send_msg(kept, kind, **fields)
                return kept, expect(kept, reply)
            except ConnectionClosed:
                kept.close()
            except BaseException:
                kept.close()
                raise
        sock = self._file_conn()
        try:
            send_msg(sock, kind, **fields)
            return sock, expect(sock, reply)
        except BaseException:
            sock.close()
            raise

    def _finished(self, sock: socket.socket, ok: bool) -> None:
        """A transfer is over: keep its connection for the next one if it went well and the worker
        keeps them, else close it (after an error the worker closes it too)."""
        if ok and self.reuse and not self.closed_by_us and self._file is None:
            self._file = sock
        else:
            sock.close()

    def _put(self, chunk: Chunk) -> dict[str, Any]:
        """Upload a chunk's bytes; returns their size and sha256 for `assign`."""
        source, size, sha = chunk.source, chunk.size, chunk.sha256
        if faults.on("playlist-chunks"):
            source = faults.outgoing(source)
            size, sha = source.stat().st_size, sha256_file(source)
        sock, _ = self._exchange(Msg.PUT, Msg.OK, chunk=chunk.index, size=size, sha256=sha)   # room for it
        ok = False
        try:
            send_file(sock, source, size)
            reply = expect(sock, Msg.OK)
            if reply.get("sha256") != sha:
                raise TransferError(f"{chunk.name}: worker confirmed the wrong checksum")
            ok = True
        finally:
            self._finished(sock, ok)
        self.stats.bytes_sent += size
        return {"size": size, "sha256": sha}

    def _collect(self, msg: dict) -> None:
        sched = self.job.scheduler
        index = int_field(msg, "chunk", 0, MAX_CHUNK_INDEX)
        chunk = sched.assigned_to(index, self.offer.name)
        if chunk is None or chunk.state is ChunkState.DONE:   # done elsewhere meanwhile: the worker drops its copy
            self._send(Msg.CANCEL, chunk=index)
            return
        self._sampled.add(chunk.index)          # a sample after this is of no use
        tmp = self._received(chunk, "recv")
        try:
            size = int_field(msg, "size", 1, MAX_CHUNK_BYTES)
            sha = field(msg, "sha256", str)
            self._room_for(chunk, size)
            self._get(chunk, tmp, size, sha)
        except (ConnectionClosed, PeerUnreachable):
            tmp.unlink(missing_ok=True)
            raise                             # the worker is gone: release() requeues, attempt uncounted
        except ChunkError as exc:             # a bad result, refused before its bytes
            self.stats.bad_results += 1
            log.warning("result of %s from %s rejected: %s", chunk.name, self.offer.name, exc)
            self.job.report(Event.CHUNK_FAILED, chunk=chunk.index, worker=self.offer.name,
                            detail=str(exc)[:MAX_REASON])
            sched.fail(chunk, self.offer.name, str(exc))
            self._send(Msg.CANCEL, chunk=chunk.index)     # the worker may drop it
            return
        except (TransferError, RequestRejected, ProtocolError) as exc:
            tmp.unlink(missing_ok=True)
            if chunk.state is ChunkState.DONE:    # the other copy won meanwhile and this one was cancelled
                log.debug("%s: no need of the copy from %s (%s)", chunk.name, self.offer.name, exc)
                sched.fail(chunk, self.offer.name, "cancelled")
                return
            log.warning("could not fetch %s from %s: %s", chunk.name, self.offer.name, exc)
            self.job.report(Event.CHUNK_FAILED, chunk=chunk.index, worker=self.offer.name,
                            detail=str(exc)[:MAX_REASON])
            sched.fail(chunk, self.offer.name, f"download failed: {exc}")
            return
        self.stats.bytes_received += size
        self._send(Msg.COLLECTED, chunk=chunk.index)
        seconds = field(msg, "seconds", float, optional=True, default=0.0)
        self.job.on_result(self, chunk, tmp, sha, seconds)

    def _received(self, chunk: Chunk, kind: str) -> Path:
        return self.job.work_dir / f"{chunk.name}.{self.offer.name.replace('/', '_')}.{kind}.mkv"

    def _get(self, chunk: Chunk, dest: Path, size: int, sha: str, sample: bool = False) -> None:
        """Fetch a result (or its sample) into `dest`: `size` bytes with this SHA-256, as announced."""
        sock, header = self._exchange(Msg.GET, Msg.FILE, chunk=chunk.index, **({"sample": True} if sample else {}))
        ok = False
        try:
            if header.get("size") != size or header.get("sha256") != sha:
                raise TransferError(f"{chunk.name}: {'sample' if sample else 'result'} differs from what "
                                    "the worker announced")
            recv_file(sock, dest, size, sha)
            ok = True
        finally:
            self._finished(sock, ok)

    def _room_for(self, chunk: Chunk, size: int) -> None:
        """Refuse a result bigger than its frames uncompressed (no encoder makes that: a worker
        out to fill the boss's disk); abort the job if the boss's own disk cannot hold it."""
        raw = chunk.frames * self.job.frame_bytes + RESULT_SLACK
        if self.job.frame_bytes and size > raw:
            raise ChunkError(f"{chunk.name}: a result of {size} bytes, more than its frames uncompressed ({raw})")
        free = shutil.disk_usage(self.job.work_dir).free
        if free < size + BOSS_DISK_HEADROOM:
            self.job.scheduler.abort(f"the boss's disk is nearly full ({free // 2**20} MiB free in "
                                     f"{self.job.work_dir}; a result needs {size // 2**20} MiB)")
            raise TransferError("no room for the result")

    def cancel(self, index: int) -> None:
        if self.sock is None:
            return
        with contextlib.suppress(TranscoderError):
            self._send(Msg.CANCEL, chunk=index)
        log.debug("cancelled the copy of chunk %d on %s", index, self.offer.name)
