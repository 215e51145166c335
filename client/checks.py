"""Check: every test a chunk's result and the joined output must pass before they count.

The yardstick is the source as ffprobe and a decoder see it: frame counts, keyframes, the time
the frames span, decode errors, the audio's end against the video's.
"""
from __future__ import annotations

import logging
import random
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from ffdt.client import media
from ffdt.client.scheduler import Chunk
from ffdt.common import ffmpeg, mkv
from ffdt.common.config import CHECK_FIXED_SECONDS, CHECK_SECONDS_PER_FRAME
from ffdt.common.encoders import ENCODERS
from ffdt.common.errors import ChunkError, FFmpegError, TranscoderError
from ffdt.common.settings import Settings

log = logging.getLogger("boss")

HEAD_FRAMES = 10             # frames decoded from the first result of each ffmpeg build (30 cost
                             # 0.5 CPU-s at 720p, 10 cost 0.3, 3 cost 0.2: most of it is the start)
COMPARE_FRAMES = 3           # frames of every result compared with the source's
MIN_PSNR_DB = 18.0           # x264 at CRF 51 on camera noise: 25 dB; a red box on a quarter of the picture: 15
AV_SYNC_TOLERANCE_MS = 50.0   # audio end vs video end may differ from the input's by this much,
                              # plus one output audio frame
SPAN_TOLERANCE = 0.002        # result vs source frame span: Matroska rounds each timestamp to 1 ms


class VerifyPolicy:
    """Which results the boss decodes, and how much of them; the rest get the packet checks only.

    Every result: its SHA-256 (on arrival), then ffprobe over its packets, which decodes nothing:
    the demuxer reads it without a message, one packet per expected frame, a keyframe first, no
    empty packet, rising decode timestamps, and the frames span the source's time. Decoded in
    full as well: a retried chunk, any result whose packets look odd, and a random `fraction` of
    the rest (drawn from the system's random source, so a worker cannot tell which of its results
    will be decoded). The first result of each ffmpeg build has its first HEAD_FRAMES frames
    decoded (a build whose encoder makes what the boss's decoder cannot read shows at once, for
    a few frames' cost rather than a whole chunk's: with one round of chunks that decode sat
    between the last result and the output)."""

    def __init__(self, fraction: float) -> None:
        self.fraction = fraction
        self._trusted: set[str] = set()         # ffmpeg builds with a result that passed a full check
        self._trying: set[str] = set()          # builds with such a check under way
        self._lock = threading.Lock()
        self._random = random.SystemRandom()

    def decode_frames(self, build: str, chunk: Chunk, *, left: int = 0, total: int = 1, workers: int = 1
                      ) -> int | None:
        """How many of this result's frames to decode: None for all, 0 for none. While one result
        of an untrusted build is being decoded, that build's other results get the packet checks
        (and the random draw) only: decoding several at once would cost the boss as much, for the
        same knowledge. `left`: the job's chunks not done yet besides this one; `total`: all of
        them; `workers`: the workers encoding them (see drawn)."""
        with self._lock:
            if chunk.errors or self.drawn(left, total, workers):
                return None
            if build in self._trusted or build in self._trying:
                return 0
            self._trying.add(build)
            return HEAD_FRAMES

    def drawn(self, left: int, total: int, workers: int) -> bool:
        """The random draw for a full decode. Not in the last round of a job with more than one
        (fewer chunks left than workers): there the decode sits between the last result and the
        output, and at a quarter core one 5 s chunk's decode took 12 s while every worker was
        idle. The earlier results are drawn more often instead, so the expected number decoded
        stays `fraction` of all; a worker cannot tell whether the boss counts its result in the
        last round (it does not know what the others hold)."""
        if self.fraction >= 1.0:
            return True
        chance = self.fraction
        if total > workers:
            if left < workers:
                return False
            chance = min(1.0, self.fraction * total / (total - workers))
        return self._random.random() < chance

    def head_taken(self, build: str) -> bool:
        """A result of this build has passed its first frames' decode, or is being decoded: the
        next ones get the packet checks and the comparison (unless drawn), which a sample can
        stand for."""
        with self._lock:
            return build in self._trusted or build in self._trying

    def decoded(self, build: str, passed: bool) -> None:
        with self._lock:
            self._trying.discard(build)
            if passed:
                self._trusted.add(build)


