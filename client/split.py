"""Split: plan the chunks and cut the input into them (stream copy), with each chunk's manifest.

Planning is pure (plan_cuts, split_piece, gop_spans: unit-tested without ffmpeg); Splitter runs
the segment muxer, counts each piece's frames and hashes what workers will be sent.
"""
from __future__ import annotations

import bisect
import contextlib
import logging
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ffdt.client import media
from ffdt.client.scheduler import Chunk, Manifest
from ffdt.common import ffmpeg, mkv
from ffdt.common.config import FFMPEG_TOOL_TIMEOUT
from ffdt.common.errors import FFmpegError, TranscoderError
from ffdt.common.settings import Settings
from ffdt.common.transfer import sha256_file

log = logging.getLogger("boss")

ONE_FRAME_PER_PACKET = {"h264", "hevc", "vp8", "vp9", "av1"}   # when the first chunk confirms it
CUT_TOLERANCE = 0.0015     # a segment list prints times with 6 decimals; a cut lands on a keyframe's time
PREFIX_PACKETS = 8         # packets decoded from a keyframe to confirm it (intra refresh recovers over more)


def plan_cuts(keyframes: list[float], start: float, end: float, target: float) -> list[float]:
    """Keyframe timestamps to cut at so chunks last about `target` seconds.

    Times are relative to `start` (ffmpeg shifts an input to begin at 0 before muxing). A last
    chunk shorter than half the target is merged into the one before it.
    """
    cuts: list[float] = []
    last = 0.0
    for t in sorted(set(k - start for k in keyframes)):
        if t - last >= target and end - start - t >= 0.5 * target:
            cuts.append(t)
            last = t
    return cuts


