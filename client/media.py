"""What the boss knows about media: probing the input, planning chunk cuts, container rules.

Pure functions where possible (plan_cuts, container checks) so they are unit-tested without ffmpeg.
"""
from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ffdt.client import streams as choice_of
from ffdt.common import ffmpeg, mp4
from ffdt.common.config import FFMPEG_PROBE_TIMEOUT
from ffdt.common.errors import FFmpegError, UsageError

log = logging.getLogger(__name__)

BITMAP_SUBS = {"hdmv_pgs_subtitle", "dvd_subtitle", "dvb_subtitle", "xsub"}


@dataclass(frozen=True)
class Stream:
    index: int
    kind: str                 # video, audio, subtitle, data, attachment
    codec: str
    start: float
    tags: dict[str, str] = field(default_factory=dict)
    attached_pic: bool = False
    width: int = 0
    height: int = 0
    rotation: int = 0         # display matrix, as ffprobe reports it (counter-clockwise degrees)
    color: dict[str, str] = field(default_factory=dict)   # color_primaries/trc/space/range, ffmpeg's names
    dolby_vision: str = ""    # "8.4": profile and base-layer compatibility, from the stream's DOVI record

    @property
    def label(self) -> str:
        lang = self.tags.get("language")
        return f"#{self.index} {self.kind} {self.codec}" + (f" ({lang})" if lang else "")


@dataclass(frozen=True)
class MediaInfo:
    path: Path
    format_name: str
    start: float
    duration: float
    streams: list[Stream]
    chapters: int
    frames: int               # video packets = frames for the codecs we split
    video_start: float        # first video timestamp
    video_duration: float     # last timestamp + its duration - first
    keyframe_positions: list[int]   # where the keyframes a stream copy can cut at (clean_cuts) are, in file order
    key: list[bool]           # per packet, in file order: a keyframe (clean or not)
    pts: list[float]          # every video packet's timestamp, in file order
    frame_rate: float         # average, for tolerances
    tags: dict[str, str] = field(default_factory=dict)   # global metadata
    pixel_bit_rate: float = 0.0   # the video's bits a second per pixel of its picture: how dense it is
    choice: choice_of.Choice | None = None   # the streams taken (the others are not in `streams`)
    own_copy: str = ""            # why the later stages need the chosen streams in a file of their own
    # frames an edit list hides (decoded for reference, never shown), counted among `frames`:
    # those shown before the first visible one, and after the last
    hidden_lead: int = 0
    hidden_tail: int = 0
    # how far decode timestamps run after their frame's presentation (an iPhone edit list over
    # negative composition offsets): the split moves them back by this (ffmpeg.segment_cmd)
    dts_shift: float = 0.0
    audio_end: float | None = None    # where the first audio track's last packet ends (None: no audio)
    # every keyframe is an IDR picture of a progressive H.264 stream, read from the file's own
    # tables (mp4.idr_entry_points): a place a decoder starts clean, known without decoding
    idr_keyframes: bool = False

    @property
    def keyframes(self) -> list[float]:
        """Timestamps of the keyframes a stream copy can cut at."""
        return [self.pts[i] for i in self.keyframe_positions]

    @property
    def video(self) -> Stream:
        return next(s for s in self.streams if s.kind == "video" and not s.attached_pic)

    @property
    def shown_frames(self) -> int:
        """Video packets less the frames an edit list hides: the frames the output gets."""
        return self.frames - self.hidden_lead - self.hidden_tail

    def of_kind(self, kind: str) -> list[Stream]:
        return [s for s in self.streams if s.kind == kind and not s.attached_pic]


# Formats whose timestamps may jump (broadcast captures joined from pieces, a 33-bit clock
# wrap): ffmpeg's command line smooths a jump of more than dts_delta_threshold (10 s) away.
DISCONTINUOUS_FORMATS = ("mpegts", "mpeg")
JUMP_SECONDS = 10.0
DTS_SLACK = 0.0005      # decode after presentation by less than this: timestamp rounding


QUIET_PROBE_BYTES = 1_000_000_000     # inputs smaller than this are probed in a few seconds at most