@dataclass(eq=False)
class _Compare:
    chunk: Chunk
    path: Path
    result: ffmpeg.Comparison | None = None
    error: FFmpegError | None = None
    alone: bool = False              # its run printed something or failed: compare it by itself

    @property
    def settled(self) -> bool:
        return self.result is not None or self.error is not None or self.alone


class Comparisons:
    """A job's comparisons of results with the source (compare_with_source), at most RUNS ffmpeg
    runs at once, and the COMPARE_FRAMES comparison every result gets several in one run.

    At the end of a job every worker's last result comes in at about the same moment; on a boss
    with a quarter of a core their comparisons queued one behind the other (six 640x360 results
    took 3.9 s), most of each the start of ffmpeg and the opening of its inputs. Here a check that
    finds RUNS runs going waits; the next run takes every comparison queued by then. A run of
    several that prints anything or fails says nothing of which result it was: each of them is
    then compared by itself, as one alone always is. The other comparisons (a build's first
    HEAD_FRAMES, a full decode) run one a run, within the same RUNS."""

    RUNS = 2                         # ffmpeg runs at once

    def __init__(self, tools: ffmpeg.Tools, settings: Settings) -> None:
        self.tools, self.settings = tools, settings
        self._cond = threading.Condition()
        self._queued: list[_Compare] = []
        self._running = 0
        self.runs = 0                    # ffmpeg runs made, for the results compared
        self.compared = 0

    def compare(self, chunk: Chunk, path: Path, frames: int | None, timeout: float,
                source_frames: int | None = None) -> ffmpeg.Comparison:
        """ffmpeg.compare_with_source of this result with its chunk's source; FFmpegError as it
        would raise."""
        job = _Compare(chunk, path)
        if frames != COMPARE_FRAMES or source_frames is not None:
            return self._in_a_slot(job, timeout, frames, source_frames)
        with self._cond:
            self._queued.append(job)
            while not job.settled:
                if job in self._queued and self._running < self.RUNS:
                    batch, self._queued = self._queued, []
                    self._running += 1
                    self._cond.release()
                    try:
                        self._run(batch, timeout)
                    finally:
                        self._cond.acquire()
                        self._running -= 1
                        for other in batch:          # (an unexpected error: nobody waits for ever)
                            other.alone = other.alone or not other.settled
                        self._cond.notify_all()
                else:
                    self._cond.wait()
        if job.error is not None:
            raise job.error
        return job.result if job.result is not None else self._in_a_slot(job, timeout, COMPARE_FRAMES)

    def _in_a_slot(self, job: _Compare, timeout: float, frames: int | None,
                   source_frames: int | None = None) -> ffmpeg.Comparison:
        """One result compared by itself, once fewer than RUNS runs are going."""
        with self._cond:
            self._cond.wait_for(lambda: self._running < self.RUNS)
            self._running += 1
        try:
            return self._single(job, timeout, frames, source_frames)
        finally:
            with self._cond:
                self._running -= 1
                self._cond.notify_all()

    def _run(self, batch: list[_Compare], timeout: float) -> None:
        if len(batch) == 1:
            try:
                batch[0].result = self._single(batch[0], timeout)
            except FFmpegError as exc:
                batch[0].error = exc
            return
        pairs = [(j.chunk.source, j.path, j.chunk.frame_range) for j in batch]
        try:
            found = ffmpeg.compare_many(self.tools, pairs, self.settings, COMPARE_FRAMES, timeout=timeout)
        except FFmpegError as exc:
            log.debug("comparing %d results in one run failed (%s); one by one", len(batch), exc.last_line)
            found = []
        with self._cond:
            self.runs += 1
            self.compared += len(batch)
        if len(found) == len(batch) and all(c.psnr and not c.messages for c in found):
            for job, compared in zip(batch, found):
                job.result = compared
        else:
            for job in batch:
                job.alone = True

    def _single(self, job: _Compare, timeout: float, frames: int | None = COMPARE_FRAMES,
                source_frames: int | None = None) -> ffmpeg.Comparison:
        with self._cond:
            self.runs += 1
            self.compared += 1
        return ffmpeg.compare_with_source(self.tools, job.chunk.source, job.path, self.settings,
                                          job.chunk.frame_range, frames, timeout=timeout, source_frames=source_frames)


