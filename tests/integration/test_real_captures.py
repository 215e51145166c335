"""Real captures (the "real captures" issue): broadcast TS, phone files with edit lists, extreme
VFR, camcorder DV, browser recordings; the shared media set's captures and clips made the way
such files come about. Each is transcoded by `boss.py --local 2` and by one plain ffmpeg run
with the same frame-rate handling (`-fps_mode passthrough`, as the boss keeps timestamps), and
the two outputs are compared with ffprobe:

- the chosen video (its picture size), the decoded frame count, and the frames' timestamps (those
  of the input as a decoder presents them, where the counts agree);
- the video duration within one frame;
- every decodable audio track of the video's program, in order, with its language;
- the first audio track's start and end against the video within one output audio frame of the
  single run's;
- colour (transfer, primaries, bit depth) as the single run keeps it;
- a clean decode, and the warning line expected for each kind of stream dropped.

One documented difference: a capture that starts mid-GOP in HEVC has pictures before its first
keyframe that ffmpeg decodes from references the capture never had (concealment: "Could not find
ref with POC"); the boss skips them (it says so), so its output has those frames fewer.
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
from tests.integration.test_media_matrix import PTS_TOLERANCE, clean_decode, displayed_size, facts, language, tags

pytestmark = pytest.mark.integration

DV_FRAME = "dv-ntsc-480i-dv25-pcm-headclog-1frame.dv"
NULL_MUXER = re.compile(r"\[null @ .*non monotonically increasing dts|Last message repeated")


@pytest.fixture(scope="session")
def capture_clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Files made the way real captures come about (small: <= 6 s, <= 640x360)."""
    d = tmp_path_factory.mktemp("capture-clips")
    h264 = ["-c:v", "libx264", "-preset", "ultrafast", "-g", "25"]
    made: dict[str, Path] = {}

    def make(name: str, *args: str) -> None:
        made[name] = d / name
        ffmpeg(*args, str(d / name))

    def clip(size: str, freq: int, seconds: int = 3) -> list[str]:
        return ["-f", "lavfi", "-i", f"testsrc2=size={size}:rate=25:duration={seconds}",
                "-f", "lavfi", "-i", f"sine=frequency={freq}:duration={seconds}"]

    # two programs, as a multiplex carries them: the smaller first
    make("multiprog.ts", *clip("320x240", 440), *clip("640x360", 660), "-map", "0:v", "-map", "1:a",
         "-map", "2:v", "-map", "3:a", *h264, "-c:a", "mp2",
         "-program", "title=small:st=0:st=1", "-program", "title=big:st=2:st=3")
    # a recorder joining two captures: the clock jumps back by 50,000 s between them
    make("a.ts", *clip("320x240", 440), *h264, "-c:a", "mp2", "-output_ts_offset", "50000")
    make("b.ts", *clip("320x240", 660), *h264, "-c:a", "mp2")
    (d / "clock-jump.ts").write_bytes(made.pop("a.ts").read_bytes() + made.pop("b.ts").read_bytes())
    made["clock-jump.ts"] = d / "clock-jump.ts"
    # an edit list that starts between keyframes, as a phone's trim or `-ss -c copy` makes it
    make("base.mp4", *clip("320x240", 440, 6), "-c:v", "libx264", "-preset", "ultrafast", "-g", "50", "-bf", "2",
         "-c:a", "aac")
    make("editlist.mp4", "-ss", "1.3", "-i", str(made.pop("base.mp4")), "-t", "3.5", "-c", "copy")
    # a camcorder tape: the real DV frame (two 32 kHz PCM pairs; ffmpeg's DV muxer cannot write
    # 32 kHz) 90 times, 3 s
    dv = SHARED_MEDIA / DV_FRAME
    if dv.is_file():
        made["dv-3s.dv"] = d / "dv-3s.dv"
        made["dv-3s.dv"].write_bytes(dv.read_bytes() * 90)
    # extreme VFR: 25 frames at irregular times over 8 s, gaps from 5 ms to 1.5 s
    picks = "+".join(f"eq(n,{n})" for n in (0, 5, 40, 300, 1800, 1805, 1900, 2000, 3500, 3600, 3700,
                                           *range(4000, 4400, 33), 5900, 7500, 7990))
    make("extreme-vfr.mkv", "-f", "lavfi", "-i", f"testsrc2=size=640x360:rate=1000:duration=8,select='{picks}'",
         "-fps_mode", "vfr", "-c:v", "libx264", "-preset", "ultrafast", "-g", "10")
    # AV1 under Dolby Vision's sample entry ('dav1'): this ffmpeg has no decoder for it
    make("av1.mp4", "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25:duration=1", "-c:v", "libaom-av1",
         "-cpu-used", "8", "-crf", "50", "-b:v", "0")
    made["dav1.mp4"] = d / "dav1.mp4"
    made["dav1.mp4"].write_bytes(made.pop("av1.mp4").read_bytes().replace(b"av01", b"dav1"))
    # HDR10+: a PQ HEVC stream with static HDR10 metadata and an ST 2094-40 SEI before every
    # picture, as a grading tool writes them (Debian's x265 is built without HDR10+ support)
    make("pq.hevc", "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25:duration=2", "-pix_fmt", "yuv420p10le",
         "-c:v", "libx265", "-preset", "ultrafast", "-x265-params",
         "log-level=error:aud=1:bframes=0:hdr10=1:colorprim=bt2020:transfer=smpte2084:colormatrix=bt2020nc:"
         "master-display=G(13250,34500)B(7500,3000)R(34000,16000)WP(15635,16450)L(10000000,50):max-cll=1000,400")
    (d / "hdr10plus.hevc").write_bytes(with_hdr10plus(made.pop("pq.hevc").read_bytes()))
    make("hdr10plus.mkv", "-fflags", "+genpts", "-f", "hevc", "-framerate", "25", "-i", str(d / "hdr10plus.hevc"),
         "-c", "copy")
    return made


