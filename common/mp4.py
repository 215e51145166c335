"""Read an MP4/MOV input's packet timestamps from its sample tables, without reading its media.

The boss needs every video packet's timestamps, key flag and size before it plans the chunks.
ffprobe gives them only by demuxing the whole file, every packet's bytes with it: on a quarter
of a core that was 0.5-0.8 s for a one-minute 18 Mbit/s camera file, before anything else could
start, and minutes for a film. The sample tables in the `moov` box hold the same facts in a
few kilobytes a minute.

This reader is only trusted where its answer is ffprobe's (tests/integration/test_mp4_reader.py
compares the two on every MP4/MOV of the shared media and on files made as cameras and ffmpeg
make them): a progressive (not fragmented) file whose samples all lie inside it, one sample
description per track, H.264/HEVC video at a constant frame rate with a sync sample table, AAC
or ALAC audio, no negative composition offsets, no random-access sample groups or partial sync
samples, and at most one plain edit per track that hides no frame. One difference is kept on
purpose: the key flags are the file's sync samples, where ffprobe's H.264/HEVC parser also
flags every other I-picture (not a place a decoder can start clean). Anything else is
`Unsupported`, and the caller reads the packets with ffprobe.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterator, Sequence

from ffdt.common.errors import TranscoderError
from ffdt.common.ffmpeg import Packet

MAX_MOOV = 1 << 28          # the sample tables of a long film are a few MB; a bigger moov is not one we read
MAX_SAMPLES = 1 << 24       # per track (a day of 60 fps video is 5 M)
CONTAINERS = {b"moov", b"trak", b"mdia", b"minf", b"stbl", b"edts"}
# boxes after which ffmpeg's demuxer derives packets or key flags from more than the tables read here
REFUSED = {b"moof": "a fragmented file", b"mvex": "a fragmented file", b"cmov": "a compressed moov",
           b"stps": "partial sync samples", b"stz2": "compact sample sizes"}
KEY_GROUPS = {b"rap ", b"sync"}     # sample groups ffmpeg reads as key frames (others, as AAC's roll, it ignores)
VIDEO_CODECS = {"h264", "hevc"}
AUDIO_CODECS = {"aac", "alac"}        # (PCM: the demuxer packs a chunk of samples into each packet)


class Unsupported(TranscoderError):
    """Not a file this reader vouches for: read its packets with ffprobe instead."""


class CutShort(Unsupported):
    """The file is shorter than its own boxes or sample tables say: cut short (a copy or a
    recording that stopped). ffprobe reads what is there."""


@dataclass
class Track:
    """One `trak`: what its sample tables say (times in its media timescale)."""
    handler: bytes = b""
    timescale: int = 0
    descriptions: int = 0
    deltas: list[tuple[int, int]] | None = None     # stts: (count, delta)
    offsets: list[tuple[int, int]] | None = None    # ctts: (count, offset)
    sync: list[int] | None = None                   # stss: 1-based sample numbers
    sizes: list[int] | None = None                  # stsz
    edits: list[tuple[int, int, int]] | None = None  # elst: (segment duration in the movie timescale, media time, rate)
    file_size: int = 0                               # of the file it is in (its samples must lie inside)
    runs: list[tuple[int, int, int]] | None = None   # stsc: (first chunk, samples per chunk, description)
    chunks: list[int] | None = None                  # stco/co64: each chunk's offset in the file
    entry: bytes = b""                               # stsd's first sample entry: its type, then its payload


def _header(head: bytes, room: int) -> tuple[bytes, int, int]:
    """(type, header length, size) of the box whose header `head` begins with; `room`: the bytes
    from the box's start to its parent's end (what a size of 0, "to the end", means)."""
    if len(head) < 8:
        raise Unsupported("truncated box header")
    size, kind = struct.unpack_from(">I4s", head)
    skip = 8
    if size == 1:
        if len(head) < 16:
            raise Unsupported("truncated box header")
        (size,) = struct.unpack_from(">Q", head, 8)
        skip = 16
    elif size == 0:
        size = room
    if size < skip:
        raise Unsupported(f"a damaged {kind!r} box")
    return kind, skip, size


def _boxes(data: bytes, start: int = 0, end: int | None = None) -> Iterator[tuple[bytes, int, int]]:
    """(type, payload start, payload end) of each box in data[start:end]."""
    end = len(data) if end is None else end
    at = start
    while at + 8 <= end:
        kind, skip, size = _header(data[at:min(at + 16, end)], end - at)
        if at + size > end:
            raise Unsupported(f"a damaged {kind!r} box")
        yield kind, at + skip, at + size
        at += size


def _top_level(f: BinaryIO, length: int) -> bytes:
    """The moov box's payload, found by walking the file's top-level boxes (moov may come after
    the media data, as a camera writes it)."""
    moov = None
    at = 0
    while at + 8 <= length:
        f.seek(at)
        kind, skip, size = _header(f.read(16), length - at)
        if at + size > length:
            if kind in (b"mdat", b"moov"):
                raise CutShort(f"its {kind.decode('latin-1')!r} box runs past the end of the file")
            raise Unsupported("bytes after the last box that are not a box")   # (a recorder's padding, junk)
        if kind in REFUSED:
            raise Unsupported(REFUSED[kind])
        if kind == b"moov":
            if moov is not None:
                raise Unsupported("two moov boxes")
            if size - skip > MAX_MOOV:
                raise Unsupported("a moov box too big")
            f.seek(at + skip)
            moov = f.read(size - skip)
            if len(moov) != size - skip:
                raise Unsupported("truncated moov box")
        at += size
    if moov is None:
        raise Unsupported("no moov box")
    return moov


def _full(data: bytes, start: int) -> tuple[int, int]:
    """A full box's version, and where its fields start."""
    return data[start], start + 4