SAMPLE_HELD_BACK = 18            # pictures a decoder may still hold at a file's end, to reorder them
                                 # (H.264 and HEVC keep at most 16; VP8/VP9/AV1 none)
SAMPLE_MIN_FRAMES = COMPARE_FRAMES + SAMPLE_HELD_BACK
SAMPLE_END = "File ended prematurely"    # ffmpeg's Matroska demuxer at a sample's end


class Samples:
    """The samples of a job's results whose frames passed the comparison with the source, by
    (chunk, worker): what a sample is, PROTOCOL.md ("sample"). At the end of a job every
    worker's last result comes in at about the same time, and on a quarter-core boss their six
    comparisons took 2.3 s after the last one; a sample is compared while its result is still
    being encoded, and stands for the result when the result starts with the same bytes
    (sample_stands_for: a read of those bytes, no decode).

    Why the bytes suffice: a decoder fed the sample's packets and then the result's next ones
    shows, up to the sample's end, what it showed from the sample alone; only the pictures it
    still held back at the sample's end (to reorder them, as the stream declares: at most
    SAMPLE_HELD_BACK) may come out differently. A sample that decodes to at least
    SAMPLE_MIN_FRAMES pictures therefore showed its first COMPARE_FRAMES before its end, and the
    result shows those same pictures first."""

    def __init__(self) -> None:
        self._passed: dict[tuple[int, str], Path] = {}
        self._lock = threading.Lock()

    def check(self, tools: ffmpeg.Tools, chunk: Chunk, worker: str, path: Path, settings: Settings,
              comparisons: Comparisons | None = None) -> bool:
        """Decode the whole sample without a message and compare its first COMPARE_FRAMES frames
        with the source's; keep it if they pass and it shows at least SAMPLE_MIN_FRAMES (True).
        One that fails is only not used: the result is compared itself when it comes."""
        try:
            # the shape a worker makes (complete clusters, nothing after them): anything else is
            # not the start of an honest result, and would only take the boss's disk
            clusters = mkv.read_layout(path).clusters
            if not clusters or clusters[-1][1] != path.stat().st_size:
                raise ChunkError("not whole clusters")
            # every frame decoded (and counted), the first COMPARE_FRAMES compared: what the
            # result's own comparison would have been (the source's decode is a fifth of it at 720p)
            compared = _compared(tools, chunk, path, settings, None, check_timeout(chunk), comparisons,
                                 source_frames=COMPARE_FRAMES)
            # a sample ends where the muxer had got to: the demuxer says so, nothing else may be said
            said = [line for line in compared.messages.splitlines() if line.strip() and SAMPLE_END not in line]
            if said:
                raise ChunkError(said[-1])
            worst = min(compared.psnr[:COMPARE_FRAMES], default=0.0)
            if len(compared.psnr) < SAMPLE_MIN_FRAMES or worst < MIN_PSNR_DB:
                raise ChunkError(f"{len(compared.psnr)} frames (at least {SAMPLE_MIN_FRAMES}), "
                                 f"the worst of the first {COMPARE_FRAMES} at {worst:.1f} dB")
        except (ChunkError, FFmpegError, mkv.Unsupported, OSError) as exc:
            log.debug("sample of %s from %s not used: %s", chunk.name, worker, exc)
            path.unlink(missing_ok=True)
            return False
        with self._lock:
            old = self._passed.pop((chunk.index, worker), None)
            self._passed[(chunk.index, worker)] = path
        if old is not None and old != path:
            old.unlink(missing_ok=True)
        return True

    def take(self, chunk: Chunk, worker: str) -> Path | None:
        """The passed sample of this worker's result of `chunk`, for check_result (the caller
        removes the file after)."""
        with self._lock:
            return self._passed.pop((chunk.index, worker), None)

    def forget(self, chunk: Chunk) -> None:
        """The chunk is done: every worker's sample of it goes (a copy cancelled, a failed
        attempt, a sample checked after its result)."""
        with self._lock:
            gone = [self._passed.pop(key) for key in [k for k in self._passed if k[0] == chunk.index]]
        for path in gone:
            path.unlink(missing_ok=True)


