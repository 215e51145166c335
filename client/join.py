"""Join: the audio job, then the concat of the verified chunks and the mux with the source's
audio, subtitles, attachments, chapters and metadata; the output appears complete or not at all.
"""
from __future__ import annotations

import dataclasses
import errno
import logging
import os
import shutil
import threading
from pathlib import Path
from typing import Any, Callable

from ffdt.client import checks, media
from ffdt.client import streams as choice_of
from ffdt.client.scheduler import Chunk, Scheduler
from ffdt.common import ffmpeg
from ffdt.common.config import FFMPEG_TOOL_TIMEOUT
from ffdt.common.errors import FFmpegError, TranscoderError
from ffdt.common.settings import Settings

log = logging.getLogger("boss")

AUDIO_NICENESS = 19     # the audio encode runs beside the chunk traffic; it must not slow it


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

    def __init__(self, tools: ffmpeg.Tools, source: Path, work: Path, acodec: str, abitrate: int | None,
                 has_audio: bool) -> None:
        self.path: Path | None = work / "audio.mka" if has_audio else None
        self.error: FFmpegError | None = None
        self._thread = threading.Thread(target=self._run, args=(tools, source, acodec, abitrate), name="audio", daemon=True)

    def start(self) -> None:
        """Once the split is done: the input's audio is needed only for the join, and until the
        first chunks are out every CPU-second of the boss's belongs to them."""
        if self.path is not None and self._thread.ident is None:
            self._thread.start()

    def _run(self, tools: ffmpeg.Tools, source: Path, acodec: str, abitrate: int | None) -> None:
        assert self.path is not None
        try:
            ffmpeg.run(ffmpeg.audio_cmd(tools, source, self.path, acodec, abitrate), nice=AUDIO_NICENESS)
            # both here, while workers encode, not after the last chunk: the output's audio is a
            # stream copy of this file, so its decode check stands for the output's
            ffmpeg.decode_check(tools, self.path, audio_only=True)
        except FFmpegError as exc:
            self.error = exc

    def done(self) -> bool:
        """Encoded and checked (or there is no audio)."""
        return self.path is None or (self._thread.ident is not None and not self._thread.is_alive()
                                     and self.error is None)

    def join(self) -> None:
        if self._thread.ident is not None:         # started (there is audio)
            self._thread.join()
        if self.error:
            raise TranscoderError(f"audio: {self.error}")


JOIN_POLL = 0.5     # seconds: how often the early join's feeder looks up from its wait (the job may stop)
PIPE_POLL = 0.02    # seconds: how often it tries a pipe the concat has not opened yet


