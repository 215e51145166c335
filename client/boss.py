#!/usr/bin/env python3
"""ffdt-boss: transcode one video with workers from the tracker.

probe -> split at keyframes (stream copy) -> hand chunks to workers -> verify each result ->
concat + mux with the source's audio, subtitles, chapters and metadata -> verify -> rename.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import os
import shutil
import signal
import socket
import ssl
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):      # run as a script: make the checkout importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from client import media
from client.link import JobContext, WorkerLink, WorkerOffer
from client.progress import BossBar, bars_wanted
from client.reporter import EventReporter
from client.jobstate import Identity, JobState
from client.scheduler import Chunk, ChunkState, Scheduler
from client.tracker_client import TrackerClient
from common import ffmpeg, tls
from common.cli import (PASSWORD_HELP, add_common_options, add_ffmpeg_options, add_password_option,
                        add_tls_client_options, read_password, run_main, setup_logging)
from common.config import FFMPEG_TOOL_TIMEOUT, MAX_WORKERS_PER_REQUEST, WORKER_SILENCE_TIMEOUT
from common.errors import FFmpegError, ProtocolError, TranscoderError, UsageError
from common.net import parse_host_port
from common.protocol import Role
from common.settings import Settings, parse_rate, parse_scale
from common.transfer import sha256_file

log = logging.getLogger("boss")

ONE_FRAME_PER_PACKET = {"h264", "hevc", "vp8", "vp9", "av1"}   # when the first chunk confirms it
AV_SYNC_TOLERANCE_MS = 50.0   # audio end vs video end may differ from the input's by this much
WORKER_REFRESH = 5.0      # ask the tracker for more workers this often while we have fewer than wanted
WAIT_WORKERS_POLL = 2.0    # ... and this often while we have none


@dataclass(frozen=True)
class BossConfig:
    input: Path
    output: Path
    settings: Settings
    acodec: str
    abitrate: int | None
    tools: ffmpeg.Tools
    ffmpeg_args: list[str]          # passed on to --local workers
    tracker: tuple[str, int] | None
    user: str
    password: str = field(repr=False)
    workers: int
    local: int
    chunk_seconds: float | None
    wait_workers: float
    silence_timeout: float
    work_dir: Path | None
    keep_work: bool
    restart: bool
    allow_mixed: bool
    bars: bool
    report: Path | None
    tls: ssl.SSLContext | None = None       # --tls/--tls-ca: tracker and workers over TLS only


@dataclass
class Phases:
    """Wall-clock seconds per phase, for the summary."""
    times: dict[str, float] = field(default_factory=dict)

    @contextlib.contextmanager
    def timed(self, name: str):
        start = time.monotonic()
        try:
            yield
        finally:
            self.times[name] = round(time.monotonic() - start, 3)


# ---------------------------------------------------------------- the job

def run_boss(cfg: BossConfig) -> int:
    container = media.container_for(cfg.output)
    if cfg.output.resolve() == cfg.input.resolve():
        raise UsageError("the output would overwrite the input")
    if not cfg.output.parent.is_dir():
        raise UsageError(f"{cfg.output.parent}: no such directory for the output")
    if cfg.output.is_dir():
        raise UsageError(f"{cfg.output} is a directory")
    if not os.access(cfg.output.parent, os.W_OK):
        raise UsageError(f"{cfg.output.parent}: cannot write there")
    if cfg.report is not None and not cfg.report.parent.is_dir():
        raise UsageError(f"{cfg.report.parent}: no such directory for --report")
    phases = Phases()
    with phases.timed("probe"):
        info = media.inspect(cfg.tools, cfg.input)
    audio = info.of_kind("audio")
    media.check_combination(container, cfg.settings.codec, cfg.acodec, audio)
    turn = media.clockwise_turn(info.video.rotation)
    if turn:
        log.info("the input is displayed turned by %d degrees: the output is turned the same way", turn)
        cfg = dataclasses.replace(cfg, settings=dataclasses.replace(cfg.settings, rotate=turn))
    v = info.video
    colour = dict(v.color)
    if colour.get("color_trc") in ("smpte2084", "arib-std-b67"):
        colour.update(media.hdr10_metadata(cfg.tools, cfg.input))
        if cfg.settings.vcodec != "libx265" and ("master_display" in colour or "max_cll" in colour):
            log.warning("HDR10 mastering metadata is only carried with --vcodec libx265; it is dropped")
    if colour:
        try:
            cfg = dataclasses.replace(cfg, settings=dataclasses.replace(cfg.settings, **colour))
        except UsageError as exc:
            log.warning("not carrying the input's colour description: %s", exc)
    if cfg.settings.scale_w is None and (v.width % 2 or v.height % 2) and \
            (cfg.settings.pix_fmt or "yuv420p").startswith(("yuv420", "nv12")):
        log.warning("odd size %dx%d: padding to an even size for 4:2:0 video "
                    "(--scale W:-2 to resize instead, or --pix-fmt yuv444p)", v.width, v.height)
        cfg = dataclasses.replace(cfg, settings=dataclasses.replace(cfg.settings, pad_even=True))
    work = prepare_work_dir(cfg)
    cluster = None
    ok = False
    try:
        tracker_addr, user, password = cfg.tracker, cfg.user, cfg.password
        if cfg.local:
            from client.local import LocalCluster
            log.info("starting a local tracker and %d worker%s", cfg.local, "s" if cfg.local > 1 else "")
            cluster = LocalCluster(cfg.local, cfg.ffmpeg_args)
            tracker_addr, user, password = cluster.addr, cluster.boss_user, cluster.password
        assert tracker_addr is not None
        tracker = TrackerClient(tracker_addr, user, password, Role.BOSS, tls=None if cfg.local else cfg.tls)
        tracker.connect()
        job = Job(cfg, info, container, work, tracker, phases)
        result = job.run()
        ok = True
        return result
    finally:
        if cluster is not None:
            cluster.close()
        if ok and not cfg.keep_work:
            shutil.rmtree(work, ignore_errors=True)
        elif not ok and (work / "state.json").exists():
            log.warning("the work so far is kept in %s: run the same command again to resume", work)
        elif not ok:
            shutil.rmtree(work, ignore_errors=True)     # nothing worth keeping yet


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
    except OSError as exc:
        raise UsageError(f"cannot create the work directory {work}: {exc.strerror}") from None
    return work


class Job:
    def __init__(self, cfg: BossConfig, info: media.MediaInfo, container: media.Container, work: Path,
                 tracker: TrackerClient, phases: Phases) -> None:
        self.cfg, self.info, self.container, self.work = cfg, info, container, work
        self.tracker, self.phases = tracker, phases
        self.links: list[WorkerLink] = []
        self.id = ""
        self.expected_frames = info.frames
        self.reporter: EventReporter | None = None
        self.ctx: JobContext | None = None
        self.ffmpeg_build: str | None = None      # every chunk is encoded by this build

    def run(self) -> int:
        cfg, info = self.cfg, self.info
        started = time.monotonic()
        self.id = self.tracker.job_start(cfg.input.name, cfg.settings)
        self.reporter = EventReporter(self.tracker)
        log.info("job %s: %s, %d frames, %.2fs, %s -> %s", self.id, cfg.input.name, info.frames,
                 info.video_duration, info.video.codec, cfg.settings.vcodec)
        status, detail = "failed", ""
        try:
            offers = self.ask_workers(cfg.workers)
            if not offers:
                raise TranscoderError(f"no live workers with {cfg.settings.vcodec} on tracker {self.tracker.where}")
            audio = AudioJob(cfg, self.work, bool(self.info.of_kind("audio")))
            with self.phases.timed("split"):
                chunks, state = self.plan(len(offers))
            scheduler = Scheduler(chunks, on_done=state.record_done)
            with ThreadPoolExecutor(max_workers=2, thread_name_prefix="verify") as verifier:
                self.ctx = JobContext(name=self.tracker.user, settings=cfg.settings, scheduler=scheduler,
                                      work_dir=self.work, tools=cfg.tools, verifier=verifier, report=self.report,
                                      silence_timeout=cfg.silence_timeout,
                                      tls=cfg.tls or tls.client_context(None))
                with self.phases.timed("encode"):
                    if not scheduler.finished.is_set():
                        self.start_links(offers)
                        self.wait(scheduler)
            if scheduler.fatal:
                raise TranscoderError(scheduler.fatal)
            with self.phases.timed("audio_wait"):
                audio.join()
            with self.phases.timed("join"):
                summary = self.join(chunks, audio)
            summary["phases"] = self.phases.times
            summary["seconds"] = round(time.monotonic() - started, 3)
            summary["chunks"] = len(chunks)
            summary["workers"] = {link.offer.name: {"chunks": link.chunks_done, "frames": link.frames_done,
                                                    "fps": round(link.frames_done / link.encode_seconds, 1)
                                                    if link.encode_seconds else 0.0}
                                  for link in self.links}
            self.print_summary(summary)
            status = "done"
            return 0
        except TranscoderError as exc:
            detail = str(exc)
            raise
        except KeyboardInterrupt:
            status, detail = "interrupted", "interrupted by the user"
            raise
        finally:
            for link in self.links:          # workers see the session end and stop encoding
                if link.sock is not None:
                    with contextlib.suppress(OSError):
                        link.sock.shutdown(socket.SHUT_RDWR)
                        link.sock.close()
            with contextlib.suppress(TranscoderError):
                self.reporter.flush_and_stop(timeout=5.0)
                self.tracker.job_end(self.id, status, detail=detail[:500] or None, frames=info.frames,
                                     seconds=round(time.monotonic() - started, 3))
            self.tracker.close()

    def report(self, event: str, **fields: Any) -> None:
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
            if self.cfg.tls is not None and not offer.tls and not self.cfg.local:
                log.warning("not using %s: it does not speak TLS, and this job asked for TLS", offer.name)
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
        bar = BossBar(self.info.frames, len(scheduler.chunks)) if self.cfg.bars else None
        alone_since: float | None = None
        next_ask = time.monotonic() + WORKER_REFRESH
        try:
            while not scheduler.finished.wait(0.5):
                done, frames = scheduler.counts()
                if bar:
                    bar.update(frames, done)
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
                bar.update(*reversed(scheduler.counts()))
        finally:
            if bar:
                bar.finish()
        for link in self.links:
            link.join(timeout=2.0)

    # ------------------------------------------------------------ split

    def plan(self, workers: int) -> tuple[list[Chunk], JobState]:
        """The chunks: an interrupted run's, with its finished results, or a fresh split."""
        identity = Identity.of(self.cfg.input, {**self.cfg.settings.to_wire(), "acodec": self.cfg.acodec,
                                                "chunk_seconds": self.cfg.chunk_seconds})
        state = JobState(self.work, identity)
        loaded = state.load()
        if loaded is not None:
            chunks, self.expected_frames = loaded
            done = sum(c.state is ChunkState.DONE for c in chunks)
            log.warning("resuming: %d of %d chunks already done", done, len(chunks))
            state.save(chunks, self.expected_frames)        # folds the journal in
            return chunks, state
        if state.path.exists():
            log.info("the input or the settings changed since the interrupted run: starting fresh")
        for old in list(self.work.iterdir()):
            if old.name not in ("audio.mka",):
                shutil.rmtree(old) if old.is_dir() else old.unlink()
        chunks = self.split(workers)
        state.save(chunks, self.expected_frames)
        return chunks, state

    def split(self, workers: int, entry_points: bool = True) -> list[Chunk]:
        """Cut the video at keyframes into chunk files and take each one's manifest.

        entry_points=False: the keyframes after the first are not places a decoder can start
        (x264's intra refresh flags its recovery points as keyframes), so every chunk decodes
        from the first."""
        info = self.info
        target = self.cfg.chunk_seconds or media.auto_chunk_seconds(info.video_duration, workers)
        cuts = media.plan_cuts(info.keyframes, info.start, info.video_start + info.video_duration, target) \
            if entry_points else []
        key = info.key if entry_points else [i == 0 for i in range(info.frames)]
        src_dir = self.work / "src"
        src_dir.mkdir()
        ffmpeg.run(ffmpeg.segment_cmd(self.cfg.tools, self.cfg.input, src_dir / "piece_%05d.mkv", cuts),
                   timeout=FFMPEG_TOOL_TIMEOUT)
        files = sorted(src_dir.glob("piece_*.mkv"))
        if len(files) != len(cuts) + 1:
            log.debug("planned %d chunks, the segment muxer made %d", len(cuts) + 1, len(files))
        packets = self.piece_packets(files, cuts)
        bounds = [sum(packets[:i]) for i in range(len(files) + 1)]     # each piece's packets in info.pts
        frames = self.count_frames(files, packets)
        if frames[0] == packets[0] and any(f < n for f, n in zip(frames[1:], packets[1:])):
            log.warning("the video's keyframes after the first do not decode on their own (intra refresh?): "
                        "every chunk decodes from the first")
            shutil.rmtree(src_dir)
            return self.split(workers, entry_points=False)
        chunks: list[Chunk] = []
        digests: dict[Path, tuple[int, str]] = {}       # chunks cut by frame range may share a file

        def digest(path: Path) -> tuple[int, str]:
            if path not in digests:
                digests[path] = path.stat().st_size, sha256_file(path)
            return digests[path]

        for i, path in enumerate(files):
            # presentation order; a chunk starts, on the input's video timeline, at its first frame
            pts = sorted(info.pts[bounds[i]:bounds[i + 1]])
            ranges = media.split_piece(frames[i], pts[-1] - pts[0] + 1 / info.frame_rate, target) \
                if frames[i] == packets[i] else [(0, frames[i])]
            if len(ranges) == 1:
                # field-coded pieces have two packets a frame, some without a timestamp: no span
                size, sha = digest(path)
                chunks.append(Chunk(index=len(chunks), source=path, size=size, sha256=sha,
                                    frames=frames[i], start=pts[0] - info.video_start,
                                    span=pts[-1] - pts[0] if frames[i] == packets[i] else None))
                continue
            log.info("no clean keyframe for %.1fs: cutting piece %d into %d chunks by frame range "
                     "(each worker decodes from the keyframe before its range)", pts[-1] - pts[0], i, len(ranges))
            piece_pts = info.pts[bounds[i]:bounds[i + 1]]
            lead = ffmpeg.WARMUP_FRAMES if self.cfg.settings.vcodec in ffmpeg.WARMUP_ENCODERS else 0
            spans = media.gop_spans(piece_pts, key[bounds[i]:bounds[i + 1]], ranges, lead)
            sources = self.span_files(path, piece_pts, spans)
            with ThreadPoolExecutor(max_workers=2) as pool:
                skips = list(pool.map(lambda r, sp: self.exact_skip(sources[sp], piece_pts, sp, pts[r[0]]),
                                      ranges, spans))
            for (skip, count), span, exact in zip(ranges, spans, skips):
                # no trustworthy count from the span's keyframe: decode from the piece's (clean) start
                source, skip_in_source = (sources[span], exact) if exact is not None else (path, skip)
                size, sha = digest(source)
                chunks.append(Chunk(index=len(chunks), source=source, size=size, sha256=sha,
                                    frames=count, start=pts[skip] - info.video_start,
                                    skip=skip_in_source, whole=False, span=pts[skip + count - 1] - pts[skip]))
        self.expected_frames = sum(frames)
        log.info("split into %d chunk%s of about %.1fs", len(chunks), "s" if len(chunks) > 1 else "", target)
        return chunks

    def exact_skip(self, source: Path, piece_pts: list[float], span: media.Span, first_pts: float) -> int | None:
        """The frames a decoder outputs from `source` (a span file) before the chunk's first frame.

        Counted from the timestamps when nothing stored after the span's keyframe is shown before
        it; otherwise by decoding, since whether a decoder shows such pictures depends on the codec
        (dropped: open-GOP B-frames; shown: HEVC RADL, closed-GOP MPEG-2). None when the decoded
        frames do not line up with the source's timestamps."""
        keyframe_pts = piece_pts[span.first]
        if all(t >= keyframe_pts for t in piece_pts[span.first:span.end]):
            return span.skip
        at = first_pts - keyframe_pts            # span files start at their keyframe's timestamp
        try:
            times = ffmpeg.frame_times(self.cfg.tools, source, until=at + 1.0)
        except FFmpegError:
            return None
        found = next(((k, t) for k, t in enumerate(times) if t is not None and t >= at - 0.0005), None)
        if found is None or found[1] - at > 0.0015:
            log.debug("%s: decoded frames do not line up at %.3fs; using the whole piece", source.name, at)
            return None
        return found[0]

    def span_files(self, piece: Path, pts: list[float], spans: list[media.Span]) -> dict[media.Span, Path]:
        """A file for each span of a piece cut by frame range, so a worker gets the GOPs its chunk
        needs, not the whole piece. Spans overlap (a chunk's last GOP is the next one's first),
        so they are cut in rounds, each a stream copy of the piece at the ends of spans that do
        not overlap."""
        files = {span: piece for span in spans if span.first == 0 and span.end == len(pts)}
        rounds: list[list[media.Span]] = []
        for span in sorted(set(spans) - set(files), key=lambda sp: (sp.first, sp.end)):
            free = next((r for r in rounds if r[-1].end <= span.first), None)
            if free is None:
                rounds.append([span])
            else:
                free.append(span)
        for n, spans_in_round in enumerate(rounds):
            at = sorted({p for sp in spans_in_round for p in (sp.first, sp.end)} - {0, len(pts)})
            pattern = piece.with_name(f"{piece.stem}.{n}_%04d.mkv")
            # the piece's own timestamps start at its first packet's
            ffmpeg.run(ffmpeg.segment_cmd(self.cfg.tools, piece, pattern, [pts[p] - pts[0] for p in at]),
                       timeout=FFMPEG_TOOL_TIMEOUT)
            made = sorted(piece.parent.glob(f"{piece.stem}.{n}_*.mkv"))
            edges = [0, *at, len(pts)]
            wanted = {sp: made[edges.index(sp.first)] for sp in spans_in_round} if len(made) == len(at) + 1 else {}
            # each file on its own: a cut one GOP late would move packets between two of them
            with ThreadPoolExecutor(max_workers=2) as pool:
                held = dict(zip(wanted, pool.map(lambda f: ffmpeg.count_packets(self.cfg.tools, f), wanted.values())))
            wrong = [sp for sp in spans_in_round if held.get(sp) != sp.end - sp.first]
            if wrong:
                sp = wrong[0]
                raise TranscoderError(f"cutting {piece.name} into GOP spans went wrong: {len(made)} files for "
                                      f"{len(at)} cuts, {held.get(sp)} packets where {sp.end - sp.first}")
            for extra in set(made) - set(wanted.values()):
                extra.unlink()
            files.update(wanted)
        return files

    def piece_packets(self, files: list[Path], cuts: list[float]) -> list[int]:
        """Video packets in each piece. When the segment muxer made the pieces planned, they
        follow from where each cut keyframe sits in the input, and one ffprobe over all pieces
        confirms none was lost (one ffprobe per piece took 2 minutes for 1,154 pieces)."""
        info = self.info
        total = None
        if len(files) == len(cuts) + 1:
            listing = files[0].parent / "pieces.ffconcat"
            listing.write_text(ffmpeg.concat_list([f.name for f in files]), encoding="utf-8")
            total = ffmpeg.count_packets(self.cfg.tools, listing, concat=True)
            listing.unlink()
        if total == info.frames:
            position = {k - info.start: i for k, i in zip(info.keyframes, info.keyframe_positions)}
            starts = [0, *(position[t] for t in cuts), info.frames]
            return [b - a for a, b in zip(starts, starts[1:])]
        log.debug("the segment muxer made %d pieces of %d packets for %d planned cuts: probing each piece",
                  len(files), total or -1, len(cuts))
        packets = [len(ffmpeg.stream_packets(self.cfg.tools, path)) for path in files]
        if sum(packets) != info.frames:
            raise TranscoderError(f"splitting lost frames: chunks hold {sum(packets)}, the input has {info.frames}")
        return packets

    def count_frames(self, files: list[Path], packets: list[int]) -> list[int]:
        """Frames per chunk. Usually one per packet; but field-coded video (interlaced H.264 in
        MPEG-TS) has two packets a frame, and MPEG-4 Part 2 in AVI has placeholder packets that
        decode to nothing. Unless the codec is one we trust and the first two chunks agree (the
        second starts at a cut keyframe), decode every chunk to count its frames."""
        def decoded(f: Path) -> int:
            return ffmpeg.decode_check(self.cfg.tools, f, count_only=True)

        first = decoded(files[0])
        if first == packets[0] and self.info.video.codec in ONE_FRAME_PER_PACKET and \
                (len(files) == 1 or decoded(files[1]) == packets[1]):
            return packets
        log.info("frames are not one per packet in this input: counting them by decoding")
        with ThreadPoolExecutor(max_workers=2) as pool:
            return [first, *pool.map(decoded, files[1:])]

    # ------------------------------------------------------------ join

    def join(self, chunks: list[Chunk], audio: AudioJob) -> dict[str, Any]:
        info, cfg, container = self.info, self.cfg, self.container
        listing = self.work / "chunks.ffconcat"
        durations = [b.start - a.start for a, b in zip(chunks, chunks[1:])]
        listing.write_text(ffmpeg.concat_list([c.result.name for c in chunks if c.result], durations),
                           encoding="utf-8")
        subtitles = []
        for s in info.of_kind("subtitle"):
            bitmap = s.codec in media.BITMAP_SUBS
            if bitmap and not container.bitmap_subs:
                log.warning("dropping bitmap subtitle stream %s: %s cannot hold it", s.label, container.muxer)
            elif container.text_subs and not bitmap:
                subtitles.append((s.index, "copy" if s.codec == container.text_subs else container.text_subs))
            else:
                subtitles.append((s.index, "copy"))
        for s in info.streams:
            if s.kind in ("data",) or (s.kind == "video" and s is not info.video) or \
                    (s.kind == "attachment" and not container.attachments):
                log.warning("dropping stream %s: not carried to the output", s.label)
        audio_streams = info.of_kind("audio")
        kept = {index for index, _ in subtitles}
        kept_subs = [s for s in info.of_kind("subtitle") if s.index in kept]
        plan = ffmpeg.MuxPlan(
            concat_list=listing, source=cfg.input, source_offset=info.start - info.video_start,
            video_index=info.video.index, audio=audio.path if audio.path else None,
            audio_offset=(min(s.start for s in audio_streams) - info.video_start) if audio_streams else 0.0,
            audio_count=len(audio_streams), subtitles=tuple(subtitles),
            attachments=tuple(s.index for s in info.of_kind("attachment")) if container.attachments else (),
            stream_tags=mp4_stream_tags(container.muxer, info.video, audio_streams, kept_subs),
            tags=tuple(media.carried_tags(info.tags, container.muxer).items()),
            muxer=container.muxer)
        # beside the output, so the rename is atomic: OUTPUT appears complete or not at all
        tmp = cfg.output.with_name(f".{cfg.output.name}.ffdt-partial{cfg.output.suffix.lower()}")
        try:
            ffmpeg.run(ffmpeg.mux_cmd(cfg.tools, plan, tmp))
            summary = verify_output(cfg.tools, info, tmp, cfg.settings, self.expected_frames, len(chunks))
            tmp.replace(cfg.output)
        except OSError as exc:
            raise TranscoderError(f"cannot write {cfg.output}: {exc.strerror or exc}") from None
        finally:
            tmp.unlink(missing_ok=True)
        return summary

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


