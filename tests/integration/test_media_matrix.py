"""The input matrix of the "inputs that must work" issue: every clip of the shared media set plus
small generated clips for the kinds it lacks, each transcoded by `boss.py --local 2` and checked
with ffprobe/ffmpeg (never by trusting the boss's own report, except for the chunk count).

Checks per case: decoded frame count and presentation timestamps (relative to the first frame,
within 1 ms), strictly increasing output timestamps, video duration within one frame, every
audio stream in order with its language/title (and dispositions in Matroska), subtitles kept or
converted as the container needs (bitmap ones dropped with a warning where they cannot go),
data streams dropped with a warning, attachments, chapters (count and start times), global
title/artist, displayed orientation, the A/V end offset within 50 ms of the source's, a clean
decode, and at least two chunks for inputs that last two chunk lengths or more.

Cases that show a gap not built yet are marked xfail(strict=True) with the precise reason.
"""
from __future__ import annotations

import functools
import json
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import SHARED_MEDIA, ffmpeg, run_cli

pytestmark = pytest.mark.integration

BITMAP_SUBS = {"hdmv_pgs_subtitle", "dvd_subtitle", "dvb_subtitle", "xsub"}
TEXT_SUB_FOR = {".mp4": "mov_text", ".m4v": "mov_text", ".mov": "mov_text", ".webm": "webvtt"}
MATROSKA = (".mkv", ".webm")
AV_TOLERANCE = 0.050            # the A/V end offset may move this much from the source's
PTS_TOLERANCE = 0.0011          # 1 ms (Matroska stores milliseconds), plus float printing
WEIRD_NAME = "it's a \"quoted\" clip – ünïcødé 日本語.mkv"


# ---------------------------------------------------------------- generated clips

SRT = """1
00:00:00,200 --> 00:00:01,000
Hello — première ligne

2
00:00:01,200 --> 00:00:02,500
Zweite Zeile, ünïcödé
"""

FFMETADATA = """;FFMETADATA1
title=Matrix test clip
artist=ffdt tests
[CHAPTER]
TIMEBASE=1/1000
START=0
END=1000
title=Start
[CHAPTER]
TIMEBASE=1/1000
START=1000
END=2000
title=Middle
[CHAPTER]
TIMEBASE=1/1000
START=2000
END=3000
title=End
"""


def _video(size: str = "320x240", rate: int = 25, seconds: float = 2) -> list[str]:
    return ["-f", "lavfi", "-i", f"testsrc2=size={size}:rate={rate}:duration={seconds}"]


def _sine(freq: int, seconds: float, rate: int = 48000) -> list[str]:
    return ["-f", "lavfi", "-i", f"sine=frequency={freq}:sample_rate={rate}:duration={seconds}"]


# testsrc2 rounds odd sizes down to even ones: crop a 4:4:4 picture instead
ODD = ["-f", "lavfi", "-i", "testsrc2=size=322x242:rate=25:duration=2,format=yuv444p,crop=321:241:0:0"]