def _table(data: bytes, at: int, end: int, fmt: str, what: str) -> list[tuple[int, ...]]:
    (count,) = struct.unpack_from(">I", data, at)
    width = struct.calcsize(fmt)
    if count > MAX_SAMPLES or at + 4 + count * width > end:
        raise Unsupported(f"a damaged {what} table")
    return list(struct.iter_unpack(fmt, data[at + 4:at + 4 + count * width]))


TABLES = {b"mdhd", b"stsd", b"stts", b"ctts", b"stss", b"stsz", b"stsc", b"stco", b"co64", b"elst"}


def _track(data: bytes, start: int, end: int, file_size: int) -> Track:
    t = Track(file_size=file_size)
    seen: set[bytes] = set()
    for kind, a, b in _walk(data, start, end):
        if kind in TABLES:
            if kind in seen or (kind in (b"stco", b"co64") and seen & {b"stco", b"co64"}):
                raise Unsupported(f"two {kind.decode('latin-1')!r} boxes in a track")   # which one ffmpeg keeps is its business
            seen.add(kind)
        if kind == b"mdhd":
            version, at = _full(data, a)
            (t.timescale,) = struct.unpack_from(">I", data, at + (16 if version == 1 else 8))
        elif kind == b"hdlr" and not t.handler:    # mdia's; a QuickTime minf has a data handler's too
            t.handler = data[a + 8:a + 12]
        elif kind == b"stsd":
            (t.descriptions,) = struct.unpack_from(">I", data, a + 4)
            if t.descriptions and a + 16 <= b:
                entry, skip, size = _header(data[a + 8:a + 24], b - a - 8)
                t.entry = entry + data[a + 8 + skip:min(b, a + 8 + size)]
        elif kind == b"stts":
            t.deltas = [(c, d) for c, d in _table(data, a + 4, b, ">II", "stts")]
        elif kind == b"ctts":
            t.offsets = [(c, o) for c, o in _table(data, a + 4, b, ">Ii", "ctts")]   # ffmpeg reads them signed
        elif kind == b"stss":
            t.sync = [n for (n,) in _table(data, a + 4, b, ">I", "stss")]
        elif kind == b"stsz":
            uniform, count = struct.unpack_from(">II", data, a + 4)
            if count > MAX_SAMPLES or (not uniform and a + 12 + 4 * count > b):
                raise Unsupported("a damaged stsz table")
            t.sizes = [uniform] * count if uniform else list(struct.unpack_from(f">{count}I", data, a + 12))
        elif kind == b"stsc":
            t.runs = [(c, n, d) for c, n, d in _table(data, a + 4, b, ">III", "stsc")]
        elif kind in (b"stco", b"co64"):
            t.chunks = [o for (o,) in _table(data, a + 4, b, ">I" if kind == b"stco" else ">Q", kind.decode())]
        elif kind == b"elst":
            version, at = _full(data, a)
            fmt = ">QqhH" if version == 1 else ">IihH"
            # a rate with a fraction is not the plain 1 (the fraction is folded into the rate as 0)
            t.edits = [(d, m, r if not fraction else 0) for d, m, r, fraction in _table(data, at, b, fmt, "elst")]
        elif kind in (b"sbgp", b"sgpd") and data[a + 4:a + 8] in KEY_GROUPS:
            raise Unsupported("random-access sample groups")
        elif kind in REFUSED:
            raise Unsupported(REFUSED[kind])
    return t


