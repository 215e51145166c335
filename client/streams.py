"""Stream choice: which of the input's streams a job transcodes, picked as ffmpeg's own defaults
would pick them, and which it drops (one warning line per kind of stream dropped).

Broadcast captures are why this exists: a DVB capture holds several programs, a second video
stream with nothing decodable, audio PIDs the capture has no packets for (ffprobe reports them
with a sample rate of 0, and `-map 0:a` then fails), teletext, SCTE-35 cues. Pure functions of
ffprobe's JSON, unit-tested without ffmpeg.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from ffdt.common.errors import UsageError

log = logging.getLogger(__name__)

# subtitle codecs no output container here holds: dropped like data
UNCARRIED_SUBS = {"dvb_teletext", "eia_608", "arib_caption"}


@dataclass(frozen=True)
class StreamOptions:
    """The user's choice (--video-stream, --program, --audio-streams); None: ffmpeg's default."""
    video: int | None = None        # a stream index
    program: int | None = None      # a program id (MPEG-TS)
    audio: str = "all"              # all | first | none | N,M (stream indices)

    @staticmethod
    def parse_audio(text: str) -> str:
        text = text.strip().lower()
        if text in ("all", "first", "none"):
            return text
        try:
            indices = [int(part) for part in text.split(",")]
        except ValueError:
            raise UsageError(f"--audio-streams takes all, first, none or stream indices like 1,3; not {text!r}") \
                from None
        if any(i < 0 for i in indices):
            raise UsageError("--audio-streams: stream indices are 0 or more")
        if len(set(indices)) != len(indices):
            raise UsageError("--audio-streams: a stream is named twice")
        return ",".join(map(str, indices))


@dataclass(frozen=True)
class Choice:
    video: int                          # stream index
    audio: tuple[int, ...]              # in file order unless the user gave another order
    program: int | None                 # the program the video belongs to, when the file has programs
    dropped: tuple[tuple[int, str], ...] = ()   # (stream index, why), for streams of the kinds we carry

    def keeps(self, index: int) -> bool:
        """False for the video, audio and subtitle streams not taken (data is the join's to drop)."""
        return all(index != d for d, _ in self.dropped)


def _label(s: dict[str, Any]) -> str:
    lang = (s.get("tags") or {}).get("language")
    return f"#{s.get('index')} {s.get('codec_type', 'data')} {s.get('codec_name', 'unknown')}" + \
        (f" ({lang})" if lang else "")


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def decodable(s: dict[str, Any]) -> bool:
    """Whether ffprobe found what a decoder needs: a codec, and a picture size or a sample rate
    and channels. A PID a capture has no packets for has none of these."""
    if not s.get("codec_name") or s.get("codec_name") == "none":
        return False
    kind = s.get("codec_type")
    if kind == "video":
        return _int(s.get("width")) > 0 and _int(s.get("height")) > 0
    if kind == "audio":
        return _int(s.get("sample_rate")) > 0 and _int(s.get("channels")) > 0
    return True


def _attached_pic(s: dict[str, Any]) -> bool:
    return bool((s.get("disposition") or {}).get("attached_pic"))


def program_streams(info: dict[str, Any]) -> dict[int, set[int]]:
    """Program id -> its stream indices, for the programs that have streams."""
    found: dict[int, set[int]] = {}
    for p in info.get("programs") or []:
        indices = {_int(s.get("index")) for s in p.get("streams") or []}
        if indices:
            found[_int(p.get("program_id"))] = indices
    return found


def choose(info: dict[str, Any], options: StreamOptions = StreamOptions()) -> Choice:
    """The video, its program and its audio, as ffmpeg picks them by default (the video with the
    largest picture that has a decodable one, the first on a tie); UsageError with one line when
    the user's choice does not exist or the input has no video to transcode."""
    streams = info.get("streams") or []
    by_index = {_int(s.get("index")): s for s in streams}
    programs = program_streams(info)
    if options.program is not None and options.program not in programs:
        known = ", ".join(map(str, sorted(programs))) or "none with streams"
        raise UsageError(f"--program {options.program}: no such program (programs: {known})")
    in_program = programs.get(options.program) if options.program is not None else None

    videos = [s for s in streams if s.get("codec_type") == "video" and not _attached_pic(s)
              and (in_program is None or _int(s.get("index")) in in_program)]
    if options.video is not None:
        chosen = by_index.get(options.video)
        if chosen is None or chosen.get("codec_type") != "video" or _attached_pic(chosen):
            raise UsageError(f"--video-stream {options.video}: not a video stream of the input "
                             f"(video streams: {', '.join(str(s.get('index')) for s in videos) or 'none'})")
        if not decodable(chosen):
            raise UsageError(f"--video-stream {options.video}: the stream has nothing decodable")
        if in_program is not None and options.video not in in_program:
            raise UsageError(f"--video-stream {options.video} is not in --program {options.program}")
        video = chosen
    else:
        usable = [s for s in videos if decodable(s)]
        if not usable:
            unknown = [s for s in videos if s.get("codec_name") in (None, "", "none", "unknown")]
            if videos and len(unknown) == len(videos):
                tags = ", ".join(sorted({repr(s.get("codec_tag_string") or "?") for s in unknown}))
                raise UsageError(f"this ffmpeg has no decoder for its video codec (codec tag {tags}); "
                                 "one ffmpeg run cannot transcode it either")
            if videos:
                raise UsageError(f"the video stream{'s' if len(videos) > 1 else ''} "
                                 f"({', '.join(_label(s) for s in videos)}) hold{'' if len(videos) > 1 else 's'} "
                                 "nothing decodable")
            raise UsageError("has no video stream (audio-only or data); nothing to transcode")
        video = max(usable, key=lambda s: _int(s.get("width")) * _int(s.get("height")))   # first on a tie
    vindex = _int(video.get("index"))
    program = options.program if options.program is not None else \
        next((pid for pid, indices in programs.items() if vindex in indices), None)
    # the audio that belongs with the video: its program's, when the file has programs
    scope = programs.get(program) if program is not None else None
    audio_all = [s for s in streams if s.get("codec_type") == "audio" and (scope is None or _int(s.get("index")) in scope)]
    dropped = [(_int(s.get("index")), "nothing decodable") for s in audio_all if not decodable(s)]
    audio = [_int(s.get("index")) for s in audio_all if decodable(s)]
    if options.audio == "none":
        audio = []
    elif options.audio == "first":
        audio = audio[:1]
    elif options.audio != "all":
        wanted = [int(i) for i in options.audio.split(",")]
        for i in wanted:
            s = by_index.get(i)
            if s is None or s.get("codec_type") != "audio":
                raise UsageError(f"--audio-streams: stream {i} is not an audio stream of the input")
            if not decodable(s):
                raise UsageError(f"--audio-streams: stream {i} has nothing decodable")
        audio = wanted
    for s in streams:
        i = _int(s.get("index"))
        if s.get("codec_type") == "video" and i != vindex and not _attached_pic(s):
            dropped.append((i, "another video stream" if decodable(s) else "nothing decodable"))
        elif s.get("codec_type") == "audio" and i not in audio and all(i != d for d, _ in dropped):
            dropped.append((i, "another program's" if scope is not None and i not in scope else "not chosen"))
        elif s.get("codec_type") == "subtitle" and scope is not None and i not in scope:
            dropped.append((i, "another program's"))
    return Choice(video=vindex, audio=tuple(audio), program=program, dropped=tuple(sorted(dropped)))


def uncarried(kind: str, codec: str) -> str | None:
    """Why no output carries a stream of this kind and codec (None: some output does). The
    warning line of its kind: one line per kind, however many streams."""
    if kind == "data":
        return "data (cues, timed metadata): not carried to the output"
    if kind == "subtitle" and codec in UNCARRIED_SUBS:
        return f"{codec} subtitles: no output container holds them"
    return None


def is_default(info: dict[str, Any], choice: Choice) -> bool:
    """Whether the choice is what the later stages take anyway (the first video stream, every
    audio stream in order); otherwise the chosen streams are copied into a file of their own."""
    streams = info.get("streams") or []
    first_video = next((_int(s.get("index")) for s in streams if s.get("codec_type") == "video"), None)
    all_audio = tuple(_int(s.get("index")) for s in streams if s.get("codec_type") == "audio")
    return choice.video == first_video and choice.audio == all_audio


def describe(info: dict[str, Any], choice: Choice) -> list[str]:
    """Lines for the user: what is taken (when there was a choice) and, one per kind, what is dropped."""
    by_index = {_int(s.get("index")): s for s in info.get("streams") or []}
    lines = []
    videos = sum(1 for s in by_index.values() if s.get("codec_type") == "video" and not _attached_pic(s))
    audios = sum(1 for s in by_index.values() if s.get("codec_type") == "audio")
    if choice.dropped or videos > 1 or len(program_streams(info)) > 1:
        v = by_index[choice.video]
        where = f" of program {choice.program}" if choice.program is not None else ""
        taken = f"video {_label(v)} {v.get('width')}x{v.get('height')}{where}"
        if audios:
            taken += "; audio " + (", ".join(_label(by_index[i]) for i in choice.audio) or "none")
        lines.append(f"streams: {taken} (--video-stream, --program, --audio-streams choose others)")
    reasons: dict[str, list[str]] = {}
    for index, why in choice.dropped:
        reasons.setdefault(why, []).append(_label(by_index[index]))
    return lines + dropping_lines(reasons)


def dropping_lines(reasons: dict[str, list[str]]) -> list[str]:
    """One line per kind of stream dropped (why -> the streams' labels)."""
    return [f"dropping {', '.join(labels)}: {why}" for why, labels in reasons.items()]
