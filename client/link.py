"""The boss's side of one worker session (common/PROTOCOL.md, "Boss and worker").

One thread per worker: it answers the worker's requests, pushes chunk bytes to its file port,
fetches results and hands them to a verifier. A silent or broken worker gives its chunks back.
"""
from __future__ import annotations

import contextlib
import logging
import socket
import ssl
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field as dataclass_field
from pathlib import Path
from typing import Any, Callable

from client.scheduler import Chunk, ChunkState, Scheduler
from common import ffmpeg
from common.config import (CONNECT_TIMEOUT, MAX_CHUNK_BYTES, TRANSFER_STALL_TIMEOUT, WAIT_RETRY,
                           WORKER_SILENCE_TIMEOUT)
from common.errors import (ChunkError, ConnectionClosed, FFmpegError, PeerUnreachable, ProtocolError,
                           RequestRejected, TransferError, TranscoderError)
from common.net import connect
from common.protocol import (Msg, Role, client_hello, expect, field, int_field, recv_msg_or_reject,
                             send_msg)
from common.settings import Settings
from common.transfer import recv_file, send_file

log = logging.getLogger("boss")

REFUSAL_BACKOFF = 5.0
MAX_BAD_RESULTS = 2       # results failing verification before the job stops using a worker
MAX_REFUSALS = 3          # uploads a worker may refuse (disk full, bad copy) before the job stops using it
SPAN_TOLERANCE = 0.002    # result vs source frame span: Matroska rounds each timestamp to 1 ms


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

    @classmethod
    def from_wire(cls, w: dict[str, Any]) -> WorkerOffer:
        msg = {"type": Msg.WORKER_LIST, **w}
        return cls(field(msg, "name", str), field(msg, "host", str), int_field(msg, "msg_port", 1, 65535),
                   int_field(msg, "file_port", 1, 65535), int_field(msg, "slots", 1, 1024),
                   field(msg, "ffmpeg", str), field(msg, "ticket", dict), msg.get("tls") is True)


@dataclass
class JobContext:
    """What every link of one job shares."""
    name: str                       # the boss's name, as the worker sees it
    settings: Settings
    scheduler: Scheduler
    work_dir: Path
    tools: ffmpeg.Tools
    verifier: ThreadPoolExecutor
    report: Callable[..., None]     # report(event, **fields) to the tracker, best effort
    silence_timeout: float = WORKER_SILENCE_TIMEOUT
    tls: ssl.SSLContext | None = None       # verifies workers that speak TLS
    links: dict[str, WorkerLink] = dataclass_field(default_factory=dict)   # by worker name, for cancels