def with_hdr10plus(annexb: bytes) -> bytes:
    """An HEVC Annex B stream written with access unit delimiters, with an HDR10+ SEI (ITU-T T.35,
    SMPTE ST 2094-40: one window, its brightness rising frame by frame) before each picture."""
    def bits(fields: list[tuple[int, int]]) -> bytes:
        text = "".join(format(value, f"0{width}b") for value, width in fields)
        text += "0" * (-len(text) % 8)
        return bytes(int(text[i:i + 8], 2) for i in range(0, len(text), 8))

    def sei(frame: int) -> bytes:
        maxscl = (1000 + 10 * frame, 800 + 10 * frame, 600)
        fields = [(0xB5, 8), (0x003C, 16), (0x0001, 16), (4, 8), (1, 8),   # T.35 header, application 4 v1
                  (1, 2), (400, 27), (0, 1), *((m, 17) for m in maxscl), (maxscl[1] // 2, 17), (3, 4)]
        for percentage, value in ((1, 10), (50, maxscl[1] // 3), (99, maxscl[1])):
            fields += [(percentage, 7), (value, 17)]
        payload = bits(fields + [(0, 10), (0, 1), (0, 1), (0, 1)])   # no tone mapping or saturation
        rbsp, escaped, zeros = bytes([4, len(payload)]) + payload + b"\x80", bytearray(), 0
        for byte in rbsp:                                 # emulation prevention
            if zeros >= 2 and byte <= 3:
                escaped.append(3)
                zeros = 0
            escaped.append(byte)
            zeros = zeros + 1 if byte == 0 else 0
        return b"\x00\x00\x00\x01" + bytes([39 << 1, 1]) + bytes(escaped)   # prefix SEI NAL

    out, frame, delimited = bytearray(), 0, False
    for nal in (n.rstrip(b"\x00") for n in annexb.split(b"\x00\x00\x01")[1:]):
        kind = (nal[0] >> 1) & 0x3F
        delimited = delimited or kind == 35
        if kind < 32 and delimited:                       # the access unit's first slice
            out += sei(frame)
            frame, delimited = frame + 1, False
        out += b"\x00\x00\x00\x01" + nal
    return bytes(out)


@dataclass(frozen=True)
class Capture:
    src: str                                # "shared:NAME" or a made clip's name
    args: tuple[str, ...] = ()              # boss options beyond --local 2 --preset ultrafast
    single: tuple[str, ...] = ()            # the same choice told to the single run (-map ...)
    size: tuple[int, int] | None = None     # the chosen video's picture
    audio: int = 0                          # audio tracks the output must have
    warns: tuple[str, ...] = ()             # each must match exactly one stderr line
    concealed: int = 0                      # frames ffmpeg conceals before the first keyframe
    jumps: int = 0                          # clock jumps: the gap left at each is a guess (a frame)


def _capture(id_: str, src: str, *, xfail: str | None = None, **kw):
    marks = [pytest.mark.xfail(strict=True, reason=xfail)] if xfail else []
    return pytest.param(Capture(src, **kw), id=id_, marks=marks)


CAPTURES = [
    # 5 programs, 4 of them empty; an AAC PID with no packets; SCTE-35; starts before the first SPS
    _capture("dvb-2160p-hevc-empty-programs", "shared:dvb-2160p-hevc-aac-scte35-5programs-midstream.ts",
             size=(3840, 2160), audio=0, concealed=1,
             warns=(r"dropping #1 audio aac.*nothing decodable", r"dropping #2 data scte_35")),
    _capture("dvb-576i-mpeg2-midgop", "shared:dvb-576i-mpeg2-mp2-midgop-start.ts", size=(720, 576), audio=1,
             warns=(r"skipping 14 frame\(s\) before the first keyframe",)),
    _capture("android14-hlg-audio-first", "shared:android14-1080p-hevc10-hlg-aac-colorchart.mp4",
             size=(1920, 1080), audio=1),
    _capture("iphone14pro-dovi-editlist", "shared:iphone14pro-720p-hevc10-hlg-dovi8-aac-rot90-mebx.mov",
             size=(720, 1280), audio=1, warns=(r"Dolby Vision 8\.4 RPU dropped.*HLG",)),
    _capture("screenrec-chrome-extreme-vfr", "shared:screenrec-chrome-1080p-h264-annexb-vfr-noduration.mkv",
             size=(1920, 1080)),
    _capture("mediarecorder-webm-vfr-opus", "shared:mediarecorder-chrome52-480p-vp8-opus-noduration.webm",
             size=(640, 480), audio=1),
    _capture("dv-camcorder-1-frame", f"shared:{DV_FRAME}", size=(720, 480), audio=2),
    _capture("dv-camcorder-3s", "dv-3s.dv", size=(720, 480), audio=2),
    _capture("dv-camcorder-first-audio", "dv-3s.dv", args=("--audio-streams", "first"), size=(720, 480), audio=1),
    # ffmpeg's default: the largest picture, and the audio of its program
    _capture("multi-program-default", "multiprog.ts", size=(640, 360), audio=1),
    _capture("multi-program-chosen", "multiprog.ts", args=("--program", "1"), single=("-map", "0:p:1"),
             size=(320, 240), audio=1, warns=(r"streams: video #0 .* of program 1",)),
    _capture("video-stream-chosen", "multiprog.ts", args=("--video-stream", "0"), single=("-map", "0:p:1"),
             size=(320, 240), audio=1),
    _capture("ts-clock-jump", "clock-jump.ts", size=(320, 240), audio=1, jumps=1,
             warns=(r"the video's timestamps jump",)),
    _capture("mp4-edit-list-mid-gop", "editlist.mp4", size=(320, 240), audio=1),
    _capture("extreme-vfr-generated", "extreme-vfr.mkv", size=(640, 360)),
    _capture("hdr10plus-pq", "hdr10plus.mkv", size=(320, 240),
             warns=(r"HDR10\+ dynamic metadata dropped.*HDR10 \(PQ\) picture", r"HDR10 mastering metadata .* dropped")),
]


def _probe(path: Path, *args: str) -> dict:
    done = subprocess.run(["ffprobe", "-v", "error", "-of", "json", *args, str(path)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@functools.lru_cache(maxsize=None)
def single_run(src: Path, single: tuple[str, ...], out: Path) -> Path:
    """One plain ffmpeg run: its default stream choice (or `single`), timestamps kept."""
    ffmpeg("-i", str(src), *single, "-c:v", "libx264", "-preset", "ultrafast", "-fps_mode", "passthrough",
           "-c:a", "aac", "-f", "matroska", str(out), timeout=300)
    return out


def audio_edges(path: Path) -> tuple[float, float, float] | None:
    """The first audio track's first timestamp, end, and typical packet duration."""
    packets = _probe(path, "-select_streams", "a:0", "-show_entries", "packet=pts_time,duration_time")["packets"]
    rows = [(float(p["pts_time"]), float(p.get("duration_time") or 0)) for p in packets if "pts_time" in p]
    if not rows:
        return None
    durations = sorted(d for _, d in rows if d > 0)
    return min(t for t, _ in rows), max(t + d for t, d in rows), durations[len(durations) // 2]


def timeline_slip(out: list[float], src: list[float]) -> str | None:
    """Where the output's frame times leave the input's as a decoder presents them, measured
    from the first frame and again after each clock jump (where the gap left is a guess). A
    timestamp the input repeats is moved 1 ms on per repeat (Matroska's tick), as any muxer must."""
    offset, repeats = out[0] - src[0], 0
    for i in range(1, len(src)):
        gap = src[i] - src[i - 1]
        repeats = repeats + 1 if gap == 0 else 0
        if gap < 0 or gap >= 10:
            offset = out[i] - src[i]
        if abs(out[i] - (src[i] + offset)) > PTS_TOLERANCE + 0.001 * repeats:
            return f"frame {i} at {out[i] - out[0]:.4f}s after the first, the input's {src[i] - src[0]:.4f}s"
    return None


def colour(path: Path) -> dict:
    v = _probe(path, "-select_streams", "v:0", "-show_entries",
               "stream=pix_fmt,color_transfer,color_primaries,color_space")["streams"][0]
    return {k: v.get(k) for k in ("pix_fmt", "color_transfer", "color_primaries", "color_space")}


def interlacing(path: Path) -> tuple[str | None, int, int]:
    """The video stream's field order, and how many frames a decoder marks interlaced, and top
    field first."""
    probed = _probe(path, "-select_streams", "v:0", "-show_entries",
                    "stream=field_order:frame=interlaced_frame,top_field_first")
    frames = probed.get("frames", [])
    return (probed["streams"][0].get("field_order"), sum(int(f.get("interlaced_frame", 0)) for f in frames),
            sum(int(f.get("top_field_first", 0)) for f in frames))


@pytest.mark.parametrize("case", CAPTURES)
def test_real_capture(case: Capture, capture_clips: dict[str, Path], tmp_path: Path) -> None:
    if case.src.startswith("shared:"):
        src = SHARED_MEDIA / case.src.split(":", 1)[1]
    else:
        src = capture_clips.get(case.src, tmp_path / "missing")
    if not src.is_file():
        pytest.skip(f"{case.src} not available")
    out = tmp_path / "out.mkv"
    done = run_cli("client/boss.py", str(src), "-o", str(out), "--local", "2", "--preset", "ultrafast",
                   *case.args, cwd=tmp_path)
    assert done.returncode == 0 and "Traceback" not in done.stderr, f"boss failed: {done.stderr.strip()[-1200:]}"
    single = single_run(src, case.single, tmp_path / "single.mkv")
    o, s = facts(out), facts(single)
    problems = []

    if case.size and displayed_size(o.video) != case.size:
        problems.append(f"video {displayed_size(o.video)}, expected the stream of {case.size}")
    if displayed_size(o.video) != displayed_size(s.video):
        problems.append(f"video {displayed_size(o.video)}, the single run's {displayed_size(s.video)}")
    if o.counted != s.counted - case.concealed:
        problems.append(f"{o.counted} frames, the single run {s.counted}"
                        + (f" less {case.concealed} concealed" if case.concealed else ""))
    elif not case.concealed:
        slip = timeline_slip(o.frames, facts(src).frames) if facts(src).counted == o.counted else None
        if slip:
            problems.append(slip)
    if abs(o.duration - s.duration) > (1 + case.concealed + case.jumps) * s.frame + 0.002:
        problems.append(f"video lasts {o.duration:.3f}s, the single run's {s.duration:.3f}s")

    oa = o.streams("audio")
    if len(oa) != case.audio:
        problems.append(f"{len(oa)} audio tracks, expected {case.audio}")
    source_audio = [a for a in facts(src).streams("audio") if int(a.get("sample_rate") or 0) > 0]
    if not case.args and len(oa) == len(source_audio):
        for n, (a, b) in enumerate(zip(source_audio, oa)):
            if language(tags(a)) != language(tags(b)):
                problems.append(f"audio {n} language {tags(b).get('language')!r}, the input's {tags(a).get('language')!r}")
    if oa:
        (o_start, o_end, frame), (s_start, s_end, _) = audio_edges(out), audio_edges(single)
        # against the video's first frame and end, in each file; one audio frame of leeway
        for what, mine, theirs in (("starts", o_start - o.frames[0], s_start - s.frames[0]),
                                   ("ends", o_end - o.video_end, s_end - s.video_end)):
            if abs(mine - theirs) > frame + case.jumps * s.frame + 0.002:
                problems.append(f"audio {what} {mine * 1000:+.0f} ms from the video, the single run "
                                f"{theirs * 1000:+.0f} ms (one audio frame: {frame * 1000:.0f} ms)")

    if colour(out) != colour(single):
        problems.append(f"colour {colour(out)}, the single run's {colour(single)}")
    if interlacing(out) != interlacing(single):        # DV's bottom field first, broadcast's top
        problems.append(f"field order and interlaced frames {interlacing(out)}, the single run's {interlacing(single)}")
    err, _ = clean_decode(out)
    if err and all(NULL_MUXER.match(ln.strip()) for ln in err.splitlines()) and clean_decode(single)[0]:
        err = ""        # the input's repeated audio timestamps, as the single run keeps them too
    if err:
        problems.append(f"decode errors: {err[:300]}")
    lines = done.stderr.splitlines()
    for pattern in case.warns:
        hits = [ln for ln in lines if re.search(pattern, ln)]
        if len(hits) != 1:
            problems.append(f"{len(hits)} lines match {pattern!r}, expected one")
    assert not problems, "; ".join(problems)


def test_no_decoder_is_one_clear_line(capture_clips: dict[str, Path], tmp_path: Path) -> None:
    """What one ffmpeg run cannot transcode either: one line naming the codec, nothing written."""
    out = tmp_path / "out.mkv"
    done = run_cli("client/boss.py", str(capture_clips["dav1.mp4"]), "-o", str(out), "--local", "1", cwd=tmp_path)
    lines = [ln for ln in done.stderr.splitlines() if ln.strip()]
    assert done.returncode != 0 and len(lines) == 1 and "no decoder" in lines[0] and "'dav1'" in lines[0], done.stderr
    assert list(tmp_path.iterdir()) == [], "nothing is written"


def test_hdr10plus_with_x265_keeps_static_metadata(capture_clips: dict[str, Path], tmp_path: Path) -> None:
    """HDR10+ with --vcodec libx265: this x265 cannot write the per-frame metadata, so it is dropped
    with one line saying so, and the output keeps what x265 does write (mastering display, content
    light level, PQ, BT.2020, 10 bits), as one ffmpeg run with the same x265 would."""
    out = tmp_path / "out.mkv"
    done = run_cli("client/boss.py", str(capture_clips["hdr10plus.mkv"]), "-o", str(out), "--local", "2",
                   "--vcodec", "libx265", "--preset", "ultrafast", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-1000:]
    assert len([ln for ln in done.stderr.splitlines() if "HDR10+ dynamic metadata dropped" in ln]) == 1, done.stderr
    assert "mastering metadata" not in done.stderr, done.stderr
    first = _probe(out, "-select_streams", "v:0", "-read_intervals", "%+#1", "-show_entries", "frame_side_data")
    kinds = {side.get("side_data_type") for side in first["frames"][0].get("side_data_list", [])}
    assert {"Mastering display metadata", "Content light level metadata"} <= kinds, kinds
    assert not any("HDR10+" in k for k in kinds), kinds
    assert colour(out) == {"pix_fmt": "yuv420p10le", "color_transfer": "smpte2084", "color_primaries": "bt2020",
                           "color_space": "bt2020nc"}