def sample_stands_for(sample: Path, result: Path) -> bool:
    """Whether the comparison of a passed `sample` (Samples.check) holds for `result`: the same
    track entry, and the sample's clusters at the same offsets in the result, byte for byte
    (mkv.same_start)."""
    try:
        return mkv.same_start(sample, result) > 0
    except (mkv.Unsupported, OSError):
        return False


def check_result(tools: ffmpeg.Tools, chunk: Chunk, path: Path, settings: Settings, policy: VerifyPolicy,
                 worker: str, build: str, progress: tuple[int, int, int] = (0, 1, 1),
                 comparisons: Comparisons | None = None, sample: Path | None = None) -> tuple[int, bool, bool]:
    """Check a result against the chunk's manifest (see VerifyPolicy). Returns (frames, whether
    the boss decoded it, in full or its first frames, whether its sample's comparison stood for
    its own); ChunkError or FFmpegError if it fails. progress: (chunks left besides this one,
    chunks in all, workers), for the draw; comparisons: the job's (Comparisons), else this
    result's comparison runs by itself; sample: a passed sample of this result (Samples)."""
    left, total, workers = progress
    limit = wanted = policy.decode_frames(build, chunk, left=left, total=total, workers=workers)
    timeout = check_timeout(chunk)
    log.debug("%s from %s: %s", chunk.name, worker, "decoding in full" if limit is None else
              f"decoding {limit} frames" if limit else "packet checks")
    passed = False
    try:
        packets = result_packets(tools, path, timeout, ENCODERS[settings.vcodec].codec)
        odd = packet_oddity(chunk, packets, settings)
        if odd and limit is not None:
            log.debug("%s from %s: %s; decoding it in full", chunk.name, worker, odd)
            limit = None
        early = False
        if limit == 0 and sample is not None:
            early = sample_stands_for(sample, path)
            if not early:
                log.debug("%s from %s: its sample does not stand for it; comparing the result", chunk.name, worker)
        if not early:
            # None: every frame; else the first build's HEAD_FRAMES, or the COMPARE_FRAMES every result has
            compared = compare_with_source(tools, chunk, path, settings,
                                           None if limit is None else limit or COMPARE_FRAMES, timeout, comparisons)
        frames = len(packets)
        if limit is None:
            frames = compared
            if settings.fps is not None:
                if frames == 0:          # a new frame rate: the total is checked at the end
                    raise ChunkError(f"{chunk.name}: no frames")
            elif frames != chunk.frames:
                raise ChunkError(f"{chunk.name}: {frames} frames, expected {chunk.frames}")
        passed = True
        return frames, limit != 0, early
    finally:
        if wanted != 0:
            policy.decoded(build, passed)


def result_packets(tools: ffmpeg.Tools, path: Path, timeout: float, codec: str | None = None) -> list[ffmpeg.Packet]:
    """A result's video packets, read from its Matroska blocks (common/mkv.py: no process
    start), or by ffprobe (any demuxer message an error) for a file that reader does not know.
    Matroska stores no decode timestamps, so none are given. With `codec` (ffprobe's name), a
    result of another codec is a ChunkError: the concat would copy it into the output as it is,
    and the checks of a sample assume a known codec's reorder depth."""
    try:
        blocks = mkv.read_video_blocks(path, codec)      # (a codec it has no CodecID for: ffprobe's name)
    except mkv.Unsupported as exc:
        log.debug("%s: %s; listing its packets with ffprobe", path.name, exc)
        if codec is not None and (found := ffmpeg.video_codec(tools, path, peer=True, timeout=timeout)) != codec:
            raise ChunkError(f"{path.name}: {found or 'no video'}, not {codec}") from None
        return ffmpeg.stream_packets(tools, path, strict=True, peer=True, timeout=timeout)
    return [ffmpeg.Packet(b.pts, b.pts, b.duration, b.key, size=b.size, dts_known=False) for b in blocks]