class Join:
    """The output: the verified chunks concatenated, muxed with the source's audio, subtitles,
    chapters and metadata, checked (checks.verify_output) and renamed into place, so it appears
    complete or not at all.

    Early (start_early): once the split and the audio are done, the concat starts on a list of
    named pipes, one per chunk, and a thread writes each chunk's result into its pipe as soon as
    that chunk and every one before it are verified. The mux then runs while workers encode, and
    after the last result only what follows it in the output is left to write (at a quarter core
    the whole mux of a 60 s output took 1.6 s). Without named pipes, or if that run fails, the
    concat runs on the result files once all are in, as it always did."""

    def __init__(self, tools: ffmpeg.Tools, info: media.MediaInfo, settings: Settings, container: media.Container,
                 output: Path, work: Path, audio: AudioJob) -> None:
        self.tools, self.info, self.settings, self.container = tools, info, settings, container
        self.output, self.work, self.audio = output, work, audio
        # beside the output, so the rename is atomic
        self.tmp = output.with_name(f".{output.name}.ffdt-partial{output.suffix.lower()}")
        self.pipes = work / "join"
        # worked out (and what is dropped said) before the job's progress bar starts
        self._plan = self._make_plan(work / "chunks.ffconcat")
        self._early: ffmpeg.Background | None = None
        self._feeder: threading.Thread | None = None
        self._joined = False                 # the early concat wrote the whole output
        self._closing = threading.Event()

    # ------------------------------------------------------------ early

    def start_early(self, scheduler: Scheduler, ready: Callable[[], bool]) -> None:
        """Start the feeder thread; it starts the concat once ready() (every chunk known, the audio
        done) and feeds the results in order."""
        if not hasattr(os, "mkfifo"):
            return
        self._feeder = threading.Thread(target=self._feed_all, args=(scheduler, ready), name="join", daemon=True)
        self._feeder.start()

    def _feed_all(self, scheduler: Scheduler, ready: Callable[[], bool]) -> None:
        try:
            while not ready():
                if self._closing.wait(JOIN_POLL) or scheduler.fatal:
                    return
            chunks = list(scheduler.chunks)
            pipes = self._make_pipes(len(chunks))
            if pipes is None:
                return
            listing = self._listing(chunks, [f"{self.pipes.name}/{p.name}" for p in pipes])
            self._early = ffmpeg.Background(ffmpeg.mux_cmd(self.tools, self.plan(listing), self.tmp))
            for chunk, pipe in zip(chunks, pipes):
                while True:
                    if self._closing.is_set() or not self._early.running():
                        return
                    done = scheduler.wait_done(chunk, JOIN_POLL)
                    if done is False:
                        return
                    if done:
                        break
                assert chunk.result is not None
                if not self._write(pipe, chunk.result):
                    return
            # waited for here: the child dies with the thread that started it (die_with_parent)
            self._early.wait(FFMPEG_TOOL_TIMEOUT)
            self._joined = True
        except (OSError, FFmpegError) as exc:       # the join at the end will do it all
            if not self._closing.is_set():
                log.warning("the early join failed (%s); joining the result files at the end", exc)
        except Exception:                  # noqa: BLE001 - a bug here must not hang the job: join at the end
            log.exception("early join failed")

    def _make_pipes(self, count: int) -> list[Path] | None:
        shutil.rmtree(self.pipes, ignore_errors=True)
        self.pipes.mkdir()
        pipes = [self.pipes / f"chunk_{i:05d}.mkv" for i in range(count)]
        try:
            for pipe in pipes:
                os.mkfifo(pipe, 0o600)
        except OSError as exc:          # a file system without them: join at the end
            log.debug("no named pipes in %s (%s): joining at the end", self.pipes, exc)
            return None
        return pipes

    def _write(self, pipe: Path, result: Path) -> bool:
        """Copy a result into its pipe once the concat opens it; False if the concat ended first."""
        assert self._early is not None
        while True:
            try:
                fd = os.open(pipe, os.O_WRONLY | os.O_NONBLOCK)   # blocking, this could wait forever
                break
            except OSError as exc:
                if exc.errno != errno.ENXIO:     # ENXIO: no reader yet
                    raise
            if self._closing.wait(PIPE_POLL) or not self._early.running():
                return False
        try:
            os.set_blocking(fd, True)
            with result.open("rb") as src:
                size, offset = os.fstat(src.fileno()).st_size, 0
                while offset < size:
                    sent = os.sendfile(fd, src.fileno(), offset, size - offset)
                    if sent == 0:
                        raise OSError(f"{result.name} ended early")
                    offset += sent
        except BrokenPipeError:            # the concat ended (failed, or killed by close())
            return False
        finally:
            os.close(fd)
        return True

    def abandon_early(self) -> None:
        """Stop the early concat for good (results it may have read no longer count): finish()
        joins the result files instead."""
        self._closing.set()
        if self._early is not None:
            self._early.kill()

    @property
    def joined_early(self) -> bool:
        """The early concat wrote the output (finish() did not concat the files again)."""
        return self._joined

    # ------------------------------------------------------------ the end

    def finish(self, chunks: list[Chunk], expected_frames: int,
               on_progress: Callable[[float, float], None] | None = None) -> dict[str, Any]:
        """Once every chunk is done: the early concat's output, or a concat of the result files
        now; then the checks (on_progress: how far their read is) and the rename. Returns the
        summary."""
        try:
            if not self._early_joined():
                listing = self._listing(chunks, [c.result.name for c in chunks if c.result])
                ffmpeg.run(ffmpeg.mux_cmd(self.tools, self.plan(listing), self.tmp))
            summary = checks.verify_output(self.tools, self.info, self.tmp, self.settings, expected_frames,
                                           [c.start for c in chunks[1:]], on_progress=on_progress)
            self.tmp.replace(self.output)
        except OSError as exc:
            raise TranscoderError(f"cannot write {self.output}: {exc.strerror or exc}") from None
        finally:
            self.close()
        return summary

    def _early_joined(self) -> bool:
        if self._feeder is not None:
            self._feeder.join()
        if self._early is not None and not self._joined:
            self._early.kill()
        return self._joined

    def close(self) -> None:
        """Stop the early concat if it still runs; remove its pipes and any partial output."""
        self._closing.set()
        if self._early is not None:
            self._early.kill()           # (also reaps one that ended by itself)
        if self._feeder is not None:
            self._feeder.join()
        shutil.rmtree(self.pipes, ignore_errors=True)
        self.tmp.unlink(missing_ok=True)

    # ------------------------------------------------------------ the plan

    def _listing(self, chunks: list[Chunk], names: list[str]) -> Path:
        listing = self.work / "chunks.ffconcat"
        durations = [b.start - a.start for a, b in zip(chunks, chunks[1:])]
        listing.write_text(ffmpeg.concat_list(names, durations), encoding="utf-8")
        return listing

    def plan(self, listing: Path) -> ffmpeg.MuxPlan:
        return dataclasses.replace(self._plan, concat_list=listing)

    def _make_plan(self, listing: Path) -> ffmpeg.MuxPlan:
        info, container, audio = self.info, self.container, self.audio
        subtitles = []
        dropped: dict[str, list[str]] = {}     # why -> labels: one warning line per kind
        for s in info.of_kind("subtitle"):
            bitmap = s.codec in media.BITMAP_SUBS
            uncarried = choice_of.uncarried(s.kind, s.codec)
            if uncarried:
                dropped.setdefault(uncarried, []).append(s.label)
            elif bitmap and not container.bitmap_subs:
                dropped.setdefault(f"bitmap subtitles: {container.muxer} cannot hold them", []).append(s.label)
            elif container.text_subs and not bitmap:
                subtitles.append((s.index, "copy" if s.codec == container.text_subs else container.text_subs))
            else:
                subtitles.append((s.index, "copy"))
        for s in info.streams:
            if s.kind == "data":
                dropped.setdefault(choice_of.uncarried(s.kind, s.codec) or "", []).append(s.label)
            elif s.kind == "video" and s is not info.video:
                dropped.setdefault("cover picture: not carried to the output" if s.attached_pic
                                   else "another video stream", []).append(s.label)
            elif s.kind == "attachment" and not container.attachments:
                dropped.setdefault(f"attachments: {container.muxer} cannot hold them", []).append(s.label)
        for line in choice_of.dropping_lines(dropped):
            log.warning("%s", line)
        audio_streams = info.of_kind("audio")
        kept = {index for index, _ in subtitles}
        kept_subs = [s for s in info.of_kind("subtitle") if s.index in kept]
        return ffmpeg.MuxPlan(
            concat_list=listing, source=info.path, source_offset=info.start - info.video_start,
            video_index=info.video.index, audio=audio.path if audio.path else None,
            audio_offset=(min(s.start for s in audio_streams) - info.video_start) if audio_streams else 0.0,
            audio_count=len(audio_streams), subtitles=tuple(subtitles),
            attachments=tuple(s.index for s in info.of_kind("attachment")) if container.attachments else (),
            stream_tags=mp4_stream_tags(container.muxer, info.video, audio_streams, kept_subs),
            tags=tuple(media.carried_tags(info.tags, container.muxer).items()),
            muxer=container.muxer)
