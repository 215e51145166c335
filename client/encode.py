"""Encode one chunk on a worker: ffmpeg with the job's settings, the encoder warm-up of a
frame-range chunk split off again, the result hashed. No sockets here (client/session.py
reports progress and the result to the boss)."""
from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ffdt.client import faults
from ffdt.common import ffmpeg, mkv
from ffdt.common.config import FFMPEG_CHUNK_TIMEOUT, MAX_SAMPLE_BYTES
from ffdt.common.errors import FFmpegError
from ffdt.common.settings import Settings
from ffdt.common.transfer import sha256_file

log = logging.getLogger("worker")

SAMPLE_BLOCKS = 24     # frames a sample holds at least: the boss uses one that decodes to at least
                       # 21 (checks.SAMPLE_MIN_FRAMES: its first 3 shown before its end)
SAMPLE_TRIES = 20      # progress reports to try taking a sample on, from SAMPLE_BLOCKS frames on


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
    sample: tuple[int, str] | None = None     # (size, sha256) of the sample, once taken

    @property
    def sample_path(self) -> Path:
        return self.output.with_name(self.output.name + ".sample")

    def drop_result(self) -> None:
        self.output.unlink(missing_ok=True)
        self.sample_path.unlink(missing_ok=True)


def take_sample(a: Assignment) -> bool:
    """Copy the start of the result being written, once its complete clusters hold SAMPLE_BLOCKS
    frames, to a.sample_path (what `sample` offers the boss; see PROTOCOL.md). False while they
    hold fewer, or if the file is not one common/mkv.py reads."""
    try:
        end = mkv.read_layout(a.output, enough=SAMPLE_BLOCKS).prefix(SAMPLE_BLOCKS)
        if end is None or end > MAX_SAMPLE_BYTES:
            return False
        with a.output.open("rb") as src:
            data = src.read(end)
        if len(data) != end:
            return False
        a.sample_path.write_bytes(data)
    except (mkv.Unsupported, OSError):
        return False          # (a full disk: the boss compares the whole result instead)
    if a.cancel.is_set():                   # (its files went while this one was written)
        a.sample_path.unlink(missing_ok=True)
        return False
    a.sample = end, hashlib.sha256(data).hexdigest()
    return True


def encode(tools: ffmpeg.Tools, settings: Settings, a: Assignment, threads: int,
           on_frames: Callable[[int], None], on_sample: Callable[[], None] | None = None) -> tuple[int, str] | None:
    """Encode `a` into a.output; returns (size, sha256), or None if it was cancelled.

    on_sample: take a sample of the result while it is encoded (take_sample), and call this once
    it is in a.sample; the result is then written in short clusters. The input file is removed
    before returning, whatever happens: a retry may upload to the same name. Raises FFmpegError
    if ffmpeg fails."""
    warmup = ffmpeg.warmup_frames(settings, a.skip) if a.limit is not None else 0
    sampling = on_sample is not None and not warmup
    cmd = ffmpeg.encode_cmd(tools, a.input, a.output, settings, threads,
                            frame_range=(a.skip, a.limit) if a.limit is not None else None, warmup=warmup,
                            sampled=sampling)

    tries = [SAMPLE_TRIES if sampling else 0]

    def progress(n: int) -> None:
        on_frames(max(0, n - warmup))
        # (the encoder's look-ahead holds frames back: the file shows when they are written)
        if tries[0] and n >= SAMPLE_BLOCKS and not a.cancel.is_set():
            tries[0] -= 1
            if take_sample(a):
                tries[0] = 0
                assert on_sample is not None
                on_sample()

    try:
        ffmpeg.run_with_progress(cmd, timeout=FFMPEG_CHUNK_TIMEOUT, cancel=a.cancel, on_frames=progress,
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
