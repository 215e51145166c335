"""Join: the audio job, then the concat of the verified chunks and the mux with the source's
audio, subtitles, attachments, chapters and metadata; the output appears complete or not at all.
"""
from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

from ffdt.client import checks, media
from ffdt.client import streams as choice_of
from ffdt.client.scheduler import Chunk
from ffdt.common import ffmpeg
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

    def join(self) -> None:
        if self._thread.ident is not None:         # started (there is audio)
            self._thread.join()
        if self.error:
            raise TranscoderError(f"audio: {self.error}")


def join(tools: ffmpeg.Tools, info: media.MediaInfo, settings: Settings, container: media.Container,
         output: Path, work: Path, chunks: list[Chunk], audio: AudioJob, expected_frames: int) -> dict[str, Any]:
    """Concat the verified chunks, mux in the source's audio, subtitles, chapters and metadata,
    check the result (checks.verify_output) and rename it to `output`. Returns the summary."""
    listing = work / "chunks.ffconcat"
    durations = [b.start - a.start for a, b in zip(chunks, chunks[1:])]
    listing.write_text(ffmpeg.concat_list([c.result.name for c in chunks if c.result], durations),
                       encoding="utf-8")
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
    plan = ffmpeg.MuxPlan(
        concat_list=listing, source=info.path, source_offset=info.start - info.video_start,
        video_index=info.video.index, audio=audio.path if audio.path else None,
        audio_offset=(min(s.start for s in audio_streams) - info.video_start) if audio_streams else 0.0,
        audio_count=len(audio_streams), subtitles=tuple(subtitles),
        attachments=tuple(s.index for s in info.of_kind("attachment")) if container.attachments else (),
        stream_tags=mp4_stream_tags(container.muxer, info.video, audio_streams, kept_subs),
        tags=tuple(media.carried_tags(info.tags, container.muxer).items()),
        muxer=container.muxer)
    # beside the output, so the rename is atomic: OUTPUT appears complete or not at all
    tmp = output.with_name(f".{output.name}.ffdt-partial{output.suffix.lower()}")
    try:
        ffmpeg.run(ffmpeg.mux_cmd(tools, plan, tmp))
        summary = checks.verify_output(tools, info, tmp, settings, expected_frames, [c.start for c in chunks[1:]])
        tmp.replace(output)
    except OSError as exc:
        raise TranscoderError(f"cannot write {output}: {exc.strerror or exc}") from None
    finally:
        tmp.unlink(missing_ok=True)
    return summary
