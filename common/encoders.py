"""Every video encoder the project drives, and what it needs to know about each: one table, so
that adding an encoder touches this file (and its tests) only.

settings.py validates against it, ffmpeg.py builds rate-control flags from it, the boss and the
worker decide the encoder warm-up from it; which containers can hold each `codec` is
client/media.py's CONTAINERS.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

X26X_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow",
                "slower", "veryslow", "placebo")

NVENC_PRESETS = ("p1", "p2", "p3", "p4", "p5", "p6", "p7")     # fastest .. best
H264_LEVELS = ("1", "1b", "1.1", "1.2", "1.3", "2", "2.1", "2.2", "3", "3.1", "3.2", "4", "4.1", "4.2",
               "5", "5.1", "5.2", "6", "6.1", "6.2")
HEVC_LEVELS = ("1", "2", "2.1", "3", "3.1", "4", "4.1", "5", "5.1", "5.2", "6", "6.1", "6.2")


@dataclass(frozen=True)
class Param:
    """One encoder parameter a user may set (--x264-params / --x265-params): its values are
    checked here, so a peer's settings can never smuggle another key or a file name through."""
    kind: str                                 # int, float, choice, or pair (two ints "a,b")
    lo: float = 0
    hi: float = 0
    choices: tuple[str, ...] = ()

    def check(self, value: str) -> bool:
        if self.kind == "choice":
            return value in self.choices
        if self.kind == "pair":
            parts = value.split(",")
            return len(parts) == 2 and all(Param("int", self.lo, self.hi).check(p) for p in parts)
        pattern = r"-?[0-9]{1,6}" if self.kind == "int" else r"-?[0-9]{1,6}(\.[0-9]{1,6})?"
        return re.fullmatch(pattern, value) is not None and self.lo <= float(value) <= self.hi


def _flag() -> Param:
    return Param("int", 0, 1)


# Rate control (--crf/--vbitrate), open-gop (the warm-up needs closed GOPs), threads, logging,
# level and HDR (set from their own options) and every parameter that names a file stay ours.
X264_PARAMS: dict[str, Param] = {
    "keyint": Param("int", 1, 3000), "min-keyint": Param("int", 1, 3000), "scenecut": Param("int", 0, 100),
    "bframes": Param("int", 0, 16), "b-adapt": Param("int", 0, 2),
    "b-pyramid": Param("choice", choices=("none", "strict", "normal")), "ref": Param("int", 1, 16),
    "aq-mode": Param("int", 0, 3), "aq-strength": Param("float", 0, 3), "psy": _flag(),
    "deblock": Param("pair", -6, 6), "me": Param("choice", choices=("dia", "hex", "umh", "esa", "tesa")),
    "merange": Param("int", 4, 64), "subme": Param("int", 0, 11), "trellis": Param("int", 0, 2),
    "rc-lookahead": Param("int", 0, 250), "mbtree": _flag(), "weightp": Param("int", 0, 2), "8x8dct": _flag(),
    "cabac": _flag(), "direct": Param("choice", choices=("none", "spatial", "temporal", "auto")),
    "qcomp": Param("float", 0, 1), "chroma-qp-offset": Param("int", -12, 12), "nr": Param("int", 0, 1000),
    "fast-pskip": _flag(), "mixed-refs": _flag(),
}
X265_PARAMS: dict[str, Param] = {
    "keyint": Param("int", 1, 3000), "min-keyint": Param("int", 0, 3000), "scenecut": Param("int", 0, 100),
    "bframes": Param("int", 0, 16), "b-adapt": Param("int", 0, 2), "ref": Param("int", 1, 16),
    "aq-mode": Param("int", 0, 4), "aq-strength": Param("float", 0, 3), "psy-rd": Param("float", 0, 5),
    "psy-rdoq": Param("float", 0, 50), "rd": Param("int", 1, 6), "rdoq-level": Param("int", 0, 2),
    "sao": _flag(), "limit-sao": _flag(), "deblock": Param("pair", -6, 6), "rc-lookahead": Param("int", 0, 250),
    "ctu": Param("choice", choices=("16", "32", "64")), "min-cu-size": Param("choice", choices=("8", "16", "32")),
    "me": Param("choice", choices=("dia", "hex", "umh", "star", "sea", "full")), "subme": Param("int", 0, 7),
    "merange": Param("int", 0, 256), "b-intra": _flag(), "weightb": _flag(), "strong-intra-smoothing": _flag(),
    "cutree": _flag(), "tskip": _flag(), "qcomp": Param("float", 0.5, 1),
}
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
    # VAAPI: frames go up to a render device (/dev/dri/renderD*) in one of these formats, by bit depth
    upload: dict[str, str] = field(default_factory=dict)
    # one build, settings and thread count make the same bytes of a chunk on any machine of one
    # CPU kind (the re-encode check compares them; hardware encoders depend on the GPU and driver)
    deterministic: bool = False
    # tuning a user may ask for (--tune, --profile, --level, --x264-params/--x265-params)
    tunes: tuple[str, ...] = ()
    profiles: tuple[str, ...] = ()
    levels: tuple[str, ...] = ()
    params_option: str = ""            # -x264-params / -x265-params
    params: dict[str, Param] = field(default_factory=dict)


