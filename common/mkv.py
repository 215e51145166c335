"""Read a video result's packets straight from its Matroska blocks, without starting ffprobe.

The boss checks every result's packets (count, keyframe first, timestamps, sizes). An ffprobe
start costs about 0.1 CPU-second here (Debian's build loads some 200 libraries), as much as the
rest of a result's checks; this reader costs a few milliseconds. It knows only what ffmpeg's
Matroska muxer writes for one video track, reads element headers and skips payloads, and bounds
everything it reads; anything else (several tracks, lacing, content encodings, damaged sizes) is
`Unsupported`, and the caller falls back to ffprobe, which is never less strict.
"""
from __future__ import annotations

import io
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterator

from ffdt.common.errors import TranscoderError

# element IDs (Matroska spec), as read with their length marker
EBML = 0x1A45DFA3
SEGMENT = 0x18538067
INFO, TIMESTAMP_SCALE = 0x1549A966, 0x2AD7B1
TRACKS, TRACK_ENTRY = 0x1654AE6B, 0xAE
TRACK_NUMBER, TRACK_TYPE, CODEC_ID, DEFAULT_DURATION, CONTENT_ENCODINGS = 0xD7, 0x83, 0x86, 0x23E383, 0x6D80
CLUSTER, CLUSTER_TIMESTAMP = 0x1F43B675, 0xE7
SIMPLE_BLOCK, BLOCK_GROUP, BLOCK, BLOCK_DURATION, REFERENCE_BLOCK = 0xA3, 0xA0, 0xA1, 0x9B, 0xFB
CRC32, VOID = 0xBF, 0xEC
UNKNOWN_SIZE = -1
VIDEO_TRACK = 1

MAX_ELEMENT = 1 << 30      # no element of a result is bigger (a chunk result is at most MAX_CHUNK_BYTES)
MAX_HEADER_ELEMENT = 1 << 20   # Info, Tracks, a track entry, a block group: read whole, so kept small
MAX_BLOCKS = 1 << 20


class Unsupported(TranscoderError):
    """Not a file this reader knows: check it with ffprobe instead."""


@dataclass(frozen=True)
class Block:
    pts: float            # seconds
    duration: float       # seconds (0 when the file gives none)
    key: bool
    size: int             # payload bytes


def _vint(f: BinaryIO, *, is_id: bool) -> int:
    """One EBML variable-length integer: an element ID (marker kept) or a size (marker dropped;
    all ones means unknown)."""
    first = f.read(1)
    if not first:
        raise EOFError
    b = first[0]
    length = 1
    while length <= 8 and not b & (0x80 >> (length - 1)):
        length += 1
    if length > (4 if is_id else 8):
        raise Unsupported("bad EBML length marker")
    rest = f.read(length - 1)
    if len(rest) != length - 1:
        raise Unsupported("truncated element header")
    value = b if is_id else b & (0xFF >> length)
    for c in rest:
        value = (value << 8) | c
    if not is_id and value == (1 << (7 * length)) - 1:
        return UNKNOWN_SIZE
    return value


def _elements(f: BinaryIO, end: int) -> Iterator[tuple[int, int, int]]:
    """(id, payload start, payload size) of each element from the current position up to `end`."""
    while f.tell() < end:
        try:
            element = _vint(f, is_id=True)
        except EOFError:
            return
        try:
            size = _vint(f, is_id=False)
        except EOFError:
            raise Unsupported("the file ends inside an element header") from None
        start = f.tell()
        if size == UNKNOWN_SIZE:
            if element not in (SEGMENT, CLUSTER):
                raise Unsupported("an element of unknown size")
            size = end - start
        if size > MAX_ELEMENT or start + size > end:
            raise Unsupported("an element runs past its parent")
        yield element, start, size
        f.seek(start + size)          # past it, however much of it the caller read


def _uint(data: bytes) -> int:
    if len(data) > 8:
        raise Unsupported("integer too long")
    return int.from_bytes(data, "big")


def _children(data: bytes) -> Iterator[tuple[int, bytes]]:
    """Child elements of a small element already read whole."""
    f = io.BytesIO(data)
    for element, start, size in _elements(f, len(data)):
        yield element, data[start:start + size]


def _read(f: BinaryIO, start: int, size: int) -> bytes:
    if size > MAX_HEADER_ELEMENT:
        raise Unsupported("a header element too big")
    f.seek(start)
    data = f.read(size)
    if len(data) != size:
        raise Unsupported("truncated")
    return data