def split_piece(frames: int, seconds: float, target: float) -> list[tuple[int, int]]:
    """(skip, count) frame ranges cutting one keyframe-to-keyframe piece into chunks of about
    `target` seconds; a piece not much longer than the target stays whole."""
    parts = max(1, round(seconds / target)) if seconds > 1.5 * target else 1
    parts = min(parts, frames)
    bounds = [frames * k // parts for k in range(parts + 1)]
    return [(a, b - a) for a, b in zip(bounds, bounds[1:])]


def shown_ranges(ranges: list[tuple[int, int]], first: int, end: int) -> list[tuple[int, int]]:
    """The (skip, count) frame ranges cut to the frames [first, end) of their piece: those an
    edit list shows."""
    cut = [(max(skip, first), min(skip + count, end) - max(skip, first)) for skip, count in ranges]
    return [(skip, count) for skip, count in cut if count > 0]


@dataclass(frozen=True)
class Span:
    """The packets a frame-range chunk needs from its piece, positions in decode order."""
    first: int      # a keyframe: decoding starts here
    end: int        # one past the last packet: a keyframe's position, or the piece's end
    skip: int       # decoded frames before the chunk's own


def gop_spans(pts: list[float], key: list[bool], ranges: list[tuple[int, int]], lead: int = 0) -> list[Span]:
    """For each (skip, count) frame range of one piece (packets in decode order, one frame each),
    the whole GOPs it needs: from the last keyframe shown at least `lead` frames before its first
    frame (the encoder's warm-up; else the piece's start) to the keyframe after the last packet it
    shows.

    A keyframe qualifies when nothing before it in the file is shown after it. `skip` counts the
    frames shown from that keyframe up to the range. Pictures stored after the keyframe but shown
    before it are left out: a decoder drops them when they need the GOP before (open GOPs), but
    shows them when they do not (HEVC RADL, closed-GOP MPEG-2), so the boss counts those spans'
    frames by decoding (Job.exact_skip).
    """
    order = sorted(range(len(pts)), key=pts.__getitem__)        # display index -> file position
    shown_before, highest = [], float("-inf")
    for t in pts:                                                # highest pts before each position
        shown_before.append(highest)
        highest = max(highest, t)
    keys = [i for i, k in enumerate(key) if k]
    # valid starts show everything after them later, so their timestamps rise with their position
    starts = [i for i in keys if shown_before[i] < pts[i]] or [0]
    start_pts = [pts[i] for i in starts]
    spans = []
    for skip, count in ranges:
        first_pts = pts[order[skip]]
        if skip >= lead:
            first = starts[max(0, bisect.bisect_right(start_pts, pts[order[skip - lead]]) - 1)]
        else:
            first = starts[0]
        last = max(order[skip:skip + count])
        after = bisect.bisect_right(keys, last)
        end = keys[after] if after < len(keys) else len(pts)
        before = sum(1 for i in range(first, end) if pts[first] <= pts[i] < first_pts)
        spans.append(Span(first, end, before))
    return spans


CHUNKS_PER_WORKER = 3      # at most: rounds of chunks each worker takes
PREFERRED_MIN_CHUNK = 10.0  # seconds a chunk should last, where the input allows a round per worker
MIN_AUTO_CHUNK = 5.0       # seconds; never shorter
MAX_AUTO_CHUNK = 120.0
DENSE_PIXEL_BIT_RATE = 3.0  # bits/s a pixel: a source this dense may have MIN_AUTO_CHUNK chunks in rounds
MIN_SPARSE_CHUNK_FRAMES = 150  # frames a chunk of a sparse source holds at least (see auto_chunk_seconds)


def auto_chunk_seconds(duration: float, workers: int, pixel_bit_rate: float = 0.0, frames: int = 0) -> float:
    """A whole number of rounds, so equal workers finish together: as many rounds of one chunk per
    worker (up to three) as keep chunks long enough, one round if even that is shorter (then
    down to 5 s), at most 120 s a chunk.

    Long enough is 10 s, or 5 s for a source of at least 3 bits a second per pixel. Every chunk
    starts with a keyframe and fresh rate control: on static, sparse video (a screen, a still
    camera, a webcam: 0.4-1.3 bits/s a pixel among the shared clips) the encoder spends most of
    its bits on keyframes, and with 5 s chunks two shared clips broke the parity bounds (+0.32 dB,
    +6.7 % size); at 10 s every clip stays within them (docs/parity.md). Where the source carries
    many bits for its picture (motion, detail, camera noise: phones record 4-8, the bench's camera
    input 78) an extra keyframe is a small share, and several rounds balance the workers: one that
    started late or runs slow takes fewer chunks. Uneven workers are also balanced by the longest
    chunks going first, prefetching, and an idle worker taking over a chunk another holds but has
    not started, or copying a straggler's.

    A sparse source's chunks also hold at least MIN_SPARSE_CHUNK_FRAMES of its `frames`, even if
    that makes fewer chunks than workers: at a webcam's 6.6 frames a second, one round of 8.5 s
    chunks for six workers held 56 frames each, and the keyframe each starts with cost +9.6 %
    size (docs/parity.md); the chunks with 116 and more frames stayed within the bounds.
    """
    w = max(1, workers)
    dense = pixel_bit_rate >= DENSE_PIXEL_BIT_RATE
    floor = MIN_AUTO_CHUNK if dense else PREFERRED_MIN_CHUNK
    rounds = max(1, min(CHUNKS_PER_WORKER, int(duration // (w * floor))))
    seconds = max(MIN_AUTO_CHUNK, duration / (w * rounds))
    if not dense and frames > 0 and duration > 0 and seconds * frames / duration < MIN_SPARSE_CHUNK_FRAMES:
        least = MIN_SPARSE_CHUNK_FRAMES * duration / frames
        seconds = max(seconds, duration / max(1, int(duration // least)))     # equal chunks, fewer
    return min(MAX_AUTO_CHUNK, seconds)


class Splitter:
    """Cuts one input into chunk files in `work`/src and takes each chunk's manifest."""

    def __init__(self, tools: ffmpeg.Tools, info: media.MediaInfo, settings: Settings, work: Path,
                 chunk_seconds: float | None, on_progress: Callable[[float, float], None] | None = None) -> None:
        """on_progress(frames cut, frames in all): how far a split that hands out nothing until
        it is done has got (a streaming split shows its chunks as they come)."""
        self.tools, self.info, self.settings, self.work = tools, info, settings, work
        self.input = info.path
        self.chunk_seconds = chunk_seconds
        self.on_progress = on_progress
        self.expected_frames = info.frames      # decoded frames, once split() has counted them

    def run(self, workers: int, emit: Callable[[list[Chunk], bool], None]) -> list[Chunk]:
        """Split the input, handing chunks to `emit(chunks, complete)` as soon as each is ready:
        while the segment muxer is still cutting the rest when the plan allows it
        (split_streaming), else all at once when the split is done."""
        chunks = self.split_streaming(workers, emit)
        if chunks is None:
            chunks = self.split(workers)
            emit(chunks, True)
        return chunks

    def target_seconds(self, workers: int) -> float:
        """How long a chunk should be: --chunk-seconds, else the boss's own choice."""
        info = self.info
        return self.chunk_seconds or auto_chunk_seconds(info.video_duration, workers, info.pixel_bit_rate, info.frames)

    def streaming_plan(self, workers: int) -> tuple[list[float], float] | None:
        """The cut times, if this input can be split while its chunks are handed out: a codec
        whose packets are frames, and every piece a whole chunk (none cut by frame range)."""
        info = self.info
        if info.video.codec not in ONE_FRAME_PER_PACKET or info.hidden_lead or info.hidden_tail:
            return None     # (frames an edit list hides: the first and last chunks are frame ranges)
        target = self.target_seconds(workers)
        cuts = plan_cuts(info.keyframes, info.start, info.video_start + info.video_duration, target)
        bounds = self.planned_bounds(cuts)
        for a, b in zip(bounds, bounds[1:]):
            pts = sorted(info.pts[a:b])
            if len(split_piece(b - a, pts[-1] - pts[0] + 1 / info.frame_rate, target)) > 1:
                return None
        return cuts, target

    def planned_bounds(self, cuts: list[float]) -> list[int]:
        """Where each planned piece starts in info.pts (packet positions), and the end."""
        info = self.info
        position = dict(zip((k - info.start for k in info.keyframes), info.keyframe_positions))
        return [0, *(position[t] for t in cuts), info.frames]

    def split_streaming(self, workers: int, emit: Callable[[list[Chunk], bool], None]) -> list[Chunk] | None:
        """Cut with the segment muxer and emit each piece's chunk as the muxer finishes it; None
        (nothing emitted, nothing left behind) when the plan does not allow it or the first two
        pieces show that packets are not frames here (then split() does it all)."""
        plan = self.streaming_plan(workers)
        if plan is None:
            return None
        cuts, target = plan
        bounds = self.planned_bounds(cuts)
        src_dir = self.work / "src"
        src_dir.mkdir()
        chunks: list[Chunk] = []
        emitted = False                  # chunks have gone out: no falling back to split() now
        position = 0                     # where the next piece starts, in info.pts
        cmd = ffmpeg.segment_cmd(self.tools, self.input, src_dir / "piece_%05d.mkv", cuts, list_on_stdout=True,
                                 dts_shift=self.info.dts_shift)
        checking = ThreadPoolExecutor(max_workers=1, thread_name_prefix="entry-check")
        # on the input, beside the segment muxer: the first two pieces' keyframes are entry points
        confirmed = checking.submit(self._entry_points_confirmed, [0.0, *cuts[:1]])
        try:
            with ffmpeg.run_lines(cmd, timeout=FFMPEG_TOOL_TIMEOUT) as lines:
                for i, line in enumerate(lines):
                    path = src_dir / f"piece_{i:05d}.mkv"
                    end = _csv_end(line)
                    # the piece ends at the next planned cut, the last one at the video's end
                    at_cut = i < len(cuts) and end is not None and abs(end - cuts[i]) <= CUT_TOLERANCE
                    if not (at_cut or i == len(cuts)):
                        if not emitted:
                            raise _NotStreamable()   # the muxer cut elsewhere: plan it all after the cut
                        log.warning("%s: the segment muxer did not cut where planned; counting its packets",
                                    path.name)
                    count = bounds[i + 1] - position if at_cut else packets_in(self.tools, path)
                    chunks.append(self._whole_chunk(len(chunks), path, position, count))
                    log.debug("%s cut: %d packets", path.name, count)
                    position += count
                    if not emitted and i < len(cuts):   # (a single piece waits for the muxer's end)
                        if not confirmed.result():      # the first two pieces' keyframes decode
                            raise _NotStreamable()
                        emitted = True
                    if emitted:
                        emit(chunks[-1:], False)
        except _NotStreamable:
            shutil.rmtree(src_dir)
            return None
        finally:
            checking.shutdown(wait=True)
        if len(chunks) == 1:             # a single piece
            if not confirmed.result():
                shutil.rmtree(src_dir)
                return None
            emit(chunks, False)
        self.piece_total_check([c.source for c in chunks])
        log.info("split into %d chunk%s of about %.1fs (handed out while cutting)", len(chunks),
                 "s" if len(chunks) > 1 else "", target)
        emit([], True)
        return chunks

    def _whole_chunk(self, index: int, path: Path, position: int, count: int) -> Chunk:
        """The manifest of a chunk that is a whole piece: packets [position, position+count)."""
        info = self.info
        if count < 1 or position + count > info.frames:
            raise TranscoderError(f"splitting went wrong: piece {index} holds {count} packets at {position} "
                                  f"of {info.frames}")
        pts = sorted(info.pts[position:position + count])
        return Chunk(Manifest(index=index, source=path, size=path.stat().st_size, sha256=sha256_file(path),
                              frames=count, start=pts[0] - info.video_start, span=pts[-1] - pts[0]))

    def _entry_points_confirmed(self, starts: list[float]) -> bool:
        """The first PREFIX_PACKETS packets from each of these keyframes (seconds from the input's
        start) decode to a frame each: packets are frames (not fields) and a decoder can start
        there (not an intra-refresh recovery point, which shows nothing until it has recovered).
        Known without decoding for an MP4 whose sync samples are all IDR pictures of a
        progressive H.264 stream (media.MediaInfo.idr_keyframes): on a quarter of a core this
        decode, beside the segment muxer, delayed the first chunk by about half a second."""
        if self.info.idr_keyframes:
            return True       # IDR pictures of a progressive stream, as the file's tables say
        shown = ffmpeg.count_frames_at(self.tools, self.input, [self.info.start + at for at in starts],
                                       packets=PREFIX_PACKETS)
        if any(n < PREFIX_PACKETS for n in shown):
            log.debug("%d packets from %s decode to %s frames: splitting it all first", PREFIX_PACKETS, starts, shown)
            return False
        return True

    def piece_total_check(self, files: list[Path]) -> None:
        """Together the pieces hold every packet of the input."""
        total = self.total_packets(files)
        if total != self.info.frames:
            raise TranscoderError(f"splitting lost frames: chunks hold {total}, the input has {self.info.frames}")

    def total_packets(self, files: list[Path]) -> int:
        """Video packets in all these pieces (beside each other in src/): read from their
        Matroska blocks, else in one ffprobe run (one per piece took 2 minutes for 1,154 pieces)."""
        with contextlib.suppress(mkv.Unsupported):
            return sum(len(mkv.read_video_blocks(f)) for f in files)
        listing = files[0].parent / "pieces.ffconcat"
        listing.write_text(ffmpeg.concat_list([f.name for f in files]), encoding="utf-8")
        try:
            return ffmpeg.count_packets(self.tools, listing, concat=True)
        finally:
            listing.unlink()

    def split(self, workers: int, entry_points: bool = True) -> list[Chunk]:
        """Cut the video at keyframes into chunk files and take each one's manifest.

        entry_points=False: the keyframes after the first are not places a decoder can start
        (x264's intra refresh flags its recovery points as keyframes), so every chunk decodes
        from the first."""
        info = self.info
        target = self.target_seconds(workers)
        cuts = plan_cuts(info.keyframes, info.start, info.video_start + info.video_duration, target) \
            if entry_points else []
        key = info.key if entry_points else [i == 0 for i in range(info.frames)]
        src_dir = self.work / "src"
        src_dir.mkdir()
        ffmpeg.run_counting(ffmpeg.segment_cmd(self.tools, self.input, src_dir / "piece_%05d.mkv", cuts,
                                               dts_shift=info.dts_shift),
                            info.frames, self.on_progress, timeout=FFMPEG_TOOL_TIMEOUT)
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
            ranges = split_piece(frames[i], pts[-1] - pts[0] + 1 / info.frame_rate, target) \
                if frames[i] == packets[i] else [(0, frames[i])]
            hidden = (info.hidden_lead if i == 0 else 0, info.hidden_tail if i == len(files) - 1 else 0)
            if any(hidden):
                if frames[i] != packets[i]:
                    raise TranscoderError("an edit list hiding frames of field-coded video: not supported")
                ranges = shown_ranges(ranges, hidden[0], frames[i] - hidden[1])
            if ranges == [(0, frames[i])]:
                # field-coded pieces have two packets a frame, some without a timestamp: no span
                size, sha = digest(path)
                chunks.append(Chunk(Manifest(index=len(chunks), source=path, size=size, sha256=sha,
                                             frames=frames[i], start=pts[0] - info.video_start,
                                             span=pts[-1] - pts[0] if frames[i] == packets[i] else None)))
                continue
            if len(ranges) == 1:        # a piece with frames the edit list hides, no other cut
                (skip, count), = ranges
                size, sha = digest(path)
                chunks.append(Chunk(Manifest(index=len(chunks), source=path, size=size, sha256=sha, frames=count,
                                             start=pts[skip] - info.video_start, skip=skip, whole=False,
                                             span=pts[skip + count - 1] - pts[skip])))
                continue
            log.info("no clean keyframe for %.1fs: cutting piece %d into %d chunks by frame range "
                     "(each worker decodes from the keyframe before its range)", pts[-1] - pts[0], i, len(ranges))
            piece_pts = info.pts[bounds[i]:bounds[i + 1]]
            lead = ffmpeg.WARMUP_FRAMES if self.settings.vcodec in ffmpeg.WARMUP_ENCODERS else 0
            spans = gop_spans(piece_pts, key[bounds[i]:bounds[i + 1]], ranges, lead)
            sources = self.span_files(path, piece_pts, spans)
            with ThreadPoolExecutor(max_workers=2) as pool:
                skips = list(pool.map(lambda r, sp: self.exact_skip(sources[sp], piece_pts, sp, pts[r[0]]),
                                      ranges, spans))
            for (skip, count), span, exact in zip(ranges, spans, skips):
                # no trustworthy count from the span's keyframe: decode from the piece's (clean) start
                source, skip_in_source = (sources[span], exact) if exact is not None else (path, skip)
                size, sha = digest(source)
                chunks.append(Chunk(Manifest(index=len(chunks), source=source, size=size, sha256=sha,
                                             frames=count, start=pts[skip] - info.video_start, skip=skip_in_source,
                                             whole=False, span=pts[skip + count - 1] - pts[skip])))
        self.expected_frames = sum(c.frames for c in chunks)
        log.info("split into %d chunk%s of about %.1fs", len(chunks), "s" if len(chunks) > 1 else "", target)
        return chunks

    def exact_skip(self, source: Path, piece_pts: list[float], span: Span, first_pts: float) -> int | None:
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
            times = ffmpeg.frame_times(self.tools, source, until=at + 1.0)
        except FFmpegError:
            return None
        found = next(((k, t) for k, t in enumerate(times) if t is not None and t >= at - 0.0005), None)
        if found is None or found[1] - at > 0.0015:
            log.debug("%s: decoded frames do not line up at %.3fs; using the whole piece", source.name, at)
            return None
        return found[0]

    def span_files(self, piece: Path, pts: list[float], spans: list[Span]) -> dict[Span, Path]:
        """A file for each span of a piece cut by frame range, so a worker gets the GOPs its chunk
        needs, not the whole piece. Spans overlap (a chunk's last GOP is the next one's first),
        so they are cut in rounds, each a stream copy of the piece at the ends of spans that do
        not overlap."""
        files = {span: piece for span in spans if span.first == 0 and span.end == len(pts)}
        rounds: list[list[Span]] = []
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
            ffmpeg.run(ffmpeg.segment_cmd(self.tools, piece, pattern, [pts[p] - pts[0] for p in at]),
                       timeout=FFMPEG_TOOL_TIMEOUT)
            made = sorted(piece.parent.glob(f"{piece.stem}.{n}_*.mkv"))
            edges = [0, *at, len(pts)]
            wanted = {sp: made[edges.index(sp.first)] for sp in spans_in_round} if len(made) == len(at) + 1 else {}
            # each file on its own: a cut one GOP late would move packets between two of them
            with ThreadPoolExecutor(max_workers=2) as pool:
                held = dict(zip(wanted, pool.map(lambda f: packets_in(self.tools, f), wanted.values())))
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
        confirms none was lost."""
        info = self.info
        total = self.total_packets(files) if len(files) == len(cuts) + 1 else None
        if total == info.frames:
            starts = self.planned_bounds(cuts)
            return [b - a for a, b in zip(starts, starts[1:])]
        log.debug("the segment muxer made %d pieces of %d packets for %d planned cuts: probing each piece",
                  len(files), total or -1, len(cuts))
        packets = [packets_in(self.tools, path) for path in files]
        if sum(packets) != info.frames:
            raise TranscoderError(f"splitting lost frames: chunks hold {sum(packets)}, the input has {info.frames}")
        return packets

    def count_frames(self, files: list[Path], packets: list[int]) -> list[int]:
        """Frames per chunk. Usually one per packet; but field-coded video (interlaced H.264 in
        MPEG-TS) has two packets a frame, and MPEG-4 Part 2 in AVI has placeholder packets that
        decode to nothing. Unless the codec is one we trust and the first packets of the first two
        chunks decode to a frame each (the second starts at a cut keyframe: with intra refresh it
        decodes fewer), decode every chunk to count its frames."""
        def decoded(f: Path) -> int:
            return ffmpeg.decode_check(self.tools, f, count_only=True)

        def prefix_agrees(i: int) -> bool:
            n = min(packets[i], PREFIX_PACKETS)
            return ffmpeg.count_frames_in(self.tools, files[i], packets=n) >= n

        if self.info.video.codec in ONE_FRAME_PER_PACKET and all(map(prefix_agrees, range(min(2, len(files))))):
            return packets
        log.info("frames are not one per packet in this input: counting them by decoding")
        with ThreadPoolExecutor(max_workers=2) as pool:
            return list(pool.map(decoded, files))


def packets_in(tools: ffmpeg.Tools, path: Path) -> int:
    """Video packets in a file the segment muxer wrote: its Matroska blocks (common/mkv.py, no
    process start), else as ffprobe counts them."""
    try:
        return len(mkv.read_video_blocks(path))
    except mkv.Unsupported:
        return ffmpeg.count_packets(tools, path)


class _NotStreamable(Exception):
    """The first pieces show this input must be split in full before chunks go out."""


def _csv_end(line: str) -> float | None:
    """The end time of a segment-list line "name,start,end" (None if unreadable)."""
    try:
        return float(line.strip().rsplit(",", 1)[1])
    except (IndexError, ValueError):
        return None