def inspect(tools: ffmpeg.Tools, path: Path,
            probed: tuple[dict, dict[int, list[ffmpeg.Packet]]] | None = None,
            options: choice_of.StreamOptions = choice_of.StreamOptions(), quiet: bool = False,
            on_progress: Callable[[float, float], None] | None = None) -> MediaInfo:
    """Probe an input and choose its streams (client/streams.py); UsageError with one clear line
    when it cannot be transcoded. `probed`: ffmpeg.probe_with_packets() of it, already run.
    quiet: what the user was told about this input already (a copy of it) goes to the debug log.
    on_progress(seconds read, seconds in all): how far the read of its packets is (a film's
    takes a while); not called when the container gives no duration."""
    say = log.debug if quiet else log.warning
    if not path.exists():
        raise UsageError(f"{path}: no such file")
    if not path.is_file():
        raise UsageError(f"{path}: not a regular file")
    try:
        info = probed[0] if probed else ffmpeg.probe(tools, path)
    except FFmpegError as exc:
        reason = exc.last_line or "unknown format"
        raise UsageError(f"{path}: not a media file ffmpeg can read ({reason})") from exc
    if not info.get("streams"):
        raise UsageError(f"{path}: not a media file ffmpeg can read (no streams)")
    try:
        choice = choice_of.choose(info, options)
    except UsageError as exc:
        raise UsageError(f"{path}: {exc}") from None
    for line in choice_of.describe(info, choice):
        (log.debug if quiet else log.info)("%s", line)
    streams = [_stream(s) for s in info["streams"]
               if s.get("codec_type") not in ("video", "audio") or choice.keeps(int(s.get("index", -1)))
               or s.get("disposition", {}).get("attached_pic")]
    fmt = info.get("format", {})
    # the chosen video's packets and the first audio track's (where it ends: the output check
    # compares the output's A/V end with the input's), in the same read of the input
    first_audio = next((int(s["index"]) for s in info["streams"] if s.get("codec_type") == "audio"), None)
    wanted = [choice.video] + ([first_audio] if first_audio is not None else [])
    found, idr = (probed[1], False) if probed else _input_packets(tools, path, info, wanted, on_progress, quiet)
    packets = found.get(choice.video, [])
    audio_end = None if first_audio is None else ffmpeg.packets_end(found.get(first_audio, []))
    own_copy = "" if choice_of.is_default(info, choice) else "streams chosen"
    if any(name in DISCONTINUOUS_FORMATS for name in fmt.get("format_name", "").split(",")) and _jumps(packets):
        own_copy = "timestamps jump"
        say("%s: the video's timestamps jump (a capture joined from pieces, or a clock wrap): "
            "they are made continuous, as one ffmpeg run makes them", path.name)
    # A capture cut mid-GOP starts with frames that need a keyframe before the file: no decoder
    # shows them, and the segment muxer drops them.
    first_key = next((i for i, p in enumerate(packets) if p.key), len(packets))
    if first_key:
        say("%s: skipping %d frame(s) before the first keyframe (they cannot be decoded)", path.name, first_key)
        packets = packets[first_key:]
    if not packets:
        raise UsageError(f"{path}: the video stream has no frames (truncated or damaged file?)")
    hidden_lead, hidden_tail = _hidden(path, packets)
    visible = [p for p in packets if not p.discard] if hidden_lead or hidden_tail else packets
    first = min(p.pts for p in visible)
    if first < packets[0].pts and not own_copy and not hidden_lead:
        # the first keyframe has leading pictures (stored after it, shown before it); whether a
        # decoder shows them depends on whether they need frames from before the file
        shown = [t for t in ffmpeg.frame_times(tools, path, until=packets[0].pts - first + 1.0) if t is not None]
        first = shown[0] if shown else first
    last = max(visible, key=lambda p: p.pts)
    frame_dur = _typical_duration(visible)
    # some muxers store a bogus last duration (one tick): take the typical frame's instead
    end = last.pts + (last.duration if last.duration >= 0.5 * frame_dur else frame_dur)
    declared = _float(fmt.get("duration"))
    if declared and end - first < 0.5 * declared - 1.0 and declared - (end - first) > 2.0:
        if own_copy:
            declared = None     # other streams' clocks, or the jumps: the copy's duration is the video's
        else:
            raise UsageError(f"{path}: video ends at {end - first:.1f}s of a declared {declared:.1f}s "
                             "(truncated file?)")
    cuts = clean_cuts(packets)
    video = next(s for s in streams if s.index == choice.video)
    return MediaInfo(
        path=path, format_name=fmt.get("format_name", "?"), start=_float(fmt.get("start_time")) or 0.0,
        duration=declared or (end - first), streams=streams, chapters=len(info.get("chapters", [])),
        frames=len(packets), video_start=first, video_duration=end - first,
        keyframe_positions=cuts, key=[p.key for p in packets],
        pts=[p.pts for p in packets], frame_rate=1.0 / frame_dur if frame_dur else 25.0,
        tags=dict(fmt.get("tags", {})),
        pixel_bit_rate=_pixel_bit_rate(packets, video, end - first),
        choice=choice, own_copy=own_copy, hidden_lead=hidden_lead, hidden_tail=hidden_tail,
        audio_end=audio_end, idr_keyframes=idr,
        dts_shift=max([0.0] + [p.dts - p.pts for p in packets if p.pts_known and p.dts_known
                               and p.dts - p.pts > DTS_SLACK]),
    )