class WorkerLink(threading.Thread):
    def __init__(self, job: JobContext, offer: WorkerOffer) -> None:
        super().__init__(name=f"link-{offer.name}", daemon=True)
        self.job, self.offer = job, offer
        self.session = ""
        self.key = ""
        self.sock: socket.socket | None = None
        self.send_lock = threading.Lock()
        self.chunks_done = 0
        self.encode_seconds = 0.0
        self.frames_done = 0
        self.failure: str | None = None
        self.refusals = 0
        self.bad_results = 0
        self.dropped = False
        job.links[offer.name] = self

    # ------------------------------------------------------------ thread body

    def run(self) -> None:
        try:
            self._open()
            self._serve()
        except (ConnectionClosed, ProtocolError, PeerUnreachable, RequestRejected, TransferError) as exc:
            self.failure = str(exc)
        finally:
            if self.sock is not None:
                with contextlib.suppress(OSError):
                    self.sock.close()
            lost = self.job.scheduler.release(self.offer.name, self.failure or "session ended")
            if self.failure and not self.job.scheduler.finished.is_set():
                log.warning("worker %s lost: %s%s", self.offer.name, self.failure,
                            f" ({len(lost)} chunk(s) back in the queue)" if lost else "")
                self.job.report("worker_lost", worker=self.offer.name, detail=self.failure[:300])
                for chunk in lost:
                    self.job.report("chunk_failed", chunk=chunk.index, worker=self.offer.name,
                                    detail="worker lost")

    def _open(self) -> None:
        o = self.offer
        sock = connect((o.host, o.msg_port), deadline=CONNECT_TIMEOUT, io_timeout=self.job.silence_timeout,
                       tls=self.job.tls if o.tls else None)
        self.sock = sock
        client_hello(sock, Role.BOSS, self.job.name)
        send_msg(sock, Msg.SESSION, ticket=o.ticket, settings=self.job.settings.to_wire())
        reply = expect(sock, Msg.SESSION_OK)
        self.session, self.key = field(reply, "session", str), field(reply, "key", str)
        log.info("worker %s joined (%d slot%s)", o.name, o.slots, "" if o.slots == 1 else "s")
        self.job.report("worker_joined", worker=o.name)

    def _send(self, kind: Msg, **fields: Any) -> None:
        assert self.sock is not None
        with self.send_lock:
            send_msg(self.sock, kind, **fields)

    def _serve(self) -> None:
        assert self.sock is not None
        sched = self.job.scheduler
        while True:
            msg = recv_msg_or_reject(self.sock, self._send)   # a silent worker times out here
            if msg is None:
                continue
            kind = msg["type"]
            if kind is Msg.ERROR:             # never answer an error with an error
                log.warning("worker %s: %s", self.offer.name, str(msg.get("reason", "?"))[:200])
            elif kind is Msg.REQUEST:
                if self.refusals >= MAX_REFUSALS or self.bad_results >= MAX_BAD_RESULTS:
                    why = (f"refused {self.refusals} chunks" if self.refusals >= MAX_REFUSALS
                           else f"returned {self.bad_results} bad results")
                    log.warning("worker %s %s; not using it for this job", self.offer.name, why)
                    self.job.report("worker_dropped", worker=self.offer.name, detail=why)
                    self.dropped = True
                    self._end()
                    return
                if sched.finished.is_set():
                    self._end()
                    return
                chunk = sched.take(self.offer.name, wait=WAIT_RETRY)
                if chunk is None:
                    self._send(Msg.WAIT, retry_after=WAIT_RETRY)
                else:
                    self._assign(chunk)
            elif kind is Msg.PROGRESS:
                sched.progress(int_field(msg, "chunk", 0, 10**7), self.offer.name,
                               int_field(msg, "frames", 0, 10**9))
            elif kind is Msg.DONE:
                self._collect(msg)
            elif kind is Msg.FAILED:
                chunk = sched.assigned_to(int_field(msg, "chunk", 0, 10**7), self.offer.name)
                reason = str(msg.get("reason", "unknown"))[:300]
                if chunk is not None:
                    log.warning("%s failed on %s: %s", chunk.name, self.offer.name, reason)
                    self.job.report("chunk_failed", chunk=chunk.index, worker=self.offer.name, detail=reason)
                    sched.fail(chunk, self.offer.name, reason)
            else:
                self._send(Msg.ERROR, reason="unexpected message", in_reply_to=kind.value)

    def _end(self) -> None:
        self._send(Msg.END)
        with contextlib.suppress(TranscoderError):
            expect(self.sock, Msg.BYE)  # type: ignore[arg-type]

    # ------------------------------------------------------------ chunks

    def _assign(self, chunk: Chunk) -> None:
        try:
            self._put(chunk)
        except RequestRejected as exc:
            # the worker refused it (disk nearly full, the copy arrived damaged): not the chunk's
            # fault, so it goes back to the queue uncounted and this worker waits a little
            self.refusals += 1
            log.warning("%s refused %s: %s", self.offer.name, chunk.name, exc)
            self.job.report("chunk_failed", chunk=chunk.index, worker=self.offer.name, detail=f"refused: {exc}"[:300])
            self.job.scheduler.giveback(chunk, self.offer.name)
            self._send(Msg.WAIT, retry_after=REFUSAL_BACKOFF)
            return
        except (TransferError, ConnectionClosed, ProtocolError, PeerUnreachable) as exc:
            log.warning("could not send %s to %s: %s", chunk.name, self.offer.name, exc)
            raise                         # the worker is unreachable: the link ends, its chunks go back
        if self.job.scheduler.assigned_to(chunk.index, self.offer.name) is None:
            self._send(Msg.WAIT, retry_after=WAIT_RETRY)    # finished elsewhere during the upload
            return
        self._send(Msg.ASSIGN, chunk=chunk.index, size=chunk.size, sha256=chunk.sha256, frames=chunk.frames,
                   **({} if chunk.whole else {"skip": chunk.skip, "limit": chunk.frames}))
        self.job.report("chunk_assigned", chunk=chunk.index, worker=self.offer.name)
        log.debug("%s -> %s (attempt %d)", chunk.name, self.offer.name, chunk.attempts)

    def _file_conn(self) -> socket.socket:
        o = self.offer
        sock = connect((o.host, o.file_port), deadline=CONNECT_TIMEOUT, io_timeout=TRANSFER_STALL_TIMEOUT,
                       tls=self.job.tls if o.tls else None)
        try:
            client_hello(sock, Role.BOSS, self.job.name)
        except BaseException:
            sock.close()
            raise
        return sock

    def _put(self, chunk: Chunk) -> None:
        with self._file_conn() as sock:
            send_msg(sock, Msg.PUT, session=self.session, key=self.key, chunk=chunk.index,
                     size=chunk.size, sha256=chunk.sha256)
            expect(sock, Msg.OK)          # room for it: send the bytes
            send_file(sock, chunk.source, chunk.size)
            reply = expect(sock, Msg.OK)
            if reply.get("sha256") != chunk.sha256:
                raise TransferError(f"{chunk.name}: worker confirmed the wrong checksum")

    def _collect(self, msg: dict) -> None:
        sched = self.job.scheduler
        index = int_field(msg, "chunk", 0, 10**7)
        chunk = sched.assigned_to(index, self.offer.name)
        if chunk is None:                 # done elsewhere meanwhile: let the worker drop its copy
            self._send(Msg.CANCEL, chunk=index)
            return
        dest = self.job.work_dir / f"{chunk.name}.out.mkv"
        tmp = self.job.work_dir / f"{chunk.name}.{self.offer.name.replace('/', '_')}.recv.mkv"
        try:
            size = int_field(msg, "size", 1, MAX_CHUNK_BYTES)
            sha = field(msg, "sha256", str)
            with self._file_conn() as sock:
                send_msg(sock, Msg.GET, session=self.session, key=self.key, chunk=chunk.index)
                header = expect(sock, Msg.FILE)
                if header.get("size") != size or header.get("sha256") != sha:
                    raise TransferError(f"{chunk.name}: result differs from what the worker announced")
                recv_file(sock, tmp, size, sha)
        except (ConnectionClosed, PeerUnreachable):
            tmp.unlink(missing_ok=True)
            raise                             # the worker is gone: release() requeues, attempt uncounted
        except (TransferError, RequestRejected, ProtocolError) as exc:
            tmp.unlink(missing_ok=True)
            if chunk.state is ChunkState.DONE:    # the other copy won meanwhile and this one was cancelled
                log.debug("%s: no need of the copy from %s (%s)", chunk.name, self.offer.name, exc)
                sched.fail(chunk, self.offer.name, "cancelled")
                return
            log.warning("could not fetch %s from %s: %s", chunk.name, self.offer.name, exc)
            self.job.report("chunk_failed", chunk=chunk.index, worker=self.offer.name, detail=str(exc)[:300])
            sched.fail(chunk, self.offer.name, f"download failed: {exc}")
            return
        self._send(Msg.COLLECTED, chunk=chunk.index)
        seconds = field(msg, "seconds", float, optional=True, default=0.0)
        self.job.verifier.submit(self._guarded_verify, chunk, tmp, dest, sha, seconds)

    def _guarded_verify(self, *args: Any) -> None:
        """Runs in the verifier pool, where an exception would vanish: fail the job loudly instead."""
        try:
            self._verify(*args)
        except Exception as exc:          # noqa: BLE001 - a bug or a full disk must not hang the job
            log.exception("verifying a result failed")
            self.job.scheduler.abort(f"verifying a result failed: {exc}")

    def _verify(self, chunk: Chunk, tmp: Path, dest: Path, sha: str, seconds: float) -> None:
        """Check the result against the chunk's manifest: it decodes cleanly to exactly the
        chunk's frame count, starts with a keyframe, and its frames span the source's time."""
        sched = self.job.scheduler
        try:
            frames = ffmpeg.decode_check(self.job.tools, tmp, timeout=600)
            if self.job.settings.fps is not None:
                if frames == 0:          # a new frame rate: the total is checked at the end
                    raise ChunkError(f"{chunk.name}: no frames")
            elif frames != chunk.frames:
                raise ChunkError(f"{chunk.name}: {frames} frames, expected {chunk.frames}")
            packets = ffmpeg.stream_packets(self.job.tools, tmp)
            if not packets or not packets[0].key:
                raise ChunkError(f"{chunk.name}: does not start with a keyframe")
            span = max(p.pts for p in packets) - min(p.pts for p in packets)
            if chunk.span is not None and self.job.settings.fps is None and abs(span - chunk.span) > SPAN_TOLERANCE:
                raise ChunkError(f"{chunk.name}: frames span {span:.3f}s, the source's {chunk.span:.3f}s")
        except (FFmpegError, ChunkError) as exc:
            tmp.unlink(missing_ok=True)
            self.bad_results += 1
            log.warning("result of %s from %s rejected: %s", chunk.name, self.offer.name, exc)
            self.job.report("chunk_failed", chunk=chunk.index, worker=self.offer.name, detail=str(exc)[:300])
            sched.fail(chunk, self.offer.name, str(exc))
            return
        others = sched.done(chunk, self.offer.name, dest, sha, received=tmp)
        if others is None:
            tmp.unlink(missing_ok=True)       # a straggler copy finished second
            return
        self.chunks_done += 1
        self.frames_done += frames
        self.encode_seconds += seconds
        self.job.report("chunk_done", chunk=chunk.index, worker=self.offer.name, frames=frames,
                        seconds=round(seconds, 3))
        for name in others:                   # the slower copy is no longer needed
            link = self.job.links.get(name)
            if link is not None:
                link.cancel(chunk.index)

    def cancel(self, index: int) -> None:
        if self.sock is None:
            return
        with contextlib.suppress(TranscoderError):
            self._send(Msg.CANCEL, chunk=index)
        log.debug("cancelled the copy of chunk %d on %s", index, self.offer.name)