def mp4_stream_tags(muxer: str, video: media.Stream, audio: list[media.Stream],
                    subtitles: list[media.Stream]) -> tuple[tuple[str, int, str, str], ...]:
    """(kind, position, key, value) for tags mp4/mov keep only when rewritten: a track's title
    lives in its handler name, and mov writes only the languages QuickTime's table knows."""
    if muxer not in ("mp4", "mov"):
        return ()
    tags = []
    for kind, streams in (("v", [video]), ("a", audio), ("s", subtitles)):
        for n, s in enumerate(streams):
            if kind != "v" and s.tags.get("title"):
                tags.append((kind, n, "handler_name", s.tags["title"]))
            if muxer == "mov" and s.tags.get("language") in media.MOV_LANGUAGE:
                tags.append((kind, n, "language", media.MOV_LANGUAGE[s.tags["language"]]))
    return tuple(tags)


class AudioJob:
    """Every audio stream, encoded (or copied) once by the boss while the workers encode video."""

    def __init__(self, cfg: BossConfig, work: Path, has_audio: bool) -> None:
        self.path: Path | None = work / "audio.mka" if has_audio else None
        self.error: FFmpegError | None = None
        self._thread = threading.Thread(target=self._run, args=(cfg,), name="audio", daemon=True)
        if has_audio:
            self._thread.start()

    def _run(self, cfg: BossConfig) -> None:
        assert self.path is not None
        try:
            ffmpeg.run(ffmpeg.audio_cmd(cfg.tools, cfg.input, self.path, cfg.acodec, cfg.abitrate))
        except FFmpegError as exc:
            self.error = exc

    def join(self) -> None:
        if self._thread.ident is not None:         # started (there is audio)
            self._thread.join()
        if self.error:
            raise TranscoderError(f"audio: {self.error}")