def _input_packets(tools: ffmpeg.Tools, path: Path, info: dict, wanted: list[int],
                   on_progress: Callable[[float, float], None] | None, quiet: bool
                   ) -> tuple[dict[int, list[ffmpeg.Packet]], bool]:
    """The packets of these streams (of all but the first, the one that ends last): from an
    MP4/MOV file's sample tables where common/mp4.py vouches for them (milliseconds; ffprobe
    demuxes the whole file, 0.5-0.8 s on a quarter core for a minute of camera video), else
    from ffprobe. And whether every key flag is an IDR picture of a progressive stream, as
    the tables' own sync samples (mp4.idr_entry_points; ffprobe's key flags are not all sync
    samples, so only with the tables' packets)."""
    fmt = info.get("format", {})
    start, duration = _float(fmt.get("start_time")) or 0.0, _float(fmt.get("duration")) or 0.0
    shown = on_progress if on_progress and 0 < duration < 1e9 else None
    try:
        movie = mp4.read_movie(path, info)
        found = mp4.packets_by_stream(path, info, wanted, last_only=wanted[1:], movie=movie)
        if shown:
            shown(duration, duration)     # read at once: a script still sees the probe done
        try:
            return found, mp4.idr_entry_points(path, info, wanted[0], movie=movie)
        except mp4.Unsupported:
            return found, False
    except mp4.CutShort as exc:
        # as one ffmpeg run does ("partial file"), what is there is transcoded; but said
        log.warning("%s: the file is shorter than its index says (%s; cut short?): "
                    "only the frames it holds are transcoded", path.name, exc)
    except mp4.Unsupported as exc:
        log.debug("%s: packets read with ffprobe (%s)", path.name, exc)
    size = path.stat().st_size
    if size >= QUIET_PROBE_BYTES:     # a long read with nothing to show
        (log.debug if quiet else log.info)("%s: reading its packets (%.1f GB) for the frames and keyframes",
                                           path.name, size / 1e9)
    read = (lambda pts: shown(max(0.0, pts - start), duration)) if shown else None
    return ffmpeg.packets_by_stream(tools, path, wanted, on_progress=read, last_only=wanted[1:]), False


def _hidden(path: Path, packets: list[ffmpeg.Packet]) -> tuple[int, int]:
    """The frames an edit list hides (mp4/mov: a phone's trim, `-ss` with `-c copy`): how many
    are shown before the first visible frame and after the last. Workers decode and drop them
    (a chunk's frame range); an edit list that hides frames in the middle is refused."""
    hidden = [p.pts for p in packets if p.discard]
    shown = [p.pts for p in packets if not p.discard]
    if not hidden:
        return 0, 0
    if not shown:
        raise UsageError(f"{path}: its edit list hides every video frame")
    lead, tail = sum(t < min(shown) for t in hidden), sum(t > max(shown) for t in hidden)
    if lead + tail != len(hidden):
        raise UsageError(f"{path}: its edit list hides frames between shown ones (several edits); "
                         "not supported (remux it with one ffmpeg run first)")
    log.info("%s: the edit list hides %d frame(s) at the start and %d at the end: they are left out, "
             "as a player does", path.name, lead, tail)
    return lead, tail


