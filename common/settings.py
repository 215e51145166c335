"""Encoding settings: the structured job description a boss sends and a worker validates.

Nothing here is passed to ffmpeg as raw text from the wire: every value is checked against a
whitelist or a numeric range, and the worker builds the command from the checked values.
"""
from __future__ import annotations

import math
import re
from decimal import Decimal
from dataclasses import asdict, dataclass
from typing import Any

from ffdt.common.encoders import ENCODERS
from ffdt.common.errors import ProtocolError, UsageError

PIX_FMTS = ("yuv420p", "yuv422p", "yuv444p", "yuv420p10le", "yuv422p10le", "yuv444p10le", "nv12")
COLOR_PRIMARIES = ("bt709", "bt470m", "bt470bg", "smpte170m", "smpte240m", "film", "bt2020", "smpte428",
                   "smpte431", "smpte432", "jedec-p22")
COLOR_TRC = ("bt709", "gamma22", "gamma28", "smpte170m", "smpte240m", "linear", "log100", "log316",
             "iec61966-2-4", "bt1361e", "iec61966-2-1", "bt2020-10", "bt2020-12", "smpte2084", "smpte428",
             "arib-std-b67")
COLORSPACES = ("rgb", "bt709", "fcc", "bt470bg", "smpte170m", "smpte240m", "ycgco", "bt2020nc", "bt2020c",
               "smpte2085", "chroma-derived-nc", "chroma-derived-c", "ictcp")
COLOR_RANGES = ("tv", "pc")
_MASTER_DISPLAY = re.compile(r"^G\(\d{1,5},\d{1,5}\)B\(\d{1,5},\d{1,5}\)R\(\d{1,5},\d{1,5}\)"
                             r"WP\(\d{1,5},\d{1,5}\)L\(\d{1,9},\d{1,9}\)$")
_MAX_CLL = re.compile(r"^\d{1,5},\d{1,5}$")
_FPS = re.compile(r"^[1-9][0-9]{0,5}(/[1-9][0-9]{0,5})?$")
_RATE = re.compile(r"^([0-9]+(?:\.[0-9]+)?)([kKmM]?)$")
MAX_CODEC_PARAMS = 32


