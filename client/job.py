"""One job, stage by stage: probe -> split -> queue -> hand out / collect -> check -> join.

The boss's CLI (client/boss.py) builds a BossConfig and calls run_boss(). Each stage lives in its
own module (split, scheduler, link, checks, join); this one only wires them together, owns the
work directory and the worker sessions, and writes the summary.
"""
from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import functools
import json
import logging
import os
import resource
import shutil
import ssl
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

from ffdt.client import checks, media
from ffdt.client.join import AudioJob, Join
from ffdt.client.jobstate import Identity, JobState
from ffdt.client.link import JobContext, WorkerLink, WorkerOffer
from ffdt.client.progress import BossBar, JsonProgress, PhaseProgress
from ffdt.client.recheck import Rechecks
from ffdt.client.reporter import EventReporter
from ffdt.client.scheduler import Chunk, ChunkState, Scheduler
from ffdt.client.split import Splitter
from ffdt.client.tracker_client import TrackerClient
from ffdt.common import ffmpeg, tls
from ffdt.common.audit_events import Event
from ffdt.common.encoders import ENCODERS
from ffdt.common.config import MAX_REASON, MAX_WORKERS_PER_REQUEST
from ffdt.common.errors import ChunkError, FFmpegError, ProtocolError, TranscoderError, UsageError
from ffdt.common.protocol import Role
from ffdt.common.settings import Settings

if TYPE_CHECKING:
    from ffdt.client.boss import BossConfig

log = logging.getLogger("boss")

WORKER_REFRESH = 5.0       # ask the tracker for more workers this often while we have fewer than wanted
WAIT_WORKERS_POLL = 2.0    # ... and this often while we have none
BAR_REFRESH = 0.5          # the progress bar's refresh period (the main thread's wait)
JSON_PROGRESS_EVERY = 1.0  # seconds between --progress json lines
VERIFIER_THREADS = 8       # results checked at once (their ffmpeg runs: checks.Comparisons.RUNS)
REPORTER_FLUSH = 5.0       # seconds to deliver queued audit events at the end of a job
LINK_JOIN = 2.0            # seconds to wait for each link thread at the end
SOURCE_COPY = "source.mkv"  # the chosen streams, when the input needs a copy of them (media.chosen_copy)


@dataclass
class Phases:
    """Wall-clock seconds per phase, and when the chunk traffic began and ended, for the summary."""
    times: dict[str, float] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)
    first_assigned: float | None = None
    last_result: float | None = None
    json: JsonProgress | None = None        # --progress json: each phase said as it begins

    @contextlib.contextmanager
    def timed(self, name: str):
        if self.json is not None:
            self.json.emit("phase", phase=name)
        start = time.monotonic()
        try:
            yield
        finally:
            self.times[name] = round(time.monotonic() - start, 3)

    def since_start(self) -> float:
        return round(time.monotonic() - self.started, 3)

    def assigned(self) -> None:
        """A chunk went out: the first time is when the chunk traffic began."""
        if self.first_assigned is None:
            self.first_assigned = self.since_start()

    def result_in(self) -> None:
        self.last_result = self.since_start()


class JobHandle:
    """How a queue (client/batch.py) watches a job running in a thread of its own and stops it."""

    def __init__(self) -> None:
        self.job: Job | None = None
        self.stopped: str | None = None
        self.copies_wanted: Callable[[], bool] = lambda: True    # see Scheduler.copies_wanted

    def all_out(self) -> bool:
        job = self.job
        return job is not None and job.scheduler is not None and job.scheduler.all_out()

    def has_pending(self) -> bool:
        job = self.job
        return job is not None and job.scheduler is not None and job.scheduler.has_pending()

    def stop(self, reason: str) -> None:
        self.stopped = reason
        if self.job is not None:
            self.job.abort(reason)


def run_boss(cfg: BossConfig) -> int:
    transcode(cfg)
    return 0


def transcode(cfg: BossConfig, handle: JobHandle | None = None) -> dict[str, Any]:
    """Check the output path, probe the input, run the job; the work directory is removed on
    success and kept (to resume) on failure once the split is done. Returns the job's summary."""
    phases = Phases(json=JsonProgress(str(cfg.input)) if cfg.progress == "json" else None)
    try:
        container = media.container_for(cfg.output)
        check_output_path(cfg)
        summary = _transcode(cfg, container, phases, handle)
    except TranscoderError as exc:
        if phases.json is not None:
            phases.json.emit("failed", error=str(exc))
        raise
    if phases.json is not None:
        phases.json.emit("done", output=str(cfg.output), frames=summary["frames"], seconds=summary["seconds"])
    return summary