# Subtitle codecs Matroska cannot hold as they are, and what the copy makes of them.
COPY_SUB_CODECS = {"mov_text": "srt"}


def chosen_copy(tools: ffmpeg.Tools, info: MediaInfo, dst: Path,
                on_progress: Callable[[float, float], None] | None = None) -> MediaInfo:
    """The chosen streams (and subtitles, attachments, chapters, metadata) stream-copied into a
    Matroska file of their own: what the later stages read when the choice is not ffmpeg's first
    video and every audio stream, or the timestamps jump (the copy makes them continuous, as one
    ffmpeg run does). One stream copy of the input; its probe is quiet (the user was told)."""
    keep = []
    dropped: dict[str, list[str]] = {}      # the join warns about the rest; these it never sees
    for s in info.streams:
        why = choice_of.uncarried(s.kind, s.codec)
        if why:
            dropped.setdefault(why, []).append(s.label)
        elif s.index == info.video.index or s.kind == "audio":
            keep.append((s.index, "copy"))
        elif s.kind == "subtitle":
            keep.append((s.index, COPY_SUB_CODECS.get(s.codec, "copy")))
        elif s.kind == "attachment":
            keep.append((s.index, "copy"))
    for line in choice_of.dropping_lines(dropped):
        log.warning("%s", line)
    # the user's audio order is the copy's order
    assert info.choice is not None
    order = {index: n for n, index in enumerate(info.choice.audio)}
    keep.sort(key=lambda k: (k[0] != info.video.index, order.get(k[0], len(order)), k[0]))
    log.info("%s: copying the chosen streams into a file of their own (%s)", info.path.name, info.own_copy)
    ffmpeg.run_counting(ffmpeg.copy_cmd(tools, info.path, dst, keep), info.frames, on_progress)
    copied = inspect(tools, dst, quiet=True)
    return dataclasses.replace(copied, tags={**info.tags, **copied.tags})


def _jumps(packets: list[ffmpeg.Packet]) -> bool:
    """Whether decode timestamps, in file order, run backwards or leap ahead as a clock does when
    captures are joined or it wraps (B-frame reordering moves presentation times, not these)."""
    dts = [p.dts for p in packets if p.dts_known]
    return any(b < a - 1.0 or b > a + JUMP_SECONDS for a, b in zip(dts, dts[1:]))


def _pixel_bit_rate(packets: list[ffmpeg.Packet], video: Stream, seconds: float) -> float:
    """Bits a second per pixel of the picture (0 when sizes or the picture size are unknown).
    A second, not a frame: a variable-frame-rate recording of a still scene stores few frames."""
    area = video.width * video.height * seconds
    stored = sum(p.size for p in packets if p.size > 0)
    return 8.0 * stored / area if area > 0 else 0.0


