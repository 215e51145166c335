"""Every video encoder the project drives, and what it needs to know about each: one table, so
that adding an encoder touches this file (and its tests) only.

settings.py validates against it, ffmpeg.py builds rate-control flags from it, the boss and the
worker decide the encoder warm-up from it; which containers can hold each `codec` is
client/media.py's CONTAINERS.
"""
from __future__ import annotations

from dataclasses import dataclass

X26X_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow",
                "slower", "veryslow", "placebo")

NVENC_PRESETS = ("p1", "p2", "p3", "p4", "p5", "p6", "p7")     # fastest .. best
QSV_PRESETS = ("veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow")


@dataclass(frozen=True)
class Encoder:
    name: str                          # ffmpeg's encoder name (-c:v)
    codec: str                         # the codec it writes, as ffprobe names it
    quality_range: tuple[int, int]     # what --crf may be
    default_quality: int               # the encoder's own default, passed explicitly
    fractional_quality: bool = False   # --crf may have a fraction (x264/x265 take 22.5)
    quality_option: str = "-crf"       # mpeg4 takes a quantiser (-q:v) instead
    constant_quality_extra: tuple[str, ...] = ()   # flags that make the quality mode constant quality
    presets: tuple[str, ...] = ()      # what --preset may be
    preset_option: str | None = None   # how a preset is passed: names (-preset) or a number (-cpu-used)
    always: tuple[str, ...] = ()       # flags every encode of it gets
    warmup: bool = False               # a forced keyframe is an IDR (-forced-idr): the chunk warm-up works
    # joins are decoded straight across a border (checks.check_across): x265 once turned a chunk's
    # forced IDR into a CRA whose picture order counts ran on from the chunk before; the others'
    # chunks start with a keyframe that resets the decoder
    check_joins: bool = False
    hardware: str = ""                 # the device it needs (NVIDIA, Intel): a worker offers it only if
    #                                    a one-frame test encode opens it (ffmpeg.working_encoders)


ENCODERS: dict[str, Encoder] = {e.name: e for e in (
    Encoder("libx264", "h264", (0, 51), 23, fractional_quality=True, presets=X26X_PRESETS, preset_option="-preset", warmup=True),
    Encoder("libx265", "hevc", (0, 51), 28, fractional_quality=True, presets=X26X_PRESETS, preset_option="-preset", warmup=True,
            check_joins=True),
    # VP9's constant-quality mode needs a zero target bit rate; row multithreading for speed
    Encoder("libvpx-vp9", "vp9", (0, 63), 33, constant_quality_extra=("-b:v", "0"),
            presets=tuple(str(i) for i in range(9)), preset_option="-cpu-used", always=("-row-mt", "1")),
    Encoder("libsvtav1", "av1", (0, 63), 35, presets=tuple(str(i) for i in range(14)), preset_option="-preset"),
    Encoder("libaom-av1", "av1", (0, 63), 32, presets=tuple(str(i) for i in range(9)), preset_option="-cpu-used"),
    # built into every ffmpeg; a quantiser 1..31 stands in for the CRF
    Encoder("mpeg4", "mpeg4", (1, 31), 4, quality_option="-q:v"),
    # Hardware encoders, in Debian's own ffmpeg. Constant quality: NVENC's VBR with a CQ target and
    # no bit-rate cap; Quick Sync's ICQ (-global_quality). The scales resemble the CRF's, not
    # equal it. No warm-up: their forced keyframes are not spelled -forced-idr alike.
    Encoder("h264_nvenc", "h264", (1, 51), 23, quality_option="-cq", constant_quality_extra=("-rc", "vbr", "-b:v", "0"),
            presets=NVENC_PRESETS, preset_option="-preset", hardware="NVIDIA"),
    Encoder("hevc_nvenc", "hevc", (1, 51), 28, quality_option="-cq", constant_quality_extra=("-rc", "vbr", "-b:v", "0"),
            presets=NVENC_PRESETS, preset_option="-preset", hardware="NVIDIA"),
    Encoder("h264_qsv", "h264", (1, 51), 23, quality_option="-global_quality", presets=QSV_PRESETS,
            preset_option="-preset", hardware="Intel Quick Sync"),
    Encoder("hevc_qsv", "hevc", (1, 51), 28, quality_option="-global_quality", presets=QSV_PRESETS,
            preset_option="-preset", hardware="Intel Quick Sync"),
)}