def _block_header(f: BinaryIO, start: int, size: int) -> tuple[int, int, int, int]:
    """(track, relative timestamp, flags, header length) of a (Simple)Block."""
    f.seek(start)
    head = f.read(min(size, 12))
    if not head or not head[0] & 0x80:      # only one-byte track numbers: ours is track 1
        raise Unsupported("a block of an unexpected track")
    if len(head) < 4:
        raise Unsupported("a block too short")
    (rel,) = struct.unpack(">h", head[1:3])
    return head[0] & 0x7F, rel, head[3], 4


# the CodecID ffmpeg's Matroska muxer writes, by codec as ffprobe names it
CODEC_IDS = {"h264": "V_MPEG4/ISO/AVC", "hevc": "V_MPEGH/ISO/HEVC", "vp8": "V_VP8", "vp9": "V_VP9",
             "av1": "V_AV1", "mpeg4": "V_MPEG4/ISO/ASP"}


def read_video_blocks(path: Path, codec: str | None = None) -> list[Block]:
    """The video packets of a one-track Matroska file, in file order, as ffprobe lists them
    (pts, duration, keyframe flag, size). Unsupported for anything else, and with `codec` (as
    ffprobe names it, one of CODEC_IDS) for a track of another codec."""
    with path.open("rb") as f:
        end = os.fstat(f.fileno()).st_size
        scale, default_duration, tracks = 1_000_000, 0, 0
        blocks: list[Block] = []
        top = _elements(f, end)
        first = next(top, None)
        if first is None or first[0] != EBML:
            raise Unsupported("not an EBML file")
        segment = next(top, None)
        if segment is None or segment[0] != SEGMENT:
            raise Unsupported("no Segment after the EBML header")
        f.seek(segment[1])
        for element, start, size in _elements(f, segment[1] + segment[2]):
            if element == INFO:
                scale = _timestamp_scale(_read(f, start, size), scale)
            elif element == TRACKS:
                for child, data in _children(_read(f, start, size)):
                    if child == TRACK_ENTRY:
                        tracks += 1
                        default_duration = _video_entry(data, codec)
            elif element == CLUSTER:
                if tracks != 1:
                    raise Unsupported("blocks before a single video track")
                _cluster(f, start, start + size, scale, default_duration, blocks)
            if len(blocks) > MAX_BLOCKS:
                raise Unsupported("too many blocks")
        if tracks != 1:
            raise Unsupported("not a single video track")
        return blocks


def _timestamp_scale(info: bytes, scale: int) -> int:
    """The Info element's timestamp scale (nanoseconds a tick), else `scale`."""
    for child, data in _children(info):
        if child == TIMESTAMP_SCALE:
            scale = _uint(data)
            if not 1 <= scale <= 1_000_000_000:   # a nanosecond to a second a tick
                raise Unsupported(f"timestamp scale {scale}")
    return scale


def _video_entry(entry: bytes, codec: str | None = None) -> int:
    """The default duration of a track entry that is the video track 1, with no content
    encodings (and of `codec`, if given); Unsupported for any other."""
    fields = dict(_children(entry))
    if CONTENT_ENCODINGS in fields:
        raise Unsupported("content encodings")
    if _uint(fields.get(TRACK_NUMBER, b"")) != VIDEO_TRACK or _uint(fields.get(TRACK_TYPE, b"")) != 1:
        raise Unsupported("not a single video track")
    if codec is not None and fields.get(CODEC_ID, b"").rstrip(b"\0") != CODEC_IDS.get(codec, "").encode():
        raise Unsupported(f"not a {codec} track")
    return _uint(fields.get(DEFAULT_DURATION, b""))


def _cluster(f: BinaryIO, start: int, end: int, scale: int, default_duration: int, blocks: list[Block]) -> None:
    base: int | None = None
    f.seek(start)
    for element, at, size in _elements(f, end):
        if element == CLUSTER_TIMESTAMP:
            base = _uint(_read(f, at, size))
        elif element in (SIMPLE_BLOCK, BLOCK_GROUP):
            if base is None:
                raise Unsupported("a block before its cluster's timestamp")
            if element == SIMPLE_BLOCK:
                track, rel, flags, head = _block_header(f, at, size)
                payload, key, duration = size - head, bool(flags & 0x80), default_duration
            else:
                group = dict(_children(_read(f, at, size)))
                if BLOCK not in group:
                    raise Unsupported("a block group without a block")
                data = group[BLOCK]
                track, rel, flags, head = _block_header(io.BytesIO(data), 0, len(data))
                payload, key = len(data) - head, REFERENCE_BLOCK not in group
                duration = _uint(group[BLOCK_DURATION]) * scale if BLOCK_DURATION in group else default_duration
            if track != VIDEO_TRACK or flags & 0x06:
                raise Unsupported("laced blocks or another track")
            # ffprobe gives durations in the file's timestamp units, rounded to them
            blocks.append(Block((base + rel) * scale / 1e9, round(duration / scale) * scale / 1e9, key, payload))
        elif element == CLUSTER:
            raise Unsupported("a cluster inside a cluster")