def verify_output(tools: ffmpeg.Tools, info: media.MediaInfo, path: Path, settings: Settings,
                  expected: int, chunks: int = 1) -> dict[str, Any]:
    """The checks a user would make with ffprobe; a TranscoderError if any fails.

    `expected` is the input's frame count (decoded frames, which differ from packets for
    field-coded video)."""
    out = media.inspect(tools, path)
    problems = []
    if settings.fps is not None:
        # a new rate: frames follow the duration, give or take one per chunk border
        num, _, den = settings.fps.partition("/")
        expected = round(info.video_duration * int(num) / int(den or 1))
        if abs(out.frames - expected) > chunks + 1:
            problems.append(f"{out.frames} video frames at {settings.fps} fps, expected about {expected}")
    elif out.frames != expected:
        problems.append(f"{out.frames} video frames, the input has {expected}")
    one_frame = 1.0 / (info.frame_rate or 25.0)
    if settings.fps is None and abs(out.video_duration - info.video_duration) > one_frame + 0.002:
        problems.append(f"video lasts {out.video_duration:.3f}s, the input's {info.video_duration:.3f}s")
    if len(out.of_kind("audio")) != len(info.of_kind("audio")):
        problems.append(f"{len(out.of_kind('audio'))} audio streams, the input has {len(info.of_kind('audio'))}")
    if out.video.codec != settings.codec:
        problems.append(f"video codec is {out.video.codec}, not {settings.codec}")
    try:
        decoded = ffmpeg.decode_check(tools, path, with_audio=True)
    except FFmpegError as exc:
        problems.append(exc.last_line or str(exc))
        decoded = -1
    if decoded >= 0 and settings.fps is None and decoded != expected:
        problems.append(f"{decoded} frames decode, expected {expected}")
    av_offset = src_offset = 0.0
    if out.of_kind("audio") and info.of_kind("audio"):
        # where the first audio track ends against where the video ends, in both files
        av_offset = (media_end(tools, path, "a:0") - (out.video_start + out.video_duration)) * 1000
        src_offset = (media_end(tools, info.path, "a:0") - (info.video_start + info.video_duration)) * 1000
        if abs(av_offset - src_offset) > AV_SYNC_TOLERANCE_MS:
            problems.append(f"audio ends {av_offset:+.0f} ms from the video's end, the input's {src_offset:+.0f} ms")
    if problems:
        raise TranscoderError(f"output check failed: {'; '.join(problems)}")
    return {"frames": out.frames, "video_duration": round(out.video_duration, 6),
            "input_frames": expected, "input_video_duration": round(info.video_duration, 6),
            "audio_streams": len(out.of_kind("audio")), "av_offset_ms": round(av_offset, 1),
            "input_av_offset_ms": round(src_offset, 1),
            "input_streams": [s.label for s in info.streams], "streams": [s.label for s in out.streams]}