def _transcode(cfg: BossConfig, container: media.Container, phases: Phases,
               handle: JobHandle | None) -> dict[str, Any]:
    with phases.timed("probe"), phase_progress(cfg, phases, "probe", "reading the input") as shown:
        info = media.inspect(cfg.tools, cfg.input, options=cfg.streams, on_progress=shown)
    media.check_combination(container, cfg.settings.codec, cfg.acodec, info.of_kind("audio"))
    cfg = dataclasses.replace(cfg, settings=settings_for_input(cfg, info))
    check_tuning(cfg, info)
    with output_lock(cfg):
        return _run_locked(cfg, info, container, phases, handle or JobHandle())


@contextlib.contextmanager
def phase_progress(cfg: BossConfig, phases: Phases, phase: str, label: str
                   ) -> Iterator[Callable[[float, float], None]]:
    """An update(done, total) for a phase before the chunks (a bar on a terminal, or JSON
    lines): reading a film's packets or copying its streams is a long silence otherwise."""
    shown = PhaseProgress(phase, label, cfg.bars and cfg.progress == "bar", phases.json)
    try:
        yield shown.update
    finally:
        shown.close()


@contextlib.contextmanager
def output_lock(cfg: BossConfig) -> Iterator[None]:
    """One boss per output: a second one writing the same file (or resuming the same work) is
    refused at once with a clear line, instead of both failing later in ffmpeg."""
    path = (cfg.work_dir or cfg.output.parent) / f".{cfg.output.name}.ffdt-lock"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = path.open("a")
    except OSError as exc:
        raise UsageError(f"cannot create {path}: {exc.strerror}") from None
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UsageError(f"another boss is already writing {cfg.output}: wait for it to end, "
                             "or choose another output") from None
        try:
            yield
        finally:
            path.unlink(missing_ok=True)     # still ours: a boss that opens it after this makes a new one
    finally:
        handle.close()


def _run_locked(cfg: BossConfig, info: media.MediaInfo, container: media.Container,
                phases: Phases, handle: JobHandle) -> dict[str, Any]:
    work = prepare_work_dir(cfg)
    cluster = None
    ok = False
    try:
        if info.own_copy:
            with phases.timed("copy"), phase_progress(cfg, phases, "copy", "copying the streams") as shown:
                info = media.chosen_copy(cfg.tools, info, work / SOURCE_COPY, on_progress=shown)
        tracker_addr, user, password = cfg.tracker, cfg.user, cfg.password
        if cfg.local:
            from ffdt.client.local import LocalCluster
            log.info("starting a local tracker and %d worker%s", cfg.local, "s" if cfg.local > 1 else "")
            cluster = LocalCluster(cfg.local, cfg.ffmpeg_args)
            tracker_addr, user, password = cluster.addr, cluster.boss_user, cluster.password
        assert tracker_addr is not None
        tracker = TrackerClient(tracker_addr, user, password, Role.BOSS, tls=cfg.tls.context, pin=cfg.tls.pin,
                                known=cfg.tls.known)
        tracker.connect()
        job = Job(cfg, info, container, work, tracker, phases,
                  copies_wanted=lambda: handle.copies_wanted())     # a queue may change it later
        handle.job = job
        if handle.stopped:
            raise TranscoderError(handle.stopped)
        job.run()
        ok = True
        return job.summary
    finally:
        if cluster is not None:
            cluster.close()
        if ok and not cfg.keep_work:
            shutil.rmtree(work, ignore_errors=True)
        elif not ok and (work / "state.json").exists():
            log.warning("the work so far is kept in %s: run the same command again to resume", work)
        elif not ok:
            shutil.rmtree(work, ignore_errors=True)     # nothing worth keeping yet


def check_output_path(cfg: BossConfig) -> None:
    """Refuse, before any work, an output that cannot be written or would overwrite the input."""
    if cfg.output.resolve() == cfg.input.resolve():
        raise UsageError("the output would overwrite the input")
    if not cfg.output.parent.is_dir():
        raise UsageError(f"{cfg.output.parent}: no such directory for the output")
    if cfg.output.is_dir():
        raise UsageError(f"{cfg.output} is a directory")
    if cfg.output.exists() and not cfg.overwrite:      # ffmpeg's rule without a terminal to ask on
        raise UsageError(f"{cfg.output} exists: pass -y to replace it")
    if not os.access(cfg.output.parent, os.W_OK):
        raise UsageError(f"{cfg.output.parent}: cannot write there")
    check_report_path(cfg.report)