ENCODERS: dict[str, Encoder] = {e.name: e for e in (
    Encoder("libx264", "h264", (0, 51), 23, fractional_quality=True, presets=X26X_PRESETS, preset_option="-preset", warmup=True,
            deterministic=True,
            tunes=("film", "animation", "grain", "stillimage", "psnr", "ssim", "fastdecode", "zerolatency"),
            profiles=("baseline", "main", "high", "high10", "high422", "high444"), levels=H264_LEVELS,
            params_option="-x264-params", params=X264_PARAMS),
    Encoder("libx265", "hevc", (0, 51), 28, fractional_quality=True, presets=X26X_PRESETS, preset_option="-preset", warmup=True,
            deterministic=True,
            check_joins=True, tunes=("psnr", "ssim", "grain", "zerolatency", "fastdecode", "animation"),
            profiles=("main", "main10", "main12", "main422-10", "main444-8", "main444-10"), levels=HEVC_LEVELS,
            params_option="-x265-params", params=X265_PARAMS),
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
            presets=NVENC_PRESETS, preset_option="-preset", hardware="NVIDIA", tunes=("hq", "ll", "ull", "lossless"),
            profiles=("baseline", "main", "high", "high444p"), levels=H264_LEVELS),
    Encoder("hevc_nvenc", "hevc", (1, 51), 28, quality_option="-cq", constant_quality_extra=("-rc", "vbr", "-b:v", "0"),
            presets=NVENC_PRESETS, preset_option="-preset", hardware="NVIDIA", tunes=("hq", "ll", "ull", "lossless"),
            profiles=("main", "main10", "rext"), levels=HEVC_LEVELS),
    Encoder("h264_qsv", "h264", (1, 51), 23, quality_option="-global_quality", presets=QSV_PRESETS,
            preset_option="-preset", hardware="Intel Quick Sync", profiles=("baseline", "main", "high")),
    Encoder("hevc_qsv", "hevc", (1, 51), 28, quality_option="-global_quality", presets=QSV_PRESETS,
            preset_option="-preset", hardware="Intel Quick Sync", profiles=("main", "main10")),
    # VAAPI (Intel, AMD on Linux): constant QP; the picture is uploaded to the GPU as NV12 (P010
    # for 10-bit), so --pix-fmt picks only the depth
    Encoder("h264_vaapi", "h264", (1, 51), 23, quality_option="-qp", constant_quality_extra=("-rc_mode", "CQP"),
            hardware="VAAPI", profiles=("main", "high"), upload={"8": "nv12"}),
    Encoder("hevc_vaapi", "hevc", (1, 51), 28, quality_option="-qp", constant_quality_extra=("-rc_mode", "CQP"),
            hardware="VAAPI", profiles=("main", "main10"), upload={"8": "nv12", "10": "p010"}),
)}
