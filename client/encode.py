"""Encode one chunk on a worker: ffmpeg with the job's settings, the encoder warm-up of a
frame-range chunk split off again, the result hashed; or a chunk encoded while its bytes still
arrive (Arrival). No sockets here (client/session.py reports progress and the result to the
boss)."""
from __future__ import annotations

import hashlib
import logging
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Callable

from ffdt.client import faults
from ffdt.common import ffmpeg, mkv
from ffdt.common.config import FFMPEG_CHUNK_TIMEOUT, MAX_SAMPLE_BYTES
from ffdt.common.errors import FFmpegError
from ffdt.common.settings import Settings
from ffdt.common.transfer import BLOCK, sha256_file

log = logging.getLogger("worker")

SAMPLE_BLOCKS = 24     # frames a sample holds at least: the boss uses one that decodes to at least
                       # 21 (checks.SAMPLE_MIN_FRAMES: its first 3 shown before its end)
SAMPLE_TRIES = 20      # progress reports to try taking a sample on, from SAMPLE_BLOCKS frames on
SHORT_FEED = "the chunk's bytes did not all reach the encoder"   # an early encode's feed that ended short


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


class Arrival:
    """The bytes of a chunk still being uploaded, fed to an encoder's stdin as they land on disk.

    The receiver writes the file at the network's pace and calls grew(); the feeder (feed(), in
    a thread of its own) reads the file behind it into ffmpeg's stdin at the encoder's pace. The
    receiver never writes into the pipe: an encoder slower than the network would stall the
    upload. ended(True) once the whole file is received and its SHA-256 checked, ended(False)
    if the upload failed (the encode is then cancelled by its owner). `complete`: the feeder
    gave ffmpeg the whole checked file; an encode whose feed stopped short is not a result."""

    WAIT = 0.05              # a feeder ahead of what the writer has flushed looks again this often

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._file: BinaryIO | None = None       # our read handle on the file being written
        self._arrived = 0                        # bytes the receiver has written
        self._ok: bool | None = None             # None: still arriving
        self._fed = False                        # the feeder has ended
        self.complete = False

    def grew(self, path: Path, n: int) -> None:
        with self._cond:
            if self._file is None and not self._fed:
                try:                             # now, while the file has this name: the receiver renames it
                    self._file = path.open("rb")
                except OSError:
                    self._fed = True             # no feed: the feeder stops, the encode fails, the assign redoes it
            self._arrived += n
            self._cond.notify_all()

    def ended(self, ok: bool) -> None:
        with self._cond:
            self._ok = ok
            self._cond.notify_all()

    def feed(self, out: int) -> None:
        """Copy the file into `out` (a pipe's write end, closed here) up to its end, once the
        upload has ended well; stop at once if it failed or the reader went away."""
        fed = 0
        try:
            while True:
                with self._cond:
                    while self._ok is None and self._arrived <= fed:
                        self._cond.wait()
                    ok, f = self._ok, self._file
                if ok is False or f is None:
                    return                        # (f None: it could not be opened)
                block = f.read(BLOCK)
                if not block:
                    if ok:
                        self.complete = True
                        return                    # the whole file, checked: the child's EOF
                    with self._cond:              # (bytes written but not flushed yet)
                        self._cond.wait(self.WAIT)
                    continue
                fed += len(block)
                view = memoryview(block)
                while view:
                    view = view[os.write(out, view):]
        except OSError:
            pass                                  # ffmpeg ended or was killed: it says why
        finally:
            os.close(out)
            with self._cond:
                self._fed = True
                if self._file is not None:
                    self._file.close()
                    self._file = None


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
           on_frames: Callable[[int], None], on_sample: Callable[[], None] | None = None,
           arriving: Arrival | None = None) -> tuple[int, str] | None:
    """Encode `a` into a.output; returns (size, sha256), or None if it was cancelled.

    on_sample: take a sample of the result while it is encoded (take_sample), and call this once
    it is in a.sample; the result is then written in short clusters. The input file is removed
    before returning, whatever happens: a retry may upload to the same name. arriving: the input
    is still being received; ffmpeg reads it from `arriving` instead of a.input (a whole chunk
    only: no frame range), and a.input is left alone (it is not ours until the chunk is
    assigned). Raises FFmpegError if ffmpeg fails."""
    assert arriving is None or a.limit is None
    warmup = ffmpeg.warmup_frames(settings, a.skip) if a.limit is not None else 0
    sampling = on_sample is not None and not warmup
    cmd = ffmpeg.encode_cmd(tools, a.input if arriving is None else None, a.output, settings, threads,
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
        def short() -> bool:
            # a feed that ended short gave ffmpeg an early end of its input: whether it failed on
            # that or (at a cluster's end) exited 0, this is not the chunk's encode, and that is why
            return arriving is not None and not arriving.complete and not a.cancel.is_set()

        try:
            ffmpeg.run_with_progress(cmd, timeout=FFMPEG_CHUNK_TIMEOUT, cancel=a.cancel, on_frames=progress,
                                     on_start=lambda proc: faults.hold(a.chunk, proc),
                                     feed=arriving.feed if arriving is not None else None)
        except FFmpegError as exc:
            if short():
                raise FFmpegError(cmd, 0, SHORT_FEED) from exc
            raise
        if short():
            raise FFmpegError(cmd, 0, SHORT_FEED)
        if warmup and not a.cancel.is_set():
            chunk = ffmpeg.warmup_parts(a.output)[1]
            if not chunk.exists():
                raise FFmpegError(cmd, 0, "the warm-up frames could not be split off")
            chunk.replace(a.output)
    finally:
        if arriving is None:
            a.input.unlink(missing_ok=True)
        for part in ffmpeg.warmup_parts(a.output):
            part.unlink(missing_ok=True)
    if a.cancel.is_set():
        return None
    faults.tamper(tools, a.output)
    return a.output.stat().st_size, sha256_file(a.output)