def media_end(tools: ffmpeg.Tools, path: Path, stream: str) -> float:
    """Where a stream's last packet ends."""
    packets = ffmpeg.stream_packets(tools, path, stream)
    return max((p.pts + p.duration for p in packets), default=0.0)


# ---------------------------------------------------------------- command line

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ffdt-boss", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Transcode INPUT into OUTPUT with workers from a tracker (or --local N workers on this "
        "machine). The container follows OUTPUT's extension (.mp4 .mov .mkv .webm); defaults: H.264 + AAC, "
        "or VP9 + Opus for .webm.",
        epilog=PASSWORD_HELP + ". Environment: FFDT_PASSWORD, FFMPEG_PATH.")
    p.add_argument("input", type=Path, metavar="INPUT")
    p.add_argument("-o", "--output", type=Path, required=True, metavar="OUTPUT")
    where = p.add_argument_group("workers")
    where.add_argument("--tracker", help="tracker HOST:PORT")
    where.add_argument("--user", help="tracker user with the boss role")
    where.add_argument("--local", type=int, default=0, metavar="N",
                       help="no tracker: start N workers on this machine")
    where.add_argument("--workers", type=int, default=16, help="use up to this many workers")
    where.add_argument("--wait-workers", type=float, default=60.0,
                       help="if every worker is lost, wait this long for new ones")
    where.add_argument("--worker-timeout", type=float, default=WORKER_SILENCE_TIMEOUT,
                       help="seconds of silence after which a worker counts as lost")
    enc = p.add_argument_group("encoding")
    enc.add_argument("--vcodec", help="libx264, libx265, libvpx-vp9, libsvtav1, libaom-av1, mpeg4")
    enc.add_argument("--crf", type=int, help="constant quality (encoder's scale)")
    enc.add_argument("--vbitrate", help="target video bit rate, e.g. 2500k")
    enc.add_argument("--maxrate", help="maximum video bit rate")
    enc.add_argument("--bufsize", help="rate-control buffer size")
    enc.add_argument("--preset", help="encoder preset (x264/x265 names; a number for VP9/AV1)")
    enc.add_argument("--pix-fmt", help="output pixel format, e.g. yuv420p")
    enc.add_argument("--scale", help="W:H, e.g. 1280:-2")
    enc.add_argument("--fps", help="output frame rate (default: keep the source's timestamps)")
    enc.add_argument("--acodec", help="audio encoder, or copy (default suits the container)")
    enc.add_argument("--abitrate", help="audio bit rate, e.g. 160k")
    p.add_argument("--chunk-seconds", type=float, help="target chunk length (default: about 4 chunks per worker)")
    p.add_argument("--work-dir", type=Path, help="where chunks are kept (default: beside OUTPUT)")
    p.add_argument("--keep-work", action="store_true", help="keep the work directory after success")
    p.add_argument("--restart", action="store_true",
                   help="throw away an interrupted run's work instead of resuming it")
    p.add_argument("--allow-mixed-encoders", action="store_true",
                   help="also use workers whose ffmpeg build differs from the others' (chunks may differ)")
    p.add_argument("--report", type=Path, metavar="FILE", help="write the job summary as JSON")
    add_ffmpeg_options(p, quiet_help="no progress bar, warnings and errors only")
    add_tls_client_options(p)
    add_password_option(p)
    add_common_options(p)
    return p