def check_report_path(report: Path | None) -> None:
    if report is not None and not report.parent.is_dir():
        raise UsageError(f"{report.parent}: no such directory for --report")


def settings_for_input(cfg: BossConfig, info: media.MediaInfo) -> Settings:
    """The user's settings plus what the input implies: its rotation, its colour description
    (HDR10 metadata too), padding for an odd size."""
    s = cfg.settings
    turn = media.clockwise_turn(info.video.rotation)
    if turn:
        log.info("the input is displayed turned by %d degrees: the output is turned the same way", turn)
        s = dataclasses.replace(s, rotate=turn)
    v = info.video
    colour = dict(v.color)
    if colour.get("color_trc") in ("smpte2084", "arib-std-b67") or v.dolby_vision:
        dynamic: list[str] = []
        colour.update(media.hdr10_metadata(cfg.tools, info.path, v.index, dynamic))
        if s.vcodec != "libx265" and ("master_display" in colour or "max_cll" in colour):
            log.warning("HDR10 mastering metadata is only carried with --vcodec libx265; it is dropped")
        if dynamic or v.dolby_vision:
            what = " and ".join(dynamic) or "Dolby Vision RPU"
            if v.dolby_vision:
                what = what.replace("Dolby Vision", f"Dolby Vision {v.dolby_vision}")
            base = {"arib-std-b67": "HLG", "smpte2084": "HDR10 (PQ)"}.get(colour.get("color_trc", ""), "SDR")
            log.warning("%s dropped (no encoder here writes it); the %s picture with its transfer, primaries "
                        "and bit depth is kept", what, base)
    if colour:
        try:
            s = dataclasses.replace(s, **colour)
        except UsageError as exc:
            log.warning("not carrying the input's colour description: %s", exc)
    if s.scale_w is None and (v.width % 2 or v.height % 2) and (s.pix_fmt or "yuv420p").startswith(("yuv420", "nv12")):
        log.warning("odd size %dx%d: padding to an even size for 4:2:0 video "
                    "(--scale W:-2 to resize instead, or --pix-fmt yuv444p)", v.width, v.height)
        s = dataclasses.replace(s, pad_even=True)
    return s


def check_tuning(cfg: BossConfig, info: media.MediaInfo) -> None:
    """With tuning the encoder may refuse (a profile that has no 4:4:4, a level too low for the
    size): find out here, in one line, from one frame, before any work. Hardware encoders are
    left to the workers that have the device."""
    s = cfg.settings
    if ENCODERS[s.vcodec].hardware or not (s.tune or s.profile or s.level or s.codec_params or s.pix_fmt):
        return
    complaint = ffmpeg.tuning_error(cfg.tools, info.path, s, ffmpeg.picture_filters(s))
    if complaint:
        raise UsageError(f"{s.vcodec} does not open with these settings: {complaint}")


