"""Check: every test a chunk's result and the joined output must pass before they count.

The yardstick is the source as ffprobe and a decoder see it: frame counts, keyframes, the time
the frames span, decode errors, the audio's end against the video's.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from client import media
from client.scheduler import Chunk
from common import ffmpeg
from common.config import FFMPEG_CHUNK_CHECK_TIMEOUT
from common.errors import ChunkError, FFmpegError, TranscoderError
from common.settings import Settings

log = logging.getLogger("boss")

AV_SYNC_TOLERANCE_MS = 50.0   # audio end vs video end may differ from the input's by this much
SPAN_TOLERANCE = 0.002        # result vs source frame span: Matroska rounds each timestamp to 1 ms


def check_result(tools: ffmpeg.Tools, chunk: Chunk, path: Path, settings: Settings) -> int:
    """Check a result against the chunk's manifest: it decodes cleanly to exactly the chunk's
    frame count, starts with a keyframe, and its frames span the source's time. Returns its
    frame count; ChunkError or FFmpegError if it fails."""
    frames = ffmpeg.decode_check(tools, path, timeout=FFMPEG_CHUNK_CHECK_TIMEOUT)
    if settings.fps is not None:
        if frames == 0:          # a new frame rate: the total is checked at the end
            raise ChunkError(f"{chunk.name}: no frames")
    elif frames != chunk.frames:
        raise ChunkError(f"{chunk.name}: {frames} frames, expected {chunk.frames}")
    packets = ffmpeg.stream_packets(tools, path)
    if not packets or not packets[0].key:
        raise ChunkError(f"{chunk.name}: does not start with a keyframe")
    span = max(p.pts for p in packets) - min(p.pts for p in packets)
    if chunk.span is not None and settings.fps is None and abs(span - chunk.span) > SPAN_TOLERANCE:
        raise ChunkError(f"{chunk.name}: frames span {span:.3f}s, the source's {chunk.span:.3f}s")
    return frames


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