def _typical_duration(packets: list[ffmpeg.Packet]) -> float:
    pts = sorted(p.pts for p in packets)
    gaps = sorted(b - a for a, b in zip(pts, pts[1:]) if b > a)
    return gaps[len(gaps) // 2] if gaps else 1 / 25


def _stream(s: dict[str, Any]) -> Stream:
    return Stream(index=int(s.get("index", 0)), kind=s.get("codec_type", "data"), codec=s.get("codec_name", "none"),
                  start=_float(s.get("start_time")) or 0.0, tags=dict(s.get("tags", {})),
                  attached_pic=bool(s.get("disposition", {}).get("attached_pic")),
                  width=int(s.get("width", 0) or 0), height=int(s.get("height", 0) or 0),
                  rotation=_rotation(s), dolby_vision=_dolby_vision(s),
                  color={key: s[probe_key] for key, probe_key in (("color_primaries", "color_primaries"),
                                                                   ("color_trc", "color_transfer"),
                                                                   ("colorspace", "color_space"),
                                                                   ("color_range", "color_range"))
                         if s.get(probe_key) not in (None, "unknown", "reserved")})


def _dolby_vision(s: dict[str, Any]) -> str:
    for side in s.get("side_data_list", []) or []:
        if side.get("side_data_type") == "DOVI configuration record":
            return f"{side.get('dv_profile', '?')}.{side.get('dv_bl_signal_compatibility_id', 0)}"
    return ""


def _rotation(s: dict[str, Any]) -> int:
    for side in s.get("side_data_list", []) or []:
        if side.get("side_data_type") == "Display Matrix" and "rotation" in side:
            return int(round(float(side["rotation"])))
    return 0


# Per-frame (dynamic) HDR metadata, as ffprobe names it in a frame's side data: no encoder here
# writes it from ffmpeg's command line, so a transcode drops it
DYNAMIC_HDR = {"HDR Dynamic Metadata SMPTE2094-40 (HDR10+)": "HDR10+ dynamic metadata",
               "Dolby Vision RPU Data": "Dolby Vision RPU", "Dolby Vision Metadata": "Dolby Vision RPU"}


def hdr10_metadata(tools: ffmpeg.Tools, path: Path, stream: int, dynamic: list[str] | None = None) -> dict[str, str]:
    """Mastering display and content light level of the first frame of the video stream with
    this index, in x265's syntax. `dynamic` gets the names of the per-frame metadata the frame
    carries (DYNAMIC_HDR)."""
    out = ffmpeg.run([tools.ffprobe, "-v", "error", "-select_streams", str(stream), "-read_intervals", "%+#1",
                      "-show_entries", "frame_side_data", "-of", "json", ffmpeg.input_path(path)], timeout=FFMPEG_PROBE_TIMEOUT)
    try:
        frames = json.loads(out).get("frames", [])
    except ValueError:
        return {}
    found: dict[str, str] = {}
    for side in (frames[0].get("side_data_list", []) if frames else []):
        kind = side.get("side_data_type", "")
        if kind in DYNAMIC_HDR and dynamic is not None and DYNAMIC_HDR[kind] not in dynamic:
            dynamic.append(DYNAMIC_HDR[kind])
        try:
            if kind == "Mastering display metadata":
                c = {k: round(_ratio(side[k]) * 50000) for k in ("green_x", "green_y", "blue_x", "blue_y", "red_x",
                                                                  "red_y", "white_point_x", "white_point_y")}
                lmax, lmin = (round(_ratio(side[k]) * 10000) for k in ("max_luminance", "min_luminance"))
                found["master_display"] = (f"G({c['green_x']},{c['green_y']})B({c['blue_x']},{c['blue_y']})"
                                           f"R({c['red_x']},{c['red_y']})WP({c['white_point_x']},"
                                           f"{c['white_point_y']})L({lmax},{lmin})")
            elif kind == "Content light level metadata":
                found["max_cll"] = f"{int(side['max_content'])},{int(side['max_average'])}"
        except (KeyError, ValueError, ZeroDivisionError):
            continue
    return found


def _ratio(text: str) -> float:
    num, _, den = str(text).partition("/")
    return float(num) / float(den or 1)


def clockwise_turn(rotation: int) -> int:
    """The clockwise turn (0/90/180/270) that shows a picture with this display rotation upright."""
    return (-rotation) % 360 // 90 * 90


def _float(text: Any) -> float | None:
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def clean_cuts(packets: list[ffmpeg.Packet]) -> list[int]:
    """Positions (in file order) of the keyframes where a cut leaves every frame decodable on its own side.

    A keyframe of an open GOP (MPEG-2, MPEG-4 Part 2 and broadcast H.264 with B-frames) is
    followed, in decode order, by B-frames shown before it that reference the previous GOP: cut
    there and those frames decode in neither chunk. So a keyframe is a clean cut only when every
    packet before it in the file is shown before it and every packet after it is shown after it.
    """
    timed = [(i, p.pts) for i, p in enumerate(packets) if p.pts_known]
    later_min = [0.0] * len(timed)
    low = float("inf")
    for n in range(len(timed) - 1, -1, -1):
        later_min[n] = low
        low = min(low, timed[n][1])
    cuts, earlier_max = [], float("-inf")
    for n, (i, pts) in enumerate(timed):
        if packets[i].key and earlier_max < pts < later_min[n]:
            cuts.append(i)
        earlier_max = max(earlier_max, pts)
    return cuts


# ---------------------------------------------------------------- output containers

@dataclass(frozen=True)
class Container:
    muxer: str
    vcodecs: frozenset[str]
    acodecs: frozenset[str] | None     # None: anything
    default_vcodec: str
    default_acodec: str
    text_subs: str | None              # codec text subtitles become; None: copied as they are
    bitmap_subs: bool
    attachments: bool


_MP4_AUDIO = frozenset({"aac", "mp3", "ac3", "eac3", "opus", "flac", "alac"})
CONTAINERS = {
    ".mp4": Container("mp4", frozenset({"h264", "hevc", "av1", "vp9", "mpeg4"}), _MP4_AUDIO, "libx264", "aac",
                      "mov_text", False, False),
    ".m4v": Container("mp4", frozenset({"h264", "hevc", "mpeg4"}), _MP4_AUDIO, "libx264", "aac",
                      "mov_text", False, False),
    ".mov": Container("mov", frozenset({"h264", "hevc", "mpeg4"}), _MP4_AUDIO | {"pcm_s16le", "pcm_s24le"},
                      "libx264", "aac", "mov_text", False, False),
    ".mkv": Container("matroska", frozenset({"h264", "hevc", "av1", "vp9", "mpeg4"}), None, "libx264", "aac",
                      None, True, True),
    ".webm": Container("webm", frozenset({"vp9", "av1"}), frozenset({"opus", "vorbis"}), "libvpx-vp9", "libopus",
                       "webvtt", False, False),
}
AUDIO_ENCODER_CODEC = {"aac": "aac", "libopus": "opus", "libvorbis": "vorbis", "libmp3lame": "mp3",
                       "ac3": "ac3", "flac": "flac"}


# Apple's devices write these as QuickTime "mdta" keys, which ffmpeg's mp4/mov muxers do not
# write back; the same facts have a classic atom there (location: ©xyz; make/model: mov only).
APPLE_TAGS = {"com.apple.quicktime.location.ISO6709": "location", "com.apple.quicktime.make": "make",
              "com.apple.quicktime.model": "model"}
MUXER_TAGS = {"mp4": {"location"}, "mov": {"location", "make", "model"}}


# ISO 639-2 has two codes for 20 languages (deu/ger). ffmpeg's mov muxer looks a language up in
# QuickTime's table, which has one of the two (ger, but fra), and silently drops the other: the
# spelling it can write, found by muxing each code with ffmpeg 5.1 (Maori has neither).
MOV_LANGUAGE = {"bod": "tib", "cym": "wel", "deu": "ger", "ell": "gre", "eus": "baq", "fas": "per", "hye": "arm",
                "isl": "ice", "kat": "geo", "mkd": "mac", "msa": "may", "mya": "bur", "nld": "dut", "sqi": "alb",
                "zho": "chi", "fre": "fra", "cze": "ces", "rum": "ron", "slo": "slk"}


def carried_tags(tags: dict[str, str], muxer: str) -> dict[str, str]:
    """Global tags to set on the output so GPS location (and the camera, in mov) survive."""
    wanted = MUXER_TAGS.get(muxer, set())
    return {name: tags[apple] for apple, name in APPLE_TAGS.items()
            if apple in tags and name in wanted and name not in tags}


def container_for(output: Path) -> Container:
    try:
        return CONTAINERS[output.suffix.lower()]
    except KeyError:
        raise UsageError(f"cannot write {output.suffix or 'files without an extension'}: "
                         f"use one of {', '.join(CONTAINERS)}") from None


def check_combination(container: Container, vcodec_name: str, acodec: str, audio: list[Stream]) -> None:
    """Refuse, before any work, a video/audio codec the output container cannot hold."""
    if vcodec_name not in container.vcodecs:
        raise UsageError(f"{container.muxer} cannot hold {vcodec_name} video; "
                         f"pick another --vcodec or output extension")
    if container.acodecs is None or not audio:
        return
    if acodec == "copy":
        bad = [s for s in audio if s.codec not in container.acodecs]
        if bad:
            raise UsageError(f"--acodec copy: {container.muxer} cannot hold {bad[0].codec} audio; "
                             "let the boss encode it (drop --acodec copy)")
    elif AUDIO_ENCODER_CODEC.get(acodec, acodec) not in container.acodecs:
        raise UsageError(f"{container.muxer} cannot hold {acodec} audio")
