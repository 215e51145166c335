"""Encode one chunk on a worker: ffmpeg with the job's settings, the encoder warm-up of a
frame-range chunk split off again, the result hashed. No sockets here (client/session.py
reports progress and the result to the boss)."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ffdt.client import faults
from ffdt.common import ffmpeg
from ffdt.common.config import FFMPEG_CHUNK_TIMEOUT
from ffdt.common.errors import FFmpegError
from ffdt.common.settings import Settings
from ffdt.common.transfer import sha256_file

log = logging.getLogger("worker")


@dataclass
class Assignment:
    """One chunk a boss assigned: where its bytes are, what to encode, the result once done."""
    chunk: int
    frames: int
    input: Path
    output: Path
    skip: int = 0                             # frames to decode and drop first
    limit: int | None = None                  # frames to encode after them (None: all)
    cancel: ffmpeg.Cancel = field(default_factory=ffmpeg.Cancel)
    result: tuple[int, str] | None = None     # (size, sha256) once encoded


def encode(tools: ffmpeg.Tools, settings: Settings, a: Assignment, threads: int,
           on_frames: Callable[[int], None]) -> tuple[int, str] | None:
    """Encode `a` into a.output; returns (size, sha256), or None if it was cancelled.

    The input file is removed before returning, whatever happens: a retry may upload to the
    same name. Raises FFmpegError if ffmpeg fails."""
    warmup = ffmpeg.warmup_frames(settings, a.skip) if a.limit is not None else 0
    cmd = ffmpeg.encode_cmd(tools, a.input, a.output, settings, threads,
                            frame_range=(a.skip, a.limit) if a.limit is not None else None, warmup=warmup)
    try:
        ffmpeg.run_with_progress(cmd, timeout=FFMPEG_CHUNK_TIMEOUT, cancel=a.cancel,
                                 on_frames=lambda n: on_frames(max(0, n - warmup)),
                                 on_start=lambda proc: faults.hold(a.chunk, proc))
        if warmup and not a.cancel.is_set():
            chunk = ffmpeg.warmup_parts(a.output)[1]
            if not chunk.exists():
                raise FFmpegError(cmd, 0, "the warm-up frames could not be split off")
            chunk.replace(a.output)
    finally:
        a.input.unlink(missing_ok=True)
        for part in ffmpeg.warmup_parts(a.output):
            part.unlink(missing_ok=True)
    if a.cancel.is_set():
        return None
    faults.tamper(tools, a.output)
    return a.output.stat().st_size, sha256_file(a.output)