@pytest.fixture(scope="session")
def matrix_clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Small clips (<= 3 s, <= 352x288) for the kinds the shared media set lacks."""
    d = tmp_path_factory.mktemp("matrix-clips")
    (d / "subs.srt").write_text(SRT, encoding="utf-8")
    (d / "meta.txt").write_text(FFMETADATA, encoding="utf-8")
    h264 = ["-c:v", "libx264", "-preset", "ultrafast", "-g", "25", "-pix_fmt", "yuv420p"]
    made: dict[str, Path] = {}

    def make(name: str, *args: str) -> None:
        made[name] = d / name
        ffmpeg(*args, str(d / name))

    # two audio tracks (different codecs, languages, titles, dispositions), a forced srt track,
    # three chapters and global tags
    make("multi-audio-srt-chapters.mkv", *_video(seconds=3), *_sine(440, 3), *_sine(660, 3, 44100),
         "-i", str(d / "subs.srt"), "-i", str(d / "meta.txt"),
         "-map", "0:v", "-map", "1:a", "-map", "2:a", "-map", "3:s", "-map_metadata", "4", "-map_chapters", "4",
         *h264, "-c:a:0", "aac", "-c:a:1", "ac3", "-c:s", "srt",
         "-metadata:s:a:0", "language=eng", "-metadata:s:a:0", "title=English stereo",
         "-metadata:s:a:1", "language=fra", "-metadata:s:a:1", "title=Français commentaire",
         "-metadata:s:s:0", "language=deu", "-metadata:s:s:0", "title=Deutsch",
         "-disposition:a:0", "default", "-disposition:a:1", "0", "-disposition:s:0", "forced")
    # an ASS subtitle track and a font attachment
    font = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")
    if not font.is_file():
        font = d / "font.ttf"
        font.write_bytes(b"\0\1\0\0" + bytes(range(256)) * 8)
    make("ass-font-attachment.mkv", *_video(), *_sine(440, 2), "-i", str(d / "subs.srt"),
         "-map", "0:v", "-map", "1:a", "-map", "2:s", *h264, "-c:a", "aac", "-c:s", "ass",
         "-metadata:s:s:0", "language=eng", "-attach", str(font),
         "-metadata:s:t:0", "mimetype=application/x-truetype-font", "-metadata:s:t:0", "filename=DejaVuSans.ttf")
    make("hevc-10bit.mkv", *_video(), *_sine(440, 2),
         "-c:v", "libx265", "-preset", "ultrafast", "-pix_fmt", "yuv420p10le",
         "-x265-params", "keyint=25:min-keyint=25:log-level=error", "-c:a", "aac")
    # as broadcast captures are: interlaced, open GOPs (B-frames shown before each GOP's I-frame)
    make("mpeg2-interlaced.ts", *_video("352x288", seconds=3), *_sine(440, 3),
         "-c:v", "mpeg2video", "-flags", "+ilme+ildct", "-top", "1", "-g", "12", "-bf", "2", "-b:v", "1500k",
         "-c:a", "mp2")
    # HEVC whose IDRs have decodable leading pictures (RADL): stored after the IDR, shown before it
    make("hevc-radl.mkv", *_video(seconds=3), *_sine(440, 3), "-c:v", "libx265", "-preset", "ultrafast",
         "-x265-params", "keyint=25:min-keyint=25:scenecut=0:bframes=4:b-pyramid=1:open-gop=0:radl=2:log-level=error",
         "-c:a", "aac")
    # x264's intra refresh: no I-frames after the first; recovery points flagged as keyframes
    make("h264-intra-refresh.mkv", *_video(seconds=3), *_sine(440, 3), "-c:v", "libx264", "-preset", "ultrafast",
         "-intra-refresh", "1", "-g", "25", "-c:a", "aac")
    # a broadcast capture cut in the middle of a GOP (at a TS packet boundary): it starts with
    # frames no decoder can show
    cut = d / "mpeg2-cut-mid-gop.ts"
    cut.write_bytes(made["mpeg2-interlaced.ts"].read_bytes()[188 * 1064:])
    made[cut.name] = cut
    make("h264-open-gop.ts", *_video(seconds=3), *_sine(440, 3), "-c:v", "libx264", "-preset", "veryfast",
         "-bf", "3", "-x264-params", "open-gop=1:keyint=12:min-keyint=12:scenecut=0", "-c:a", "aac")
    make("mpeg4-part2.avi", *_video(), *_sine(440, 2), "-c:v", "mpeg4", "-q:v", "5", "-g", "25",
         "-c:a", "libmp3lame")
    # as Xvid/DivX files usually are: B-frames, so AVI packets carry no PTS
    make("mpeg4-part2-bframes.avi", *_video(), *_sine(440, 2), "-c:v", "mpeg4", "-q:v", "5", "-g", "25",
         "-bf", "2", "-c:a", "libmp3lame")
    make("av1.mkv", *_video(), *_sine(440, 2), "-c:v", "libaom-av1", "-cpu-used", "8", "-row-mt", "1",
         "-crf", "45", "-b:v", "0", "-g", "25", "-c:a", "libopus")
    make("vp9.webm", *_video(), *_sine(440, 2), "-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8",
         "-b:v", "300k", "-g", "25", "-c:a", "libopus")
    # H.264 4:2:0 cannot have odd sizes (cropping is in 2-pixel units): odd H.264 is 4:4:4
    make("odd-321x241-h264.mp4", *ODD, *_sine(440, 2),
         "-c:v", "libx264", "-preset", "ultrafast", "-g", "25", "-pix_fmt", "yuv444p", "-c:a", "aac")
    # 4:2:0 at an odd size, as VP9 allows: what an encoder needing even sizes gets by default
    make("odd-321x241-vp9.webm", *ODD, *_sine(440, 2), "-c:v", "libvpx-vp9", "-deadline",
         "realtime", "-cpu-used", "8", "-b:v", "300k", "-g", "25", "-pix_fmt", "yuv420p", "-c:a", "libopus")
    # DVB bitmap subtitles, as in European broadcast captures: ffmpeg can only make bitmap
    # subtitles from bitmap ones, so they come from the Sony clip's PGS track
    sony = SHARED_MEDIA / "sony-a7m3-1080i-h264-ac3-pgs.mts"
    if sony.is_file():
        make("dvb-subtitles.ts", *_video(), *_sine(440, 2), "-i", str(sony), "-map", "0:v", "-map", "1:a",
             "-map", "2:s", *h264, "-c:a", "mp2", "-c:s", "dvbsub", "-metadata:s:s:0", "language=fin")
    make("short-0.5s.mp4", *_video(seconds=0.5), *_sine(440, 0.5), *h264, "-c:a", "aac")
    make(WEIRD_NAME, *_video(), *_sine(440, 2), *h264, "-c:a", "aac")
    return made


# ---------------------------------------------------------------- independent facts

@dataclass
class Facts:
    info: dict
    frames: list[float]           # decoded video frames' timestamps, in output order
    counted: int                  # ffprobe -count_frames
    frame: float                  # typical frame duration
    video_end: float              # last frame's timestamp + its duration
    audio_ends: list[float]       # per audio stream: last packet's timestamp + duration

    def streams(self, kind: str) -> list[dict]:
        return [s for s in self.info["streams"] if s["codec_type"] == kind
                and not s.get("disposition", {}).get("attached_pic")]

    @property
    def video(self) -> dict:
        return self.streams("video")[0]

    @property
    def duration(self) -> float:
        return self.video_end - self.frames[0]


def _json(*args: str) -> dict:
    done = subprocess.run(["ffprobe", "-v", "error", "-of", "json", *args], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _f(text: object) -> float | None:
    try:
        return float(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def _typical(times: list[float]) -> float:
    gaps = sorted(b - a for a, b in zip(times, times[1:]) if b > a)
    return gaps[len(gaps) // 2] if gaps else 0.04


def _end(times_durations: list[tuple[float, float | None]]) -> float:
    """Where the last of these (timestamp, duration) ends; a missing or bogus (one-tick) last
    duration is replaced by the typical gap."""
    times = sorted(t for t, _ in times_durations)
    typical = _typical(times)
    last, dur = max(times_durations, key=lambda p: p[0])
    return last + (dur if dur is not None and dur >= 0.5 * typical else typical)


@functools.lru_cache(maxsize=None)
def facts(path: Path) -> Facts:
    info = _json("-show_format", "-show_streams", "-show_chapters", str(path))
    dec = _json("-select_streams", "v:0", "-count_frames", "-show_entries",
                "stream=nb_read_frames:frame=best_effort_timestamp_time,pkt_duration_time", str(path))
    rows = [(_f(fr.get("best_effort_timestamp_time")), _f(fr.get("pkt_duration_time"))) for fr in dec["frames"]]
    rows = [(t, d) for t, d in rows if t is not None]
    audio_ends = []
    for n in range(sum(1 for s in info["streams"] if s["codec_type"] == "audio")):
        pk = _json("-select_streams", f"a:{n}", "-show_entries", "packet=pts_time,duration_time", str(path))
        prow = [(_f(p.get("pts_time")), _f(p.get("duration_time"))) for p in pk.get("packets", [])]
        prow = [(t, d) for t, d in prow if t is not None]
        audio_ends.append(_end(prow) if prow else float("nan"))
    times = [t for t, _ in rows]
    return Facts(info=info, frames=times, counted=int(dec["streams"][0]["nb_read_frames"]),
                 frame=_typical(sorted(times)), video_end=_end(rows), audio_ends=audio_ends)


def displayed_size(video: dict) -> tuple[int, int]:
    rotation = 0
    for side in video.get("side_data_list", []) or []:
        if side.get("side_data_type") == "Display Matrix":
            rotation = int(round(float(side.get("rotation", 0))))
    w, h = int(video["width"]), int(video["height"])
    return (h, w) if rotation % 180 else (w, h)


def misaligned_frames(out: Path, src: Path, workdir: Path) -> list[int]:
    """Output frames that look much more like the source frame before or after than like their
    own: a chunk whose frame range slipped keeps the frame count but not the pictures. (Near
    repeats in real footage make a neighbour up to 1.6 dB closer even in one ffmpeg run; a slip
    in the office clip costs 10 dB.) Frames are paired by index, not time, in 4:4:4."""
    graph = ("[0:v]settb=1,setpts=N,format=yuv444p,split=3[a0][a1][a2];"
             "[1:v]settb=1,setpts=N,format=yuv444p,split=3[b0][b1][b2];"
             "[b1]trim=start_frame=1,setpts=N[b1t];[a2]trim=start_frame=1,setpts=N[a2t];"
             f"[a0][b0]psnr=stats_file={workdir / 'own.log'}[own];"
             f"[a1][b1t]psnr=stats_file={workdir / 'later.log'}[later];"      # out[i] vs src[i + 1]
             f"[a2t][b2]psnr=stats_file={workdir / 'earlier.log'}[earlier]")  # out[i + 1] vs src[i]
    subprocess.run(["ffmpeg", "-v", "error", "-nostdin", "-i", str(out), "-i", str(src), "-lavfi", graph,
                    *[arg for name in ("own", "later", "earlier") for arg in ("-map", f"[{name}]", "-f", "null", "-")]],
                   check=True, capture_output=True, timeout=300)

    def db(name: str) -> list[float]:
        values = re.findall(r"psnr_avg:(\S+)", (workdir / f"{name}.log").read_text())
        return [float(v) if v != "inf" else 99.0 for v in values]

    own, later, earlier = db("own"), db("later"), db("earlier")
    margin = 3.0
    return [i for i, p in enumerate(own) if (i < len(later) and later[i] > p + margin)
            or (0 < i <= len(earlier) and earlier[i - 1] > p + margin)]


def clean_decode(path: Path) -> tuple[str, bool]:
    """ffmpeg -v error -i OUT -f null - must print nothing. If all it prints is the null muxer's
    complaint about non-monotonic DTS (a VFR stream whose timestamps are fine), decode again
    with the timestamps passed through; the second value says whether that was needed."""
    cmd = ["ffmpeg", "-hide_banner", "-nostdin", "-v", "error", "-i", str(path)]
    done = subprocess.run([*cmd, "-f", "null", "-"], capture_output=True, text=True, timeout=300)
    err = done.stderr.strip()
    lines = err.splitlines()
    if done.returncode == 0 and lines and all(
            re.match(r"\[null @ .*non monotonically increasing dts", ln) or "Last message repeated" in ln
            for ln in lines):
        done = subprocess.run([*cmd, "-fps_mode", "passthrough", "-enc_time_base", "-1", "-f", "null", "-"],
                              capture_output=True, text=True, timeout=300)
        return done.stderr.strip() + ("" if done.returncode == 0 else f" (exit {done.returncode})"), True
    return err + ("" if done.returncode == 0 else f" (exit {done.returncode})"), False


# ISO 639-2's twin codes (ger/deu): mov writes whichever QuickTime's table has
ISO639_TWINS = {"tib": "bod", "wel": "cym", "ger": "deu", "gre": "ell", "baq": "eus", "per": "fas", "arm": "hye",
                "ice": "isl", "geo": "kat", "mac": "mkd", "may": "msa", "bur": "mya", "dut": "nld", "alb": "sqi",
                "chi": "zho", "fre": "fra", "cze": "ces", "rum": "ron", "slo": "slk", "mao": "mri"}


def language(stream_tags: dict[str, str]) -> str:
    code = stream_tags.get("language", "und")
    return ISO639_TWINS.get(code, code)


def tags(stream: dict) -> dict[str, str]:
    return {k.lower(): v for k, v in (stream.get("tags") or {}).items()}


def top_level_boxes(path: Path) -> list[str]:
    """The ISO-BMFF (mp4/mov) top-level box types, in file order."""
    kinds, size = [], path.stat().st_size
    with path.open("rb") as f:
        pos = 0
        while pos + 8 <= size:
            f.seek(pos)
            head = f.read(16)
            length, kind = int.from_bytes(head[:4], "big"), head[4:8].decode("latin-1")
            if length == 1:
                length = int.from_bytes(head[8:16], "big")
            kinds.append(kind)
            if length < 8:
                break
            pos += length
    return kinds


ISO6709 = re.compile(r"^([+-]\d+(?:\.\d+)?)([+-]\d+(?:\.\d+)?)")


def gps(global_tags: dict[str, str]) -> tuple[float, float] | None:
    """Latitude and longitude, from the ISO 6709 location mp4 (©xyz), QuickTime keys or Matroska hold."""
    for key in ("location", "com.apple.quicktime.location.iso6709"):
        found = ISO6709.match(global_tags.get(key, ""))
        if found:
            return float(found[1]), float(found[2])
    return None


# ---------------------------------------------------------------- the matrix

@dataclass(frozen=True)
class Case:
    src: str                      # "shared:NAME" or a generated clip's name
    out: str                      # output file name (its extension picks the container)
    args: tuple[str, ...] = ("--preset", "ultrafast")
    chunk: float = 1.0
    vcodec: str = "h264"
    clear_failure: str | None = None   # a refusal whose stderr matches this is an acceptable result


def option(case: Case, name: str) -> str | None:
    """The value given to a boss option in this case, if any."""
    return case.args[case.args.index(name) + 1] if name in case.args else None


def _case(id_: str, src: str, out: str, *args: str, chunk: float = 1.0, vcodec: str = "h264",
          xfail: str | None = None, clear_failure: str | None = None):
    marks = [pytest.mark.xfail(strict=True, reason=xfail)] if xfail else []
    return pytest.param(Case(src, out, args or ("--preset", "ultrafast"), chunk, vcodec, clear_failure),
                        id=id_, marks=marks)


WEBM = ("--vcodec", "libvpx-vp9", "--preset", "8")
SMALL = ("--preset", "ultrafast", "--scale", "320:-2")

ODD_CLEAR = r"(?i)\b(odd|even|divisible)\b"      # what a clear refusal of an odd size mentions
CASES = [
    # ---- the shared real-footage set
    _case("bbb-vp8-vorbis-webm-to-webm", "shared:bbb-720p-vp8-vorbis.webm", "out.webm", *WEBM, "--scale", "160:-2",
          chunk=5, vcodec="vp9"),
    _case("chrome-h264-aac-mp4-to-mp4", "shared:chrome-ad-270p-h264-aac.mp4", "out.mp4", chunk=4),
    _case("swans-h264-aac-mp4-to-mkv", "shared:swans-phone-720p-h264-aac.mp4", "out.mkv", *SMALL),
    _case("flir-vfr-mp4-to-mp4", "shared:flir-thermal-1080x1440-h264-aac-vfr.mp4", "out.mp4", *SMALL, chunk=2),
    _case("iphone-rot90-h264-mov-to-mp4", "shared:iphone-320p-h264-aac-rot90.mov", "out.mp4",
          "--preset", "ultrafast", "--scale", "160:-2"),
    _case("iphone-rot90-h264-mov-to-mov", "shared:iphone-320p-h264-aac-rot90.mov", "out.mov",
          "--preset", "ultrafast", "--scale", "160:-2"),
    _case("iphone-rot90-hevc-mov-to-mkv", "shared:iphone-720p-hevc-aac-rot90.mov", "out.mkv", *SMALL, chunk=0.5),
    # one keyframe in 45.6 s: frame-range chunks, each decoded from the keyframe, so 10 s chunks (5)
    _case("office-vp9-1-keyframe-webm-to-mkv", "shared:office-720p-vp9-noaudio.webm", "out.mkv", *SMALL, chunk=10),
    _case("pancake-h264-opus-mkv-to-mkv", "shared:pancake-240p-h264-opus.mkv", "out.mkv", chunk=2),
    # 139 s: 20 s chunks (7 of them) keep the run short
    _case("people-h264-noaudio-mp4-to-mkv", "shared:people-432p-h264-noaudio.mp4", "out.mkv", *SMALL, chunk=20),
    _case("sony-1080i-pgs-mts-to-mkv", "shared:sony-a7m3-1080i-h264-ac3-pgs.mts", "out.mkv", *SMALL),
    _case("sony-1080i-pgs-mts-to-mp4", "shared:sony-a7m3-1080i-h264-ac3-pgs.mts", "out.mp4", *SMALL),
    # ---- generated
    _case("multi-audio-srt-chapters-mkv-to-mkv", "multi-audio-srt-chapters.mkv", "out.mkv"),
    _case("multi-audio-srt-chapters-mkv-to-mp4", "multi-audio-srt-chapters.mkv", "out.mp4"),
    _case("multi-audio-srt-chapters-mkv-to-webm", "multi-audio-srt-chapters.mkv", "out.webm", *WEBM,
          "--scale", "160:-2", vcodec="vp9"),
    _case("ass-font-attachment-mkv-to-mkv", "ass-font-attachment.mkv", "out.mkv"),
    _case("hevc-10bit-mkv-to-mkv", "hevc-10bit.mkv", "out.mkv"),
    _case("mpeg2-interlaced-ts-to-mkv", "mpeg2-interlaced.ts", "out.mkv"),
    _case("hevc-radl-mkv-to-mkv", "hevc-radl.mkv", "out.mkv"),
    # one chunk: its first GOP's open B-frames do not decode, so it is not cut by frame range
    _case("mpeg2-cut-mid-gop-ts-to-mkv", "mpeg2-cut-mid-gop.ts", "out.mkv", chunk=2),
    _case("h264-intra-refresh-mkv-to-mp4", "h264-intra-refresh.mkv", "out.mp4"),
    _case("h264-open-gop-ts-to-mp4", "h264-open-gop.ts", "out.mp4", chunk=0.5),
    _case("mpeg4-part2-avi-to-mkv", "mpeg4-part2.avi", "out.mkv"),
    # B-frames across GOPs (open GOPs): its second keyframe is not a clean cut, so frame-range chunks
    _case("mpeg4-part2-bframes-avi-to-mkv", "mpeg4-part2-bframes.avi", "out.mkv"),
    _case("av1-mkv-to-mkv", "av1.mkv", "out.mkv"),
    _case("vp9-webm-to-mp4", "vp9.webm", "out.mp4"),
    # H.264 at an odd size is 4:4:4, which libx264 keeps by default: nothing to pad
    _case("odd-321x241-h264-444-to-mkv", "odd-321x241-h264.mp4", "out.mkv"),
    _case("odd-321x241-h264-to-mp4-yuv420p", "odd-321x241-h264.mp4", "out.mp4", "--preset", "ultrafast",
          "--pix-fmt", "yuv420p", clear_failure=ODD_CLEAR),
    _case("odd-321x241-vp9-420-to-mkv", "odd-321x241-vp9.webm", "out.mkv", clear_failure=ODD_CLEAR),
    # the other encoders, rate control by bit rate, mp4/mov with the index first (+faststart)
    _case("to-av1-svt-mp4", "vp9.webm", "out.mp4", "--vcodec", "libsvtav1", "--preset", "12", vcodec="av1"),
    _case("to-av1-aom-webm", "mpeg4-part2.avi", "out.webm", "--vcodec", "libaom-av1", "--preset", "8",
          "--scale", "160:-2", vcodec="av1"),
    _case("to-hevc-vbitrate-mov", "multi-audio-srt-chapters.mkv", "out.mov", "--vcodec", "libx265", "--preset",
          "ultrafast", "--vbitrate", "300k", "--maxrate", "400k", "--bufsize", "800k", vcodec="hevc"),
    # audio copied as it is (AAC and AC-3 both go in mp4); a new frame rate; constant quality
    _case("acodec-copy-mkv-to-mp4", "multi-audio-srt-chapters.mkv", "out.mp4", "--preset", "ultrafast",
          "--acodec", "copy"),
    _case("fps-30-crf-35-webm-to-mkv", "vp9.webm", "out.mkv", "--preset", "ultrafast", "--fps", "30", "--crf", "35"),
    _case("dvb-subtitles-ts-to-mkv", "dvb-subtitles.ts", "out.mkv"),
    _case("dvb-subtitles-ts-to-mp4", "dvb-subtitles.ts", "out.mp4"),
    _case("short-half-second-mp4-to-mkv", "short-0.5s.mp4", "out.mkv"),
    _case("weird-name-mkv-to-mp4", WEIRD_NAME, "out «it's» \"q\" ü 日本.mp4"),
]


@pytest.mark.parametrize("case", CASES)
def test_media_matrix(case: Case, matrix_clips: dict[str, Path], tmp_path: Path,
                      record_property) -> None:
    if case.src.startswith("shared:"):
        src = SHARED_MEDIA / case.src.split(":", 1)[1]
        if not src.exists():
            pytest.skip(f"{src} not available")
    elif case.src in matrix_clips:
        src = matrix_clips[case.src]
    else:
        pytest.skip(f"{case.src} not generated (needs {SHARED_MEDIA})")
    out, report = tmp_path / case.out, tmp_path / "report.json"
    done = run_cli("client/boss.py", str(src), "-o", str(out), "--local", "2", "--quiet", "--report", str(report),
                   "--chunk-seconds", f"{case.chunk:g}", *case.args, cwd=tmp_path)
    if done.returncode != 0 and case.clear_failure:
        lines = [ln for ln in done.stderr.strip().splitlines() if ln.strip()]
        assert not out.exists(), "a failed job leaves nothing at OUTPUT"
        assert lines and re.search(case.clear_failure, lines[-1]) and "Traceback" not in done.stderr, \
            f"refused without a clear message: {done.stderr.strip()[-600:]}"
        return
    assert done.returncode == 0, f"boss failed: {done.stderr.strip()[-1500:]}"
    assert "Traceback" not in done.stderr, done.stderr
    problems = check_output(src, out, case, done.stderr, json.loads(report.read_text()), record_property)
    assert not problems, "; ".join(problems)


def check_output(src: Path, out: Path, case: Case, stderr: str, report: dict, record_property) -> list[str]:
    s, o = facts(src), facts(out)
    ext = out.suffix.lower()
    problems: list[str] = []
    record_property("facts", {
        "frames": [s.counted, o.counted], "duration": [round(s.duration, 4), round(o.duration, 4)],
        "av_end_ms": [[round((e - f.video_end) * 1000, 1) for e in f.audio_ends] for f in (s, o)],
        "display": [displayed_size(s.video), displayed_size(o.video)],
        "streams": [[x["codec_type"][0] + ":" + x.get("codec_name", "?") for x in f.info["streams"]] for f in (s, o)],
        "chunks": sum(w["chunks"] for w in report["workers"].values())})
    warnings = [ln for ln in stderr.splitlines() if re.search(r"(?i)\bdrop", ln)]

    # ---- video frames and timestamps (with --fps: the new rate's frames, evenly spaced)
    fps = option(case, "--fps")
    chunks = sum(w["chunks"] for w in report["workers"].values())
    if fps:
        expected = round(s.duration * float(fps))
        if abs(o.counted - expected) > chunks + 1:
            problems.append(f"{o.counted} frames at {fps} fps, expected about {expected}")
        gaps = [b - a for a, b in zip(o.frames, o.frames[1:])]
        if gaps and max(abs(g - 1 / float(fps)) for g in gaps) > PTS_TOLERANCE:
            problems.append(f"frames are not evenly spaced at {fps} fps: gaps {min(gaps):.4f}-{max(gaps):.4f}s")
    elif o.counted != s.counted:
        problems.append(f"{o.counted} frames decode from the output, {s.counted} from the input")
    if any(b <= a for a, b in zip(o.frames, o.frames[1:])):
        problems.append("output frame timestamps are not strictly increasing")
    if not fps and len(o.frames) == len(s.frames):
        rel_s = [t - s.frames[0] for t in s.frames]
        rel_o = [t - o.frames[0] for t in o.frames]
        worst = max(range(len(rel_s)), key=lambda i: abs(rel_o[i] - rel_s[i]))
        if abs(rel_o[worst] - rel_s[worst]) > PTS_TOLERANCE:
            problems.append(f"frame {worst} is at {rel_o[worst]:.4f}s after the first, "
                            f"the input's at {rel_s[worst]:.4f}s")
    if abs(o.duration - s.duration) > s.frame + 0.002:
        problems.append(f"video lasts {o.duration:.3f}s, the input's {s.duration:.3f}s")
    if o.video["codec_name"] != case.vcodec:
        problems.append(f"video codec {o.video['codec_name']}, expected {case.vcodec}")

    # ---- the same pictures, frame for frame (where the picture is not resized)
    if chunks > 1 and displayed_size(s.video) == displayed_size(o.video) and len(o.frames) == len(s.frames):
        slipped = misaligned_frames(out, src, out.parent)
        if slipped:
            problems.append(f"{len(slipped)} frames look like a neighbour of their source frame, first {slipped[:5]}")

    # ---- orientation: portrait stays portrait, landscape landscape, same aspect
    sw, sh = displayed_size(s.video)
    ow, oh = displayed_size(o.video)
    if (sw < sh) != (ow < oh) or abs(ow / oh - sw / sh) > 0.03 * sw / sh:
        problems.append(f"displayed as {ow}x{oh}, the input as {sw}x{sh}")
    elif "--scale" not in case.args and not (sw <= ow <= sw + 1 and sh <= oh <= sh + 1):
        # not resized: the whole picture (padded to an even size at most), nothing cut off
        problems.append(f"displayed as {ow}x{oh}, the input as {sw}x{sh}: picture lost")

    # ---- audio: every stream, in order, language and title; the A/V end offset
    sa, oa = s.streams("audio"), o.streams("audio")
    if len(oa) != len(sa):
        problems.append(f"{len(oa)} audio streams, the input has {len(sa)}")
    if option(case, "--acodec") == "copy" and [a["codec_name"] for a in sa] != [b["codec_name"] for b in oa]:
        problems.append(f"--acodec copy made {[b['codec_name'] for b in oa]} of {[a['codec_name'] for a in sa]}")
    for n, (a, b) in enumerate(zip(sa, oa)):
        ta, tb = tags(a), tags(b)
        if language(ta) != language(tb):
            problems.append(f"audio {n} language {tb.get('language')!r}, the input's {ta.get('language')!r}")
        if "title" in ta and ta["title"] not in (tb.get("title"), tb.get("handler_name")):
            problems.append(f"audio {n} title {tb.get('title', tb.get('handler_name'))!r}, "
                            f"the input's {ta['title']!r}")
        if ext in MATROSKA:
            for flag in ("default", "forced"):
                if a.get("disposition", {}).get(flag) != b.get("disposition", {}).get(flag):
                    problems.append(f"audio {n} disposition {flag} not kept")
        s_off = s.audio_ends[n] - s.video_end
        o_off = o.audio_ends[n] - o.video_end
        if abs(o_off - s_off) > AV_TOLERANCE:
            problems.append(f"audio {n} ends {o_off * 1000:+.0f} ms from the video end, "
                            f"the input's {s_off * 1000:+.0f} ms")

    # ---- subtitles: kept (converted where the container needs it); bitmap ones dropped with a warning
    expected_subs = []
    for sub in s.streams("subtitle"):
        bitmap = sub["codec_name"] in BITMAP_SUBS
        if bitmap and ext not in (".mkv",):
            if not any("subtitle" in ln.lower() for ln in warnings):
                problems.append(f"bitmap subtitle {sub['codec_name']} dropped without a warning line")
            continue
        codec = sub["codec_name"] if (bitmap or ext == ".mkv") else TEXT_SUB_FOR[ext]
        expected_subs.append((sub, codec))
    osubs = o.streams("subtitle")
    if [c for _, c in expected_subs] != [x["codec_name"] for x in osubs]:
        problems.append(f"subtitles {[x['codec_name'] for x in osubs]}, expected {[c for _, c in expected_subs]}")
    else:
        for n, ((a, _), b) in enumerate(zip(expected_subs, osubs)):
            ta, tb = tags(a), tags(b)
            if language(ta) != language(tb):
                problems.append(f"subtitle {n} language {tb.get('language')!r}, the input's {ta.get('language')!r}")
            if "title" in ta and ta["title"] not in (tb.get("title"), tb.get("handler_name")):
                problems.append(f"subtitle {n} title {tb.get('title')!r}, the input's {ta['title']!r}")
            if ext in MATROSKA and a.get("disposition", {}).get("forced") != b.get("disposition", {}).get("forced"):
                problems.append(f"subtitle {n} forced disposition not kept")

    # ---- data streams: dropped with a warning; attachments kept in Matroska
    if s.streams("data") and not warnings:
        problems.append(f"{len(s.streams('data'))} data stream(s) dropped without a warning line")
    extra_data = [x for x in o.streams("data")
                  if not (ext in (".mp4", ".mov", ".m4v") and s.info.get("chapters"))]   # mp4 chapter track
    if extra_data:
        problems.append(f"data streams in the output: {[x.get('codec_name') for x in extra_data]}")
    s_att, o_att = s.streams("attachment"), o.streams("attachment")
    if ext == ".mkv":
        if [tags(x).get("filename") for x in o_att] != [tags(x).get("filename") for x in s_att]:
            problems.append(f"attachments {[tags(x).get('filename') for x in o_att]}, "
                            f"the input's {[tags(x).get('filename') for x in s_att]}")
    elif s_att and not warnings:
        problems.append("attachments dropped without a warning line")

    # ---- chapters (count and where they start, relative to the first frame) and global tags
    sc, oc = s.info.get("chapters", []), o.info.get("chapters", [])
    if len(oc) != len(sc):
        problems.append(f"{len(oc)} chapters, the input has {len(sc)}")
    else:
        for n, (a, b) in enumerate(zip(sc, oc)):
            rs = max(0.0, float(a["start_time"]) - s.frames[0])
            ro = max(0.0, float(b["start_time"]) - o.frames[0])
            if abs(rs - ro) > s.frame:
                problems.append(f"chapter {n} starts {ro:.3f}s after the first frame, the input's {rs:.3f}s")
    sg, og = tags(s.info["format"]), tags(o.info["format"])
    for key in ("title", "artist"):
        if key in sg and og.get(key) != sg[key]:
            problems.append(f"global {key} {og.get(key)!r}, the input's {sg[key]!r}")
    if gps(sg) and gps(og) != gps(sg):
        problems.append(f"GPS location {gps(og)}, the input's {gps(sg)}")

    # ---- mp4/mov: the index (moov) before the media (mdat), so players start before the end
    if out.suffix in (".mp4", ".mov") and top_level_boxes(out).index("moov") > top_level_boxes(out).index("mdat"):
        problems.append(f"{out.suffix} without +faststart: boxes {top_level_boxes(out)}")

    # ---- a clean decode
    err, passthrough = clean_decode(out)
    if passthrough:
        record_property("null_muxer_dts_complaint", True)
    if err:
        problems.append(f"decode errors: {err[:300]}")

    # ---- split into several chunks when the input lasts two chunk lengths or more
    if s.duration >= 2 * case.chunk and chunks < 2:
        problems.append(f"{s.duration:.1f}s at --chunk-seconds {case.chunk:g} made {chunks} chunk(s)")
    return problems