@dataclass(frozen=True)
class Settings:
    """What every chunk of a job is encoded with."""
    vcodec: str = "libx264"
    crf: float | None = None         # an int unless the encoder takes fractions (22.5)
    vbitrate: int | None = None      # bits per second
    maxrate: int | None = None
    bufsize: int | None = None
    preset: str | None = None
    pix_fmt: str | None = None
    scale_w: int | None = None       # -1/-2 keep aspect, as in ffmpeg's scale filter
    scale_h: int | None = None
    fps: str | None = None           # "30" or "30000/1001"
    rotate: int = 0                  # clockwise degrees to turn the picture (the source's display matrix)
    pad_even: bool = False           # pad an odd width/height by one pixel (4:2:0 encoders need even)
    # the source's colour description, carried to the output (ffmpeg's names)
    color_primaries: str | None = None
    color_trc: str | None = None
    colorspace: str | None = None
    color_range: str | None = None
    # HDR10 static metadata in x265's syntax, for encoders that take it (libx265)
    master_display: str | None = None    # "G(x,y)B(x,y)R(x,y)WP(x,y)L(max,min)"
    max_cll: str | None = None           # "max_content,max_average"
    # tuning from the encoder's whitelists (common/encoders.py)
    tune: str | None = None
    profile: str | None = None
    level: str | None = None
    codec_params: tuple[tuple[str, str], ...] = ()     # (key, value) for -x264-params/-x265-params, sorted

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise UsageError unless every value is one we accept."""
        spec = ENCODERS.get(self.vcodec)
        if spec is None:
            raise UsageError(f"unsupported video encoder {self.vcodec!r}; choose from {', '.join(ENCODERS)}")
        if self.crf is not None and self.vbitrate is not None:
            raise UsageError("use --crf or --vbitrate, not both")
        if self.crf is not None:
            lo, hi = spec.quality_range
            if not lo <= self.crf <= hi:
                raise UsageError(f"--crf for {self.vcodec} must be in {lo}..{hi}")
            if self.crf != int(self.crf) and not spec.fractional_quality:
                raise UsageError(f"--crf for {self.vcodec} takes whole numbers")
        for name in ("vbitrate", "maxrate", "bufsize"):
            value = getattr(self, name)
            if value is not None and not 1000 <= value <= 10**10:
                raise UsageError(f"--{name} must be between 1k and 10G bits per second")
        if self.preset is not None and self.preset not in spec.presets:
            choices = ", ".join(spec.presets) or "none"
            raise UsageError(f"--preset {self.preset!r} is not valid for {self.vcodec} (choose from {choices})")
        if self.pix_fmt is not None and self.pix_fmt not in PIX_FMTS:
            raise UsageError(f"--pix-fmt must be one of {', '.join(PIX_FMTS)}")
        if spec.upload and self.pix_fmt is not None and self.pix_fmt not in ("yuv420p", "nv12", "yuv420p10le"):
            raise UsageError(f"{self.vcodec} encodes 4:2:0 only (--pix-fmt yuv420p, nv12 or yuv420p10le)")
        if spec.upload and self.pix_fmt == "yuv420p10le" and "10" not in spec.upload:
            raise UsageError(f"{self.vcodec} encodes 8-bit only")
        if spec.upload and self.profile and (self.profile == "main10") != (self.pix_fmt == "yuv420p10le"):
            raise UsageError(f"{self.vcodec}: --profile main10 goes with --pix-fmt yuv420p10le (10-bit), "
                             "and the 8-bit profiles without it")
        for value in (self.scale_w, self.scale_h):
            if value is not None and not (value in (-1, -2) or 2 <= value <= 16384):
                raise UsageError("--scale takes W:H with sizes 2..16384, or -1/-2 to keep the aspect ratio")
        if (self.scale_w is None) != (self.scale_h is None):
            raise UsageError("--scale needs both W and H")
        if self.rotate not in (0, 90, 180, 270):
            raise UsageError("rotate must be 0, 90, 180 or 270")
        for value, allowed, name in ((self.color_primaries, COLOR_PRIMARIES, "color_primaries"),
                                     (self.color_trc, COLOR_TRC, "color_trc"),
                                     (self.colorspace, COLORSPACES, "colorspace"),
                                     (self.color_range, COLOR_RANGES, "color_range")):
            if value is not None and value not in allowed:
                raise UsageError(f"{name} {value!r} is not one of {', '.join(allowed)}")
        if self.master_display is not None and not _MASTER_DISPLAY.match(self.master_display):
            raise UsageError("master_display must look like G(x,y)B(x,y)R(x,y)WP(x,y)L(max,min)")
        if self.max_cll is not None and not _MAX_CLL.match(self.max_cll):
            raise UsageError("max_cll must look like 1000,400")
        if self.fps is not None and not _FPS.match(self.fps):
            raise UsageError("--fps takes a rate such as 30 or 30000/1001")
        for value, allowed, name in ((self.tune, spec.tunes, "tune"), (self.profile, spec.profiles, "profile"),
                                     (self.level, spec.levels, "level")):
            if value is not None and value not in allowed:
                raise UsageError(f"--{name} {value!r} is not valid for {self.vcodec} (choose from "
                                 f"{', '.join(allowed)})" if allowed else f"{self.vcodec} takes no --{name}")
        if self.codec_params and not spec.params_option:
            raise UsageError(f"{self.vcodec} takes no encoder parameters (--x264-params / --x265-params)")
        if len(self.codec_params) > MAX_CODEC_PARAMS:
            raise UsageError(f"at most {MAX_CODEC_PARAMS} encoder parameters")
        for key, value in self.codec_params:
            param = spec.params.get(key)
            if param is None:
                raise UsageError(f"-{spec.params_option} {key!r} is not one this tool passes on (it may name a "
                                 f"file or fight the chunking); allowed: {', '.join(sorted(spec.params))}")
            if not isinstance(value, str) or not param.check(value):
                what = {"pair": "two whole numbers a,b", "int": "a whole number", "float": "a number"}
                want = (", ".join(param.choices) if param.kind == "choice" else
                        f"{what[param.kind]} in {param.lo:g}..{param.hi:g}")
                raise UsageError(f"-{spec.params_option} {key}={value}: takes {want}")
        if [k for k, _ in self.codec_params] != sorted({k for k, _ in self.codec_params}):
            raise UsageError("encoder parameters must be given once each, sorted by name")

    @property
    def codec(self) -> str:
        """The codec name (h264, vp9, ...) the encoder produces."""
        return ENCODERS[self.vcodec].codec

    def to_wire(self) -> dict[str, Any]:
        wire = {k: v for k, v in asdict(self).items() if v is not None and v is not False
                and not (k == "rotate" and v == 0) and k != "codec_params"}
        if self.codec_params:
            wire["codec_params"] = dict(self.codec_params)
        return wire

    @classmethod
    def from_wire(cls, data: object) -> Settings:
        """Settings from a peer: unknown keys ignored, wrong types or values are a ProtocolError."""
        if not isinstance(data, dict):
            raise ProtocolError("settings must be an object")
        kinds: dict[str, type | tuple[type, ...]] = {"vcodec": str, "crf": (int, float), "vbitrate": int, "maxrate": int, "bufsize": int,
                 "preset": str, "pix_fmt": str, "scale_w": int, "scale_h": int, "fps": str, "rotate": int, "pad_even": bool,
                 "color_primaries": str, "color_trc": str, "colorspace": str, "color_range": str,
                 "master_display": str, "max_cll": str, "tune": str, "profile": str, "level": str}
        values: dict[str, Any] = {}
        for key, kind in kinds.items():
            value = data.get(key)
            if value is None:
                continue
            if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
                raise ProtocolError(f"settings: {key} must be {'a number' if kind == (int, float) else kind.__name__}")
            if isinstance(value, float) and not math.isfinite(value):
                raise ProtocolError(f"settings: {key} must be finite")
            values[key] = whole(value) if key == "crf" else value
        params = data.get("codec_params")
        if params is not None:
            if not isinstance(params, dict) or len(params) > MAX_CODEC_PARAMS or not all(
                    isinstance(k, str) and isinstance(v, str) for k, v in params.items()):
                raise ProtocolError(f"settings: codec_params must be an object of at most {MAX_CODEC_PARAMS} strings")
            values["codec_params"] = tuple(sorted(params.items()))
        try:
            return cls(**values)
        except UsageError as exc:
            raise ProtocolError(f"settings rejected: {exc}") from exc


def whole(value: float) -> float:
    """22.0 -> 22 (an int), 22.5 stays: ffmpeg's argument and the wire carry no '.0'."""
    return int(value) if float(value).is_integer() else value