def _walk(data: bytes, start: int, end: int) -> Iterator[tuple[bytes, int, int]]:
    """Every box inside data[start:end], descending into the containers this reader needs."""
    for kind, a, b in _boxes(data, start, end):
        yield kind, a, b
        if kind in CONTAINERS:
            yield from _walk(data, a, b)


def _seconds(ticks: int, timescale: int) -> float:
    """As ffprobe prints a timestamp (ts * av_q2d(time base), six decimals), read back."""
    return float(f"{ticks * (1 / timescale):.6f}")


def _rescale(value: int, to: int, frm: int) -> int:
    """value * to / frm rounded to the nearest, halves away from zero (av_rescale)."""
    return (value * to + frm // 2) // frm


def _check_data(t: Track) -> list[int]:
    """Each sample's offset in the file, once every sample's bytes are found inside it: a file
    cut short keeps its sample tables when its moov comes first, and ffprobe's read would stop
    at the cut."""
    if not t.runs or not t.chunks or t.runs[0][0] != 1 or t.sizes is None:
        raise Unsupported("a track without chunk tables")
    bounds = [first for first, _, _ in t.runs[1:]] + [len(t.chunks) + 1]
    offsets: list[int] = []
    for (first, per_chunk, _), until in zip(t.runs, bounds):
        if not first < until <= len(t.chunks) + 1:
            raise Unsupported("chunk tables that disagree")
        for chunk in range(first, until):
            if len(offsets) + per_chunk > len(t.sizes):
                raise Unsupported("chunk tables that disagree")
            at = t.chunks[chunk - 1]
            for size in t.sizes[len(offsets):len(offsets) + per_chunk]:
                offsets.append(at)
                at += size
            if at > t.file_size:
                raise CutShort("its samples run past the end of the file")
    if len(offsets) != len(t.sizes):
        raise Unsupported("chunk tables that disagree")
    return offsets


def _samples(t: Track) -> tuple[list[int], list[int], list[int]]:
    """Each sample's decode time, composition offset and duration (media timescale)."""
    if t.descriptions != 1:
        raise Unsupported("a track with several sample descriptions")
    if not t.timescale or t.deltas is None or t.sizes is None:
        raise Unsupported("a track without timing")
    if any(d >= 1 << 31 for _, d in t.deltas):
        raise Unsupported("a negative sample duration")
    count = len(t.sizes)
    if not count or sum(c for c, _ in t.deltas) != count:
        raise Unsupported("sample tables that disagree")
    offsets = [0] * count
    if t.offsets is not None:
        if sum(c for c, _ in t.offsets) != count:
            raise Unsupported("sample tables that disagree")
        if any(o < 0 for _, o in t.offsets):
            raise Unsupported("negative composition offsets")
        offsets = [o for c, o in t.offsets for _ in range(c)]
    _check_data(t)
    durations = [d for c, d in t.deltas for _ in range(c)]
    dts, now = [], 0
    for d in durations:
        dts.append(now)
        now += d
    return dts, offsets, durations


@dataclass(frozen=True)
class Edit:
    """A track's edit list, when it is at most one plain edit."""
    start: int          # media time shown first
    end: int | None     # media time the edit ends at (None: the track's end)


def _edit(t: Track, movie_timescale: int) -> Edit:
    """The track's one plain edit, if any. An empty edit first (a delay) or several edits make
    ffmpeg shift and trim timestamps in ways not reproduced here: Unsupported."""
    if not t.edits:
        return Edit(0, None)
    if len(t.edits) != 1 or t.edits[0][2] != 1 or t.edits[0][1] < 0:
        raise Unsupported("an edit list of more than one plain edit")
    span, start, _ = t.edits[0]
    if span and not movie_timescale:
        raise Unsupported("an edit list without a movie timescale")
    return Edit(start, start + _rescale(span, t.timescale, movie_timescale) if span else None)


def _video_packets(t: Track, movie_timescale: int) -> list[Packet]:
    """The track's packets in file order, as ffmpeg's demuxer gives them. Only a constant frame
    rate (one sample duration): with an edit list, ffmpeg's packet durations are not the
    table's when they vary. An edit that hides or shortens a frame is left to ffprobe."""
    if t.deltas is not None and len(t.deltas) != 1:
        raise Unsupported("a variable frame rate")
    dts, offsets, durations = _samples(t)
    edit = _edit(t, movie_timescale)
    shown = [d + o for d, o in zip(dts, offsets)]
    if min(shown) < edit.start or (edit.end is not None and max(shown) + durations[0] > edit.end):
        raise Unsupported("an edit list that hides frames")
    if t.edits and min(shown) != edit.start:
        raise Unsupported("an edit that starts before the first frame")    # ffmpeg moves the start then
    count = len(dts)
    if not t.sync:
        raise Unsupported("no sync sample table")     # ffmpeg's key flags then come from its parser
    key = [False] * count
    for n in t.sync:
        if not 1 <= n <= count:
            raise Unsupported("a sync sample out of range")
        key[n - 1] = True
    if not key[0]:
        raise Unsupported("a first sample that is not a sync sample")
    shift, scale = -edit.start, t.timescale
    return [Packet(_seconds(d + o + shift, scale), _seconds(d + shift, scale), _seconds(span, scale), k, True, s)
            for d, o, span, k, s in zip(dts, offsets, durations, key, t.sizes)]


def _audio_last(t: Track, movie_timescale: int) -> Packet:
    """The packet that ends last, as ffmpeg's demuxer gives it: an edit ending before the media
    does drops the samples after it and shortens the one it ends in."""
    dts, _, durations = _samples(t)
    edit = _edit(t, movie_timescale)
    last = len(dts) - 1
    if edit.end is not None:
        while last > 0 and dts[last] >= edit.end:
            last -= 1
    length = durations[last] if edit.end is None else max(0, min(durations[last], edit.end - dts[last]))
    at, scale = dts[last] - edit.start, t.timescale
    return Packet(_seconds(at, scale), _seconds(at, scale), _seconds(length, scale), True, True, t.sizes[last])


def packets_by_stream(path: Path, probe: dict, indices: Sequence[int],
                      last_only: Sequence[int] = (), movie: Movie | None = None) -> dict[int, list[Packet]]:
    """What ffmpeg.packets_by_stream would return for these streams of an MP4/MOV file, read
    from its sample tables. probe: ffprobe's JSON of the same file (ffmpeg.probe): its streams
    must be this file's tracks, one for one, of codecs this reader knows, with ffprobe's counts.
    movie: read_movie() of the file, already run."""
    streams = probe.get("streams", [])
    movie = movie or read_movie(path, probe)
    movie_timescale = movie.timescale
    found: dict[int, list[Packet]] = {}
    for index in indices:
        s, t = streams[index], movie.tracks[index]
        kind, codec = s.get("codec_type"), s.get("codec_name", "")
        video = kind == "video"
        if (kind, t.handler) not in (("video", b"vide"), ("audio", b"soun")) \
                or not (codec in VIDEO_CODECS if video else codec in AUDIO_CODECS):
            raise Unsupported(f"a {kind} stream of {codec or 'unknown codec'}")
        if video:
            packets = _video_packets(t, movie_timescale)
            if str(len(packets)) != str(s.get("nb_frames")):
                raise Unsupported("a packet count that is not ffprobe's")
            found[index] = [max(packets, key=lambda p: p.end)] if index in last_only else packets
        elif index in last_only:
            found[index] = [_audio_last(t, movie_timescale)]
        else:
            raise Unsupported("an audio stream's every packet (only where it ends is read here)")
    return found


@dataclass
class Movie:
    """A file's moov as read here: its tracks, one for each of ffprobe's streams."""
    tracks: list[Track]
    timescale: int


def read_movie(path: Path, probe: dict) -> Movie:
    """Read the file's moov (packets_by_stream and idr_entry_points take it, so that asking
    both reads it once). probe: as for packets_by_stream."""
    if "mov" not in probe.get("format", {}).get("format_name", "").split(","):
        raise Unsupported("not an MP4/MOV file")
    size = path.stat().st_size
    try:
        with path.open("rb") as f:
            moov = _top_level(f, size)
        movie_timescale = 0
        tracks = []
        for kind, a, b in _boxes(moov):
            if kind == b"mvhd":
                version, at = _full(moov, a)
                (movie_timescale,) = struct.unpack_from(">I", moov, at + (16 if version == 1 else 8))
            elif kind == b"trak":
                tracks.append(_track(moov, a, b, size))
            elif kind in REFUSED:
                raise Unsupported(REFUSED[kind])
    except (struct.error, IndexError):
        raise Unsupported("a truncated box") from None
    if len(tracks) != len(probe.get("streams", [])):
        raise Unsupported("tracks that are not ffprobe's streams")
    return Movie(tracks, movie_timescale)


# ---------------------------------------------------------------- H.264 entry points

VISUAL_ENTRY = 78            # a visual sample entry's fields before its boxes (ISO 14496-12)
NAL_IDR, NAL_SPS = 5, 7
HIGH_PROFILES = {100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135}   # SPS with chroma fields


def idr_entry_points(path: Path, probe: dict, index: int, movie: Movie | None = None) -> bool:
    """Whether every sync sample of this H.264 stream is an IDR picture of a progressive
    stream: a decoder starts clean at each (no intra-refresh recovery point, which x264 also
    marks as a sync sample), and each sample is one frame (no field pairs). The boss otherwise
    learns this by decoding the first frames from two keyframes (client/split.py), which on a
    quarter of a core delayed the first chunk by half a second. False for anything else: an
    `avc3` entry (parameter sets among the samples), an SPS with field coding, a sync sample
    whose first picture is not IDR; Unsupported where the file is not one this reader reads.
    movie: read_movie() of the file, already run."""
    t = (movie or read_movie(path, probe)).tracks[index]
    stream = probe["streams"][index]
    if stream.get("codec_name") != "h264" or t.handler != b"vide" or t.descriptions != 1:
        raise Unsupported("not an H.264 track")
    if t.entry[:4] != b"avc1":
        return False
    config = next((t.entry[4 + a:4 + b] for kind, a, b in _boxes(t.entry[4:], VISUAL_ENTRY) if kind == b"avcC"), None)
    try:
        length_size, sps = _avc_config(config or b"")
        if not sps or not all(_progressive(nal) for nal in sps):
            return False
        offsets = _check_data(t)
        with path.open("rb") as f:
            return bool(t.sync) and all(_first_picture(f, offsets[n - 1], t.sizes[n - 1], length_size) == NAL_IDR
                                        for n in t.sync if 1 <= n <= len(offsets))
    except (struct.error, IndexError, ValueError):
        return False


def _avc_config(config: bytes) -> tuple[int, list[bytes]]:
    """An avcC box's NAL length size and its sequence parameter sets."""
    length_size = (config[4] & 3) + 1
    count, at, sps = config[5] & 31, 6, []
    for _ in range(count):
        (size,) = struct.unpack_from(">H", config, at)
        sps.append(config[at + 2:at + 2 + size])
        at += 2 + size
    return length_size, sps


def _first_picture(f: BinaryIO, offset: int, size: int, length_size: int) -> int | None:
    """The NAL type of the first picture (slice) in a sample; None if it holds none or an SPS
    comes first (parameter sets that change in the stream: not judged here)."""
    at, end = offset, offset + size
    while at + length_size < end:
        f.seek(at)
        head = f.read(length_size + 1)
        if len(head) < length_size + 1:
            return None
        length = int.from_bytes(head[:length_size], "big")
        kind = head[length_size] & 31
        if 1 <= kind <= 5:
            return kind
        if kind == NAL_SPS:
            return None
        at += length_size + length
    return None


class _Bits:
    """Big-endian bits of a NAL's payload (emulation prevention bytes removed), Exp-Golomb codes."""

    def __init__(self, nal: bytes) -> None:
        self.data = nal[1:].replace(b"\x00\x00\x03", b"\x00\x00")
        self.at = 0

    def bit(self) -> int:
        byte = self.data[self.at >> 3]          # (an IndexError past the end: a damaged SPS)
        self.at += 1
        return (byte >> (7 - ((self.at - 1) & 7))) & 1

    def bits(self, n: int) -> int:
        value = 0
        for _ in range(n):
            value = value << 1 | self.bit()
        return value

    def ue(self) -> int:
        zeros = 0
        while not self.bit():
            zeros += 1
            if zeros > 31:
                raise ValueError("a damaged Exp-Golomb code")
        return (1 << zeros) - 1 + self.bits(zeros)

    def se(self) -> int:
        code = self.ue()
        return (code + 1) // 2 if code & 1 else -(code // 2)


def _progressive(nal: bytes) -> bool:
    """An H.264 SPS's frame_mbs_only_flag (ITU-T H.264 7.3.2.1.1): every picture a frame."""
    if not nal or nal[0] & 31 != NAL_SPS:
        return False
    r = _Bits(nal)
    profile = r.bits(8)
    r.bits(16)                                  # constraint flags, level
    r.ue()                                      # seq_parameter_set_id
    if profile in HIGH_PROFILES:
        chroma = r.ue()
        if chroma == 3:
            r.bit()                             # separate_colour_plane_flag
        r.ue(), r.ue(), r.bit()                 # bit depths, qpprime_y_zero_transform_bypass_flag
        if r.bit():                             # seq_scaling_matrix_present_flag
            for i in range(8 if chroma != 3 else 12):
                if r.bit():
                    last = step = 8
                    for _ in range(16 if i < 6 else 64):
                        if step:
                            step = (last + r.se() + 256) % 256
                        last = step or last
    r.ue()                                      # log2_max_frame_num_minus4
    poc_type = r.ue()
    if poc_type == 0:
        r.ue()
    elif poc_type == 1:
        r.bit(), r.se(), r.se()
        for _ in range(r.ue()):
            r.se()
    r.ue(), r.bit()                             # max_num_ref_frames, gaps_in_frame_num_allowed_flag
    r.ue(), r.ue()                              # picture width and height in macroblocks
    return r.bit() == 1