@dataclass(frozen=True)
class Layout:
    """What a decoder reads of a one-video-track Matroska file to show its first frames: the track
    entries and the complete clusters, with the blocks in each. ffmpeg's muxer writes a cluster
    whole once it closes and never touches it again; of the header, it rewrites at the end the
    segment size, seek head, duration, tags and the CRC-32 of Tracks, but not the track entries.
    So a copy of the start of a result taken while the encoder still runs (a sample) holds the
    same track entries and the same bytes in its clusters as the finished result."""
    tracks: bytes                            # the payload of the one TrackEntry
    clusters: tuple[tuple[int, int], ...]    # (start, end) in the file of each complete cluster
    blocks: tuple[int, ...]                  # the blocks in each of them

    def prefix(self, at_least: int) -> int | None:
        """Bytes from the file's start to the end of the first clusters holding at least
        `at_least` blocks (None if all of them hold fewer)."""
        total = 0
        for (_, end), count in zip(self.clusters, self.blocks):
            total += count
            if total >= at_least:
                return end
        return None


def read_layout(path: Path, enough: int | None = None) -> Layout:
    """The layout of a file read_video_blocks knows, also of one still being written: a cluster
    cut off by the end of the file, and whatever follows it, is left out; with `enough`, the
    clusters after those holding that many blocks too. Unsupported otherwise."""
    with path.open("rb") as f:
        end = os.fstat(f.fileno()).st_size
        top = _elements(f, end)
        first, segment = next(top, None), None
        if first is not None and first[0] == EBML:
            f.seek(first[1] + first[2])
            try:
                element, size = _vint(f, is_id=True), _vint(f, is_id=False)
            except EOFError:
                raise Unsupported("no Segment after the EBML header") from None
            if element == SEGMENT:
                segment = f.tell(), end if size == UNKNOWN_SIZE else min(end, f.tell() + size)
        if segment is None:
            raise Unsupported("not a Matroska file")
        scale, default_duration, tracks = 1_000_000, 0, None
        clusters: list[tuple[int, int]] = []
        blocks: list[int] = []
        pos, stop = segment
        while pos < stop:
            f.seek(pos)
            try:
                element, size = _vint(f, is_id=True), _vint(f, is_id=False)
            except (EOFError, Unsupported):
                break                                  # a header cut off: the file is still growing
            start = f.tell()
            if size == UNKNOWN_SIZE or start + size > stop:
                break                                  # an element not written whole yet
            if size > MAX_ELEMENT:
                raise Unsupported("an element too big")
            if element == INFO:
                scale = _timestamp_scale(_read(f, start, size), scale)
            elif element == TRACKS:
                if tracks is not None:
                    raise Unsupported("a second Tracks element")     # (ffmpeg reads the first)
                entries = [(c, d) for c, d in _children(_read(f, start, size)) if c not in (CRC32, VOID)]
                if [c for c, _ in entries] != [TRACK_ENTRY]:
                    raise Unsupported("not a single video track")
                default_duration = _video_entry(entries[0][1])
                tracks = entries[0][1]
            elif element == CLUSTER:
                if tracks is None:
                    raise Unsupported("a cluster before the track entries")
                found: list[Block] = []
                _cluster(f, start, start + size, scale, default_duration, found)
                clusters.append((pos, start + size))
                blocks.append(len(found))
                if sum(blocks) > MAX_BLOCKS:
                    raise Unsupported("too many blocks")
                if enough is not None and sum(blocks) >= enough:
                    break
            pos = start + size
        if tracks is None:
            raise Unsupported("no track entries")
        return Layout(tracks, tuple(clusters), tuple(blocks))


def same_start(sample: Path, result: Path) -> int:
    """How many blocks of `result` a decoder reads exactly as in `sample` (0 if none): the track
    entries are the same, and the sample's clusters are, byte for byte, the result's first ones.
    Unsupported if either is not a file read_layout knows."""
    a, b = read_layout(sample), read_layout(result)
    n = len(a.clusters)
    if not n or a.tracks != b.tracks or a.clusters != b.clusters[:n]:
        return 0
    start, end = a.clusters[0][0], a.clusters[-1][1]
    with sample.open("rb") as fa, result.open("rb") as fb:
        fa.seek(start)
        fb.seek(start)
        left = end - start
        while left > 0:
            piece = min(left, 1 << 20)
            if fa.read(piece) != fb.read(piece):
                return 0
            left -= piece
    return sum(a.blocks)