def parse_rate(text: str) -> int:
    """'2.5M' -> 2500000 bits per second."""
    m = _RATE.match(text.strip())
    if not m:
        raise UsageError(f"bad bit rate {text!r}; use a number with an optional k or M, e.g. 2500k")
    return int(Decimal(m.group(1)) * {"": 1, "k": 1000, "m": 1000**2}[m.group(2).lower()])


def parse_scale(text: str) -> tuple[int, int]:
    """'1280:-2' -> (1280, -2)."""
    w, sep, h = text.partition(":")
    try:
        if not sep:
            raise ValueError
        return int(w), int(h)
    except ValueError:
        raise UsageError(f"bad --scale {text!r}; use W:H, e.g. 1280:-2") from None


def parse_codec_params(text: str) -> tuple[tuple[str, str], ...]:
    """'ref=2:bframes=1' (x264's and x265's own syntax) -> (("bframes", "1"), ("ref", "2")); the
    keys and values are checked by Settings against the encoder's whitelist."""
    pairs: dict[str, str] = {}
    for item in filter(None, text.split(":")):
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise UsageError(f"bad encoder parameter {item!r}: use key=value, joined by ':' (ref=2:bframes=1)")
        if key.strip() in pairs:
            raise UsageError(f"encoder parameter {key.strip()!r} given twice")
        pairs[key.strip()] = value.strip()
    return tuple(sorted(pairs.items()))