def compare_with_source(tools: ffmpeg.Tools, chunk: Chunk, path: Path, settings: Settings, frames: int | None,
                        timeout: float, comparisons: Comparisons | None = None) -> int:
    """Decode the result's first `frames` frames (None: all) and compare each with the source's
    by PSNR: a worker that returns a well-formed but different picture fails here, and so does
    one whose result the decoder complains about. Returns the frames decoded; ChunkError if one
    is below MIN_PSNR_DB, FFmpegError for a decode error."""
    compared = _compared(tools, chunk, path, settings, frames, timeout, comparisons)
    if compared.messages:
        # the source's decoder may complain where a single run over the source would too (the
        # piece is our own): whose message it was, a decode of the result alone tells
        ffmpeg.decode_check(tools, path, frames=frames, peer=True, timeout=timeout)
    values = compared.psnr
    if not values:
        raise ChunkError(f"{chunk.name}: no frame to compare with the source")
    worst = min(range(len(values)), key=values.__getitem__)
    if values[worst] < MIN_PSNR_DB:
        raise ChunkError(f"{chunk.name}: frame {worst} is not the source's picture "
                         f"(PSNR {values[worst]:.1f} dB, below {MIN_PSNR_DB:g})")
    return len(values)


def _compared(tools: ffmpeg.Tools, chunk: Chunk, path: Path, settings: Settings, frames: int | None,
              timeout: float, comparisons: Comparisons | None, source_frames: int | None = None) -> ffmpeg.Comparison:
    """ffmpeg.compare_with_source of a result (or sample), in the job's Comparisons if given."""
    if comparisons is not None:
        return comparisons.compare(chunk, path, frames, timeout, source_frames)
    return ffmpeg.compare_with_source(tools, chunk.source, path, settings, chunk.frame_range, frames, timeout=timeout,
                                      source_frames=source_frames)


def check_timeout(chunk: Chunk) -> float:
    """How long one ffmpeg/ffprobe run checking a result may take: in proportion to the chunk,
    so a result made to stall the boss (a decoder bomb) costs it a bounded time."""
    return CHECK_FIXED_SECONDS + CHECK_SECONDS_PER_FRAME * chunk.frames


def packet_oddity(chunk: Chunk, packets: list[ffmpeg.Packet], settings: Settings) -> str | None:
    """What looks odd in a result's packets, worth decoding it in full for (None: nothing).
    ChunkError for what rejects it outright."""
    if not packets or not packets[0].key:
        raise ChunkError(f"{chunk.name}: does not start with a keyframe")
    span = max(p.pts for p in packets) - min(p.pts for p in packets)
    if chunk.span is not None and settings.fps is None and abs(span - chunk.span) > SPAN_TOLERANCE:
        raise ChunkError(f"{chunk.name}: frames span {span:.3f}s, the source's {chunk.span:.3f}s")
    if settings.fps is None and len(packets) != chunk.frames:
        return f"{len(packets)} packets for {chunk.frames} frames"
    if any(p.size == 0 for p in packets):
        return "an empty packet"
    dts = [p.dts for p in packets if p.dts_known]
    if any(b <= a for a, b in zip(dts, dts[1:])):
        return "decode timestamps do not rise"
    return None