def config_from_args(args: argparse.Namespace) -> BossConfig:
    container = media.container_for(args.output)
    if args.local < 0 or args.local > 64:
        raise UsageError("--local takes 1..64 workers")
    if not args.local and not (args.tracker and args.user):
        raise UsageError("give --tracker HOST:PORT and --user NAME, or --local N")
    if args.workers < 1:
        raise UsageError("--workers must be at least 1")
    if args.chunk_seconds is not None and not 0.5 <= args.chunk_seconds <= 3600:
        raise UsageError("--chunk-seconds must be between 0.5 and 3600")
    scale = parse_scale(args.scale) if args.scale else (None, None)
    settings = Settings(vcodec=args.vcodec or container.default_vcodec, crf=args.crf,
                        vbitrate=parse_rate(args.vbitrate) if args.vbitrate else None,
                        maxrate=parse_rate(args.maxrate) if args.maxrate else None,
                        bufsize=parse_rate(args.bufsize) if args.bufsize else None,
                        preset=args.preset, pix_fmt=args.pix_fmt, scale_w=scale[0], scale_h=scale[1], fps=args.fps)
    acodec = args.acodec or container.default_acodec
    if acodec != "copy" and acodec not in media.AUDIO_ENCODER_CODEC:
        raise UsageError(f"unsupported --acodec {acodec!r}; choose from copy, {', '.join(media.AUDIO_ENCODER_CODEC)}")
    tools = ffmpeg.find_tools(args.ffmpeg, args.use_global)
    ffmpeg_args = (["--ffmpeg", args.ffmpeg] if args.ffmpeg else []) + (["--use-global"] if args.use_global else [])
    return BossConfig(
        input=args.input, output=args.output, settings=settings, acodec=acodec,
        abitrate=parse_rate(args.abitrate) if args.abitrate else None, tools=tools, ffmpeg_args=ffmpeg_args,
        tracker=parse_host_port(args.tracker) if args.tracker and not args.local else None,
        user=args.user or "", password="" if args.local else read_password(args.password_file),
        workers=args.local or args.workers, local=args.local, chunk_seconds=args.chunk_seconds,
        wait_workers=max(0.0, args.wait_workers), silence_timeout=max(1.0, args.worker_timeout),
        tls=tls.client_context(args.tls_ca) if (args.tls or args.tls_ca) and not args.local else None,
        work_dir=args.work_dir, keep_work=args.keep_work, restart=args.restart,
        allow_mixed=args.allow_mixed_encoders, bars=bars_wanted(args.quiet), report=args.report)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging("boss", verbose=args.verbose, quiet=args.quiet)
    # `kill` stops the boss the way Ctrl-C does: workers told, children ended, work kept
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    return run_main("boss", lambda: run_boss(config_from_args(args)))


if __name__ == "__main__":
    sys.exit(main())