def cpu_seconds() -> dict[str, float]:
    """CPU the boss has used so far: its own process (Python: sockets, TLS, hashing) and its ffmpeg
    and ffprobe children that have ended (with --local, its workers too)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return {"boss": round(own.ru_utime + own.ru_stime, 3), "ffmpeg": round(kids.ru_utime + kids.ru_stime, 3)}


def peak_memory_mib() -> dict[str, float]:
    """The boss's peak resident memory, and its largest child's (Linux reports KiB): whether the
    boss stays flat as inputs grow is a figure of its own (the speed issue's first)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return {"boss": round(own.ru_maxrss / 1024, 1), "largest_child": round(kids.ru_maxrss / 1024, 1)}


def ca_context(tracker_tls: tls.ClientTls) -> ssl.SSLContext:
    """For workers with a CA-issued certificate and no registered key (the others are pinned):
    the CAs the tracker is verified with, else the system's."""
    ctx = tracker_tls.context
    return ctx if ctx is not None and ctx.verify_mode == ssl.CERT_REQUIRED else tls.client_context(None)


def raw_frame_bytes(info: media.MediaInfo, settings: Settings) -> int:
    """The most one output frame can take uncompressed (16 bits, three full planes), for the
    bound on a result's size; 0 when the picture size is not known."""
    side = max(info.video.width, info.video.height, settings.scale_w or 0, settings.scale_h or 0)
    return 6 * side * side


def prepare_work_dir(cfg: BossConfig) -> Path:
    """The work directory; an earlier run's is kept for resuming unless --restart."""
    # always a directory of our own, even inside --work-dir: we delete it when done
    work = (cfg.work_dir or cfg.output.parent) / f".{cfg.output.name}.ffdt-work"
    if work.exists() and not work.is_dir():
        raise UsageError(f"{work} exists and is not a directory")
    if work.exists() and cfg.restart:
        log.info("--restart: removing the earlier run's work in %s", work)
        shutil.rmtree(work)
    try:
        work.mkdir(parents=True, exist_ok=True)
        work.chmod(0o700)         # the input's pieces and the results are the user's only
    except OSError as exc:
        raise UsageError(f"cannot create the work directory {work}: {exc.strerror}") from None
    return work


class Job:
    def __init__(self, cfg: BossConfig, info: media.MediaInfo, container: media.Container, work: Path,
                 tracker: TrackerClient, phases: Phases, copies_wanted: Callable[[], bool] = lambda: True) -> None:
        self.cfg, self.info, self.container, self.work = cfg, info, container, work
        self.tracker, self.phases = tracker, phases
        self.copies_wanted = copies_wanted
        self.split_share: float | None = None      # how far a split that hands out nothing until done is
        self.split_json = PhaseProgress("split", "", bars=False, json_out=phases.json)
        self.links: list[WorkerLink] = []
        self.id = ""
        self.expected_frames = info.shown_frames
        self.reporter: EventReporter | None = None
        self.ctx: JobContext | None = None
        self.ffmpeg_build: str | None = None      # every chunk is encoded by this build
        self.verify = checks.VerifyPolicy(cfg.verify_fraction)
        self.comparisons = checks.Comparisons(cfg.tools, cfg.settings)
        self.samples = checks.Samples()
        self.split_error: TranscoderError | None = None
        self.border_lock = threading.Lock()
        self.border_checked = False      # two adjacent chunks decoded across their border
        self.summary: dict[str, Any] = {}    # what print_summary prints, once the output is written
        self.scheduler: Scheduler | None = None
        self.rechecks: Rechecks | None = None
        self.stopped: str | None = None        # abort()'s reason

    def run(self) -> int:
        cfg, info = self.cfg, self.info
        self.id = self.tracker.job_start(cfg.input.name, cfg.settings, frames=info.shown_frames)
        self.reporter = EventReporter(self.tracker)
        log.info("job %s: %s, %d frames, %.2fs, %s -> %s", self.id, cfg.input.name, info.shown_frames,
                 info.video_duration, info.video.codec, cfg.settings.vcodec)
        status, detail = "failed", ""
        output: Join | None = None
        try:
            offers = self.ask_workers(cfg.workers)
            if not offers:
                raise TranscoderError(f"no live workers with {cfg.settings.vcodec} on tracker {self.tracker.where}")
            audio = AudioJob(cfg.tools, info.path, self.work, cfg.acodec, cfg.abitrate, bool(info.of_kind("audio")))
            scheduler, splitting = self.plan(len(offers), then=audio.start)
            self.scheduler = scheduler
            output = Join(cfg.tools, info, cfg.settings, self.container, cfg.output, self.work, audio)
            output.start_early(scheduler, ready=lambda: scheduler.complete and audio.done())
            # a liar's counted chunks, encoded again: the early concat may have read their results
            # (boss.py allows a fraction only for the encoders marked deterministic)
            self.rechecks = Rechecks(cfg.recheck_fraction, scheduler, lambda: list(self.links), self.work,
                                     self.report, self.cancel_copies, redone=lambda chunks: output.abandon_early())
            if self.stopped:
                scheduler.abort(self.stopped)
            with ThreadPoolExecutor(max_workers=VERIFIER_THREADS, thread_name_prefix="verify") as verifier, \
                    ffmpeg.children_killed_on_error(self.work):
                self.ctx = JobContext(name=self.tracker.user, settings=cfg.settings, scheduler=scheduler,
                                      work_dir=self.work, report=self.report,
                                      on_result=lambda *a: self.hand_in(verifier, *a),
                                      # (a job that decodes every result in full has no use for them)
                                      on_sample=(lambda *a: self.sample_in(verifier, *a))
                                      if cfg.verify_fraction < 1.0 and cfg.samples != "never" else None,
                                      wants_sample=self.sample_wanted, samples_here=cfg.samples == "always",
                                      on_assigned=self.phases.assigned,
                                      cancel=self.cancel_copies,
                                      silence_timeout=cfg.silence_timeout,
                                      tls=functools.cache(lambda: ca_context(cfg.tls)),
                                      frame_bytes=raw_frame_bytes(info, cfg.settings))
                with self.phases.timed("encode"):
                    if not scheduler.finished.is_set():
                        self.start_links(offers)      # workers connect while the split goes on
                        self.wait(scheduler)
            if splitting is not None:
                splitting.join()
            if self.stopped:
                raise TranscoderError(self.stopped)      # not the killed split's own error
            if self.split_error is not None:
                raise self.split_error
            chunks = scheduler.chunks
            if scheduler.fatal:
                raise TranscoderError(scheduler.fatal)
            # the bar has ended: say what the last seconds (a long output's packet check) are for
            log.info("all %d chunks in; finishing the output (mux and checks)", len(chunks))
            with self.phases.timed("audio_wait"):
                audio.join()
            with self.phases.timed("join"), \
                    phase_progress(self.cfg, self.phases, "join", "checking the output") as shown:
                summary = output.finish(chunks, self.expected_frames, on_progress=shown)
            summary["phases"] = self.phases.times
            # from the boss's start (the probe included), as the timeline's other times are
            summary["seconds"] = self.phases.since_start()
            summary["timeline"] = {"first_assigned": self.phases.first_assigned,
                                   "last_result": self.phases.last_result, "finished": summary["seconds"]}
            summary["chunks"] = len(chunks)
            summary["rechecked"] = self.rechecks.agreed      # chunks two workers' encodes agreed on
            summary["cpu_seconds"] = cpu_seconds()
            summary["peak_memory_mib"] = peak_memory_mib()
            summary["workers"] = {link.offer.name: link.stats.summary() for link in self.links}
            self.print_summary(summary)
            self.summary = summary
            status = "done"
            return 0
        except TranscoderError as exc:
            detail = str(exc)
            raise
        except KeyboardInterrupt:
            status, detail = "interrupted", "interrupted by the user"
            raise
        finally:
            if output is not None:
                output.close()              # an early join still running: the job failed
            # not before the join: each link says goodbye to its worker while the output is written
            for link in self.links:
                if status == "done":
                    link.join(timeout=LINK_JOIN)
                link.close()                 # workers see the session end and stop encoding
            with contextlib.suppress(TranscoderError):
                self.reporter.flush_and_stop(timeout=REPORTER_FLUSH)
                self.tracker.job_end(self.id, status, detail=detail[:500] or None, frames=info.shown_frames,
                                     seconds=self.phases.since_start())
            self.tracker.close()

    def worker_states(self, scheduler: Scheduler) -> list[dict[str, Any]]:
        """Per worker, for the bar's worker lines and --progress json: chunks and frames done, the
        chunk it is encoding and that chunk's frames encoded so far and in all."""
        on = {w: c for c in scheduler.chunks if c.state is ChunkState.ASSIGNED and c.started for w in c.workers}
        states = []
        for link in self.links:
            if link.is_alive():
                chunk = on.get(link.offer.name)
                states.append({"worker": link.offer.name, "chunks_done": link.stats.chunks_done,
                               "frames_done": link.stats.frames_done, "chunk": chunk.index if chunk else None,
                               "chunk_progress": chunk.progress if chunk else 0,
                               "chunk_frames": chunk.frames if chunk else 0})
        return states

    def abort(self, reason: str) -> None:
        """Stop from another thread (a queue interrupted): the job fails with `reason`, its work
        kept to resume, its ffmpeg children ended."""
        self.stopped = reason
        if self.scheduler is not None:
            self.scheduler.abort(reason)
        ffmpeg.kill_children(self.work)

    def report(self, event: Event, **fields: Any) -> None:
        if self.reporter is not None:
            self.reporter.report(self.id, event, **fields)

    # ------------------------------------------------------------ workers

    def ask_workers(self, count: int) -> list[WorkerOffer]:
        """Up to `count` more workers from the tracker, not counting those working for us now."""
        busy = sorted(link.offer.name for link in self.links if link.is_alive() or link.dropped)
        offers = []
        for w in self.tracker.workers(self.id, min(max(count, 1), MAX_WORKERS_PER_REQUEST),
                                      self.cfg.settings.vcodec, busy):
            try:
                offers.append(WorkerOffer.from_wire(w))
            except ProtocolError as exc:
                log.warning("ignoring a malformed worker entry: %s", exc)
        return offers

    def start_links(self, offers: list[WorkerOffer]) -> None:
        """Open sessions with these workers: all on the same ffmpeg build, unless allowed to mix."""
        assert self.ctx is not None
        if self.ffmpeg_build is None and offers:
            builds = Counter(o.ffmpeg for o in offers)
            self.ffmpeg_build = builds.most_common(1)[0][0]
        for offer in offers:
            if self.cfg.tls.context is not None and not offer.tls:
                log.warning("not using %s: it does not speak TLS (--plain to use such workers)", offer.name)
                continue
            if offer.ffmpeg != self.ffmpeg_build:
                if not self.cfg.allow_mixed:
                    log.warning("not using %s: it runs %s, this job's chunks are encoded with %s "
                                "(--allow-mixed-encoders to use it anyway)", offer.name, offer.ffmpeg,
                                self.ffmpeg_build)
                    continue
                log.warning("%s runs %s, other chunks %s: chunks may differ slightly", offer.name, offer.ffmpeg,
                            self.ffmpeg_build)
            link = WorkerLink(self.ctx, offer)
            self.links.append(link)
            link.start()

    def wait(self, scheduler: Scheduler) -> None:
        """Until every chunk is done or the job fails. Refreshes the bar; asks the tracker for more
        workers now and then (new ones may have registered), and at once when all are lost."""
        bar = BossBar(self.info.shown_frames) if self.cfg.bars and self.cfg.progress == "bar" else None
        said = 0.0
        alone_since: float | None = None
        next_ask = time.monotonic() + WORKER_REFRESH
        try:
            while not scheduler.finished.wait(BAR_REFRESH):
                assert self.rechecks is not None
                with self.rechecks.lock:
                    for chunk, link, path, sha in self.rechecks.settle_stalled():
                        self.record(chunk, link, path, sha, frames=chunk.frames, seconds=0.0)
                done, frames = scheduler.counts()
                if bar:
                    bar.update(frames, done, len(scheduler.chunks), self.worker_states(scheduler),
                               cutting=None if scheduler.complete else self.split_share)
                if self.phases.json is not None and time.monotonic() - said >= JSON_PROGRESS_EVERY:
                    said = time.monotonic()
                    self.phases.json.progress(frames, self.info.shown_frames, done, len(scheduler.chunks),
                                              self.worker_states(scheduler))
                alive = sum(link.is_alive() for link in self.links)
                now = time.monotonic()
                if alive:
                    alone_since = None
                elif alone_since is None:
                    alone_since = now
                    next_ask = now
                    log.warning("all workers lost; asking the tracker for others (waiting up to %gs)",
                                self.cfg.wait_workers)
                if alive < self.cfg.workers and now >= next_ask:
                    next_ask = now + (WAIT_WORKERS_POLL if not alive else WORKER_REFRESH)
                    with contextlib.suppress(TranscoderError):     # the tracker may be away: go on
                        self.start_links(self.ask_workers(self.cfg.workers - alive))
                if alone_since is not None and now - alone_since > self.cfg.wait_workers:
                    scheduler.abort(f"no live workers for {self.cfg.wait_workers:g}s; "
                                    f"{len(scheduler.chunks) - done} chunk(s) left")
            if bar:
                bar.update(*reversed(scheduler.counts()), len(scheduler.chunks))
        finally:
            if bar:
                bar.finish()

    # ------------------------------------------------------------ results

    def hand_in(self, verifier: ThreadPoolExecutor, link: WorkerLink, chunk: Chunk, tmp: Path, *rest: Any) -> None:
        """A result for the checks; one that comes in after the job has all of them (a late
        straggler copy, while the output is written) is not needed."""
        try:
            verifier.submit(self.guarded, "verifying a result", self.accept, link, chunk, tmp, *rest)
        except RuntimeError:          # the checks' pool is closed: the job has every result
            log.debug("%s: a copy from %s after the job had all its results; dropped", chunk.name, link.offer.name)
            tmp.unlink(missing_ok=True)

    def sample_wanted(self, link: WorkerLink, chunk: Chunk) -> bool:
        """A sample's comparison decodes all of it, about 24 frames, where the result's own
        decodes 3: worth it only for a result whose check may be all that keeps the output
        waiting once it comes (its worker has nothing after it) and that would use it (see
        sample_in). At 720p the sample cost 0.27 CPU-s, the result's comparison 0.14."""
        assert self.ctx is not None
        return not chunk.errors and self.verify.head_taken(link.offer.ffmpeg) \
            and self.ctx.scheduler.may_end_with(chunk, link.offer.name)

    def sample_in(self, verifier: ThreadPoolExecutor, link: WorkerLink, chunk: Chunk, path: Path) -> None:
        """A sample of a result being encoded, for the checks (checks.Samples)."""
        def check() -> None:
            # too late to be of use, or early: until a result of the build has its first frames
            # decoded, the next result may be the one decoded (a sample's comparison then costs
            # the boss one for nothing)
            # (a retried chunk's result is decoded in full: no use either)
            if chunk.state is ChunkState.DONE or self.ctx is None or self.ctx.scheduler.finished.is_set() \
                    or chunk.errors or not self.verify.head_taken(link.offer.ffmpeg):
                path.unlink(missing_ok=True)
                return
            if self.samples.check(self.cfg.tools, chunk, link.offer.name, path, self.cfg.settings,
                                  self.comparisons) and chunk.state is ChunkState.DONE:
                self.samples.forget(chunk)       # done while it was compared
        try:
            verifier.submit(self.guarded, "checking a sample", check)
        except RuntimeError:          # the checks' pool is closed: the job has every result
            path.unlink(missing_ok=True)

    def guarded(self, what: str, call: Callable[..., None], *args: Any) -> None:
        """Runs in the verifier pool, where an exception would vanish: fail the job loudly instead."""
        try:
            call(*args)
        except Exception as exc:          # noqa: BLE001 - a bug or a full disk must not hang the job
            log.exception("%s failed", what)
            assert self.ctx is not None
            self.ctx.scheduler.abort(f"{what} failed: {exc}")

    def accept(self, link: WorkerLink, chunk: Chunk, tmp: Path, sha: str, seconds: float) -> None:
        """Check a fetched result (client/checks.py); count it, or send the chunk back to the queue."""
        assert self.ctx is not None
        sched, worker = self.ctx.scheduler, link.offer.name
        try:
            done, _ = sched.counts()
            progress = (len(sched.chunks) - done - 1, len(sched.chunks), max(1, sum(l.is_alive() for l in self.links)))
            sample = self.samples.take(chunk, worker)
            try:
                frames, full, early = checks.check_result(self.cfg.tools, chunk, tmp, self.cfg.settings, self.verify,
                                                          worker, link.offer.ffmpeg, progress, self.comparisons,
                                                          sample)
            finally:
                if sample is not None:
                    sample.unlink(missing_ok=True)
        except (FFmpegError, ChunkError) as exc:
            tmp.unlink(missing_ok=True)
            link.stats.bad_results += 1
            log.warning("result of %s from %s rejected: %s", chunk.name, worker, exc)
            self.report(Event.CHUNK_FAILED, chunk=chunk.index, worker=worker, detail=str(exc)[:MAX_REASON])
            sched.fail(chunk, worker, str(exc))
            return
        link.stats.full_checks += full
        link.stats.compared_early += early
        assert self.rechecks is not None
        with self.rechecks.lock:             # decided and recorded at once (see Rechecks.lock)
            verdict = self.rechecks.accept(link, chunk, tmp, sha, left=progress[0], workers=progress[2])
            if verdict is not None:           # (None: kept until another worker's encode matches it)
                self.record(chunk, *verdict, frames=frames, seconds=seconds, handed_in_by=link)

    def record(self, chunk: Chunk, link: WorkerLink, path: Path, sha: str, frames: int, seconds: float,
               handed_in_by: WorkerLink | None = None) -> None:
        """The result that counts for the chunk (`link`'s: the one handed in by `handed_in_by`, or
        one kept for the re-encode check): moved into place, journalled, counted, reported."""
        assert self.ctx is not None
        worker = link.offer.name
        others = self.ctx.scheduler.done(chunk, (handed_in_by or link).offer.name, self.work / f"{chunk.name}.out.mkv",
                                         sha, received=path, made_by=worker)
        if others is None:
            path.unlink(missing_ok=True)      # a straggler copy finished second
            return
        self.phases.result_in()
        self.samples.forget(chunk)
        link.stats.chunks_done += 1
        link.stats.frames_done += frames
        link.stats.encode_seconds += seconds
        self.report(Event.CHUNK_DONE, chunk=chunk.index, worker=worker, frames=frames, seconds=round(seconds, 3))
        self.cancel_copies(chunk.index, others)     # the slower copy is no longer needed
        self.check_a_border()

    def check_a_border(self) -> None:
        """Once two adjacent chunks are done, decode across their border (checks.check_across);
        a failure fails the job now instead of at the join."""
        assert self.ctx is not None
        sched = self.ctx.scheduler
        if not ENCODERS[self.cfg.settings.vcodec].check_joins:
            return                       # its chunks start with a keyframe that resets the decoder
        with self.border_lock:
            if self.border_checked:
                return
            pairs = [(a, b) for a, b in zip(sched.chunks, sched.chunks[1:])
                     if a.state is ChunkState.DONE and b.state is ChunkState.DONE]
            pair = min(pairs, key=lambda ab: ab[0].frames, default=None)   # the cheaper to decode
            if pair is None:
                return
            self.border_checked = True
        try:
            checks.check_across(self.cfg.tools, *pair, self.work, self.info.frame_rate)
        except FFmpegError as exc:
            sched.abort(f"output check failed: {pair[0].name} and {pair[1].name} do not decode across their "
                        f"border: {exc.last_line or exc}")

    def cancel_copies(self, index: int, workers: set[str]) -> None:
        for link in self.links:
            if link.offer.name in workers:
                link.cancel(index)

    # ------------------------------------------------------------ split

    def plan(self, workers: int, then: Callable[[], None]) -> tuple[Scheduler, threading.Thread | None]:
        """The chunk table: an interrupted run's, with its finished results, or one the split fills
        in a thread of its own while workers already take the first chunks (the thread is
        returned, to be joined). `then` runs once the split is done."""
        identity = Identity.of(self.cfg.input, {**self.cfg.settings.to_wire(), "acodec": self.cfg.acodec,
                                                "chunk_seconds": self.cfg.chunk_seconds})
        state = JobState(self.work, identity)
        loaded = state.load()
        if loaded is not None:
            chunks, self.expected_frames = loaded
            done = sum(c.state is ChunkState.DONE for c in chunks)
            log.warning("resuming: %d of %d chunks already done", done, len(chunks))
            state.save(chunks, self.expected_frames)        # folds the journal in
            then()
            return Scheduler(chunks, on_done=state.record_done, copies_wanted=self.copies_wanted), None
        if state.path.exists():
            log.info("the input or the settings changed since the interrupted run: starting fresh")
        for old in list(self.work.iterdir()):
            if old.name not in ("audio.mka", SOURCE_COPY):
                shutil.rmtree(old) if old.is_dir() else old.unlink()
        scheduler = Scheduler([], on_done=state.record_done, complete=False, copies_wanted=self.copies_wanted)
        splitting = threading.Thread(target=self.split, args=(scheduler, state, workers, then), name="split",
                                     daemon=True)
        splitting.start()
        return scheduler, splitting

    def split(self, scheduler: Scheduler, state: JobState, workers: int, then: Callable[[], None]) -> None:
        """The split stage (client/split.py), feeding the scheduler; a failure fails the job."""
        try:
            with self.phases.timed("split"):
                splitter = Splitter(self.cfg.tools, self.info, self.cfg.settings, self.work, self.cfg.chunk_seconds,
                                    on_progress=self.cut_so_far)
                chunks = splitter.run(workers, scheduler.add)
            self.expected_frames = splitter.expected_frames
            state.save(chunks, self.expected_frames)
            then()
        except TranscoderError as exc:
            self.split_error = exc
            scheduler.abort(str(exc))
        except Exception as exc:          # noqa: BLE001 - a bug here must fail the job, not hang it
            log.exception("splitting failed")
            self.split_error = TranscoderError(f"splitting failed: {exc}")
            scheduler.abort(str(self.split_error))

    def cut_so_far(self, done: float, total: float) -> None:
        """The split's progress, when it hands out nothing until it is done: the job bar shows
        it in place of the chunk count, --progress json as phase_progress lines."""
        self.split_share = min(1.0, done / total) if total > 0 else None
        self.split_json.update(done, total)

    # ------------------------------------------------------------ summary

    def print_summary(self, summary: dict[str, Any]) -> None:
        log.info("wrote %s: %d frames, %.3fs, %d audio stream(s), A/V end offset %+.0f ms (input %+.0f ms), "
                 "in %.1fs", self.cfg.output, summary["frames"], summary["video_duration"],
                 summary["audio_streams"], summary["av_offset_ms"], summary["input_av_offset_ms"], summary["seconds"])
        log.info("  streams: %s -> %s", ", ".join(summary["input_streams"]), ", ".join(summary["streams"]))
        log.info("  phases: %s", ", ".join(f"{k} {v:.1f}s" for k, v in summary["phases"].items()))
        for name, w in summary["workers"].items():
            log.info("  %s: %d chunk(s), %d frames, %.1f fps", name, w["chunks"], w["frames"], w["fps"])
        if self.cfg.report:
            try:
                self.cfg.report.write_text(json.dumps({"job": self.id, **summary}, indent=2) + "\n",
                                           encoding="utf-8")
            except OSError as exc:      # the output is written: say so, don't fail the job over the report
                log.warning("could not write the report %s: %s", self.cfg.report, exc.strerror or exc)