def verify_output(tools: ffmpeg.Tools, info: media.MediaInfo, path: Path, settings: Settings,
                  expected: int, borders: Sequence[float] = (),
                  on_progress: Callable[[float, float], None] | None = None) -> dict[str, Any]:
    """The checks a user would make with ffprobe; a TranscoderError if any fails.

    `expected` is the input's frame count (decoded frames, which differ from packets for
    field-coded video); `borders` where chunks meet, seconds from the video's start. Counts,
    durations, streams and the A/V end come from the packets; the video is decoded only where
    chunks begin (decode_spans_for; one border was decoded across by check_across); the audio was
    decoded in full before the mux (join.AudioJob), and is a stream copy here. on_progress(seconds
    read, seconds in all): how far the read of its packets is (a film's takes seconds)."""
    chunks = len(borders) + 1
    read = None if on_progress is None else lambda pts: on_progress(max(0.0, pts), info.video_duration)
    probed = ffmpeg.probe_with_packets(tools, path, whole=(0,), on_progress=read)   # the join maps the video first
    out = media.inspect(tools, path, probed)
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
        ffmpeg.decode_spans(tools, path, decode_spans_for(out, borders))
    except FFmpegError as exc:
        problems.append(exc.last_line or str(exc))
    av_offset = src_offset = 0.0
    if out.of_kind("audio") and info.of_kind("audio"):
        # where the first audio track ends against where the video ends, in both files
        audio_packets = probed[1].get(out.of_kind("audio")[0].index, [])
        av_offset = (ffmpeg.packets_end(audio_packets) - (out.video_start + out.video_duration)) * 1000
        assert info.audio_end is not None       # inspect() sets it for every input with audio
        src_offset = (info.audio_end - (info.video_start + info.video_duration)) * 1000
        # an audio encoder ends on a whole frame of its own (AAC: 1024 samples, 64 ms at 16 kHz)
        if abs(av_offset - src_offset) > AV_SYNC_TOLERANCE_MS + 1000 * audio_frame(audio_packets):
            problems.append(f"audio ends {av_offset:+.0f} ms from the video's end, the input's {src_offset:+.0f} ms")
    if problems:
        raise TranscoderError(f"output check failed: {'; '.join(problems)}")
    return {"frames": out.frames, "video_duration": round(out.video_duration, 6),
            "input_frames": expected, "input_video_duration": round(info.video_duration, 6),
            "audio_streams": len(out.of_kind("audio")), "av_offset_ms": round(av_offset, 1),
            "input_av_offset_ms": round(src_offset, 1),
            "input_streams": [s.label for s in info.streams], "streams": [s.label for s in out.streams]}


BACKGROUND_NICENESS = 10  # checks that may take their time while workers encode
BORDER_FRAMES_AFTER = 4   # frames decoded from each chunk's first in the output (10 took 0.16 CPU-s
                          # for two at 720p, 4 take 0.10: the parameter sets show at the first)


def decode_spans_for(out: media.MediaInfo, borders: Sequence[float]) -> list[tuple[float, float]]:
    """Time spans of the output to decode: the first frames of the last chunk and of one other
    drawn at random (a chunk whose frames do not decode with the output's parameter sets shows
    there; every chunk comes from one ffmpeg build with one set of settings, so a sample stands
    for all). Not the first chunk's, unless it is the only one: the output's parameter sets are
    its own, and its check (check_result) decoded its first frames already. Decoding straight across a border is check_across(), run on two
    chunks while the others are still being encoded."""
    frame = 1.0 / (out.frame_rate or 25.0)
    start = out.video_start
    inner = sorted(borders)[:-1]
    sample = sorted({*sorted(borders)[-1:], *([random.SystemRandom().choice(inner)] if inner else [])}) or [0.0]
    # half a frame in: ffprobe seeks to the keyframe at or before, which is the chunk's first frame
    return [(start + b + frame / 2, start + b + BORDER_FRAMES_AFTER * frame) for b in sample]


def check_across(tools: ffmpeg.Tools, first: Chunk, second: Chunk, work: Path, frame_rate: float) -> None:
    """Decode two adjacent verified chunks joined as the output will join them, the first whole
    (a chunk written by a worker may have no seek index) and the second's first frames: a
    decoder that cannot run on from one chunk into the next (x265 picture order counts repeating
    across a border) fails here, long before the join. FFmpegError if it does; one border stands
    for all, since every chunk is encoded alike."""
    assert first.result is not None and second.result is not None
    listing = work / f"across_{first.index:05d}.ffconcat"
    listing.write_text(ffmpeg.concat_list([first.result.name, second.result.name], [second.start - first.start]),
                       encoding="utf-8")
    frame = 1.0 / (frame_rate or 25.0)
    border = second.start - first.start
    try:
        ffmpeg.decode_spans(tools, listing, [(0.0, border + BORDER_FRAMES_AFTER * frame)], concat=True,
                            nice=BACKGROUND_NICENESS)
    finally:
        listing.unlink(missing_ok=True)


def audio_frame(packets: list[ffmpeg.Packet]) -> float:
    """An audio stream's typical packet duration, in seconds (0 when it has none)."""
    durations = sorted(p.duration for p in packets if p.duration > 0)
    return durations[len(durations) // 2] if durations else 0.0
