"""ffmpeg argument builders (common/ffmpeg.py): pure functions, checked as golden lists."""
from __future__ import annotations

from pathlib import Path

import pytest

from ffdt.common.ffmpeg import (MuxPlan, Tools, audio_cmd, concat_list, encode_cmd, mux_cmd, segment_cmd,
                                warmup_frames, warmup_parts)
from ffdt.common.errors import UsageError
from ffdt.common.settings import Settings

TOOLS = Tools("ffmpeg", "ffprobe")
BASE = ["-hide_banner", "-nostdin", "-loglevel", "error", "-y"]


def values_of(cmd: list[str], option: str) -> list[str]:
    """Every value given to `option` in `cmd`, in order."""
    return [cmd[i + 1] for i, arg in enumerate(cmd[:-1]) if arg == option]


def value_of(cmd: list[str], option: str) -> str:
    found = values_of(cmd, option)
    assert len(found) == 1, f"{option} given {len(found)} times in {cmd}"
    return found[0]


def inputs_of(cmd: list[str]) -> list[str]:
    return values_of(cmd, "-i")


# ---------------------------------------------------------------- segment

def test_segment_cmd_golden():
    cmd = segment_cmd(TOOLS, Path("/in/movie.mp4"), Path("/work/src/chunk_%05d.mkv"), [3.0, 6.5])
    assert cmd == [
        "ffmpeg", *BASE, "-fflags", "+genpts", "-i", "file:/in/movie.mp4",
        "-map", "0:v:0", "-an", "-sn", "-dn",
        "-c", "copy", "-f", "segment", "-reset_timestamps", "1",
        "-segment_time_delta", "0.001", "-segment_format", "matroska",
        "-segment_times", "3.000000,6.500000",
        "file:/work/src/chunk_%05d.mkv",
    ]


def test_segment_cmd_is_video_only_stream_copy():
    cmd = segment_cmd(TOOLS, Path("in.mkv"), Path("chunk_%05d.mkv"), [2.0])
    assert values_of(cmd, "-map") == ["0:v:0"]          # nothing but the first video stream
    assert "-an" in cmd
    assert value_of(cmd, "-c") == "copy"
    assert not any(arg.startswith(("-c:v", "-vcodec")) for arg in cmd)   # never re-encodes


def test_segment_times_keep_their_precision_and_order():
    cuts = [1 / 3, 2.0, 100.123456]
    cmd = segment_cmd(TOOLS, Path("in.mkv"), Path("c_%05d.mkv"), cuts)
    times = value_of(cmd, "-segment_times").split(",")
    assert len(times) == 3
    assert all(abs(float(t) - c) < 1e-6 for t, c in zip(times, cuts))
    assert "e" not in value_of(cmd, "-segment_times")   # no scientific notation for ffmpeg to misread


def test_segment_cmd_without_cuts_makes_one_chunk():
    cmd = segment_cmd(TOOLS, Path("in.mkv"), Path("c_%05d.mkv"), [])
    assert "-segment_times" not in cmd
    assert float(value_of(cmd, "-segment_time")) >= 1e6     # longer than any input


def test_input_named_like_an_option_is_protected():
    cmd = segment_cmd(TOOLS, Path("-x.mp4"), Path("out_%05d.mkv"), [])
    assert inputs_of(cmd) == ["file:-x.mp4"]
    assert "-x.mp4" not in cmd


def test_input_named_like_a_protocol_is_protected():
    cmd = encode_cmd(TOOLS, Path("http:evil.mkv"), Path("concat:a|b.mkv"), Settings())
    assert inputs_of(cmd) == ["file:http:evil.mkv"]
    assert cmd[-1] == "file:concat:a|b.mkv"


# ---------------------------------------------------------------- encode

def test_encode_cmd_defaults_golden():
    cmd = encode_cmd(TOOLS, Path("/w/chunk_00003.mkv"), Path("/w/chunk_00003.enc.mkv"), Settings())
    assert cmd == [
        "ffmpeg", *BASE, "-nostats", "-progress", "pipe:1",
        "-f", "matroska", "-protocol_whitelist", "file",       # the boss's bytes: no playlist, no protocol
        "-i", "file:/w/chunk_00003.mkv",
        "-map", "0:v:0", "-an", "-sn", "-dn", "-map_metadata", "-1",
        "-fps_mode", "passthrough", "-enc_time_base", "-1",     # every frame keeps its own timestamp
        "-c:v", "libx264", "-crf", "23",
        "-fflags", "+bitexact",        # no random UID or date: one build's encodes of a chunk are equal
        "-f", "matroska", "file:/w/chunk_00003.enc.mkv",
    ]


def test_encode_cmd_uses_file_paths_for_input_and_output():
    cmd = encode_cmd(TOOLS, Path("-in.mkv"), Path("-out.mkv"), Settings())
    assert inputs_of(cmd) == ["file:-in.mkv"]
    assert cmd[-1] == "file:-out.mkv"
    assert cmd[-3:-1] == ["-f", "matroska"]


def test_encode_cmd_keeps_timestamps_when_nothing_changes_the_frames():
    cmd = encode_cmd(TOOLS, Path("a.mkv"), Path("b.mkv"), Settings(crf=20, preset="slow"))
    assert value_of(cmd, "-fps_mode") == "passthrough"
    assert "-vf" not in cmd and "-r" not in cmd


def test_encode_cmd_builds_one_filter_chain_for_scale_and_fps():
    cmd = encode_cmd(TOOLS, Path("a.mkv"), Path("b.mkv"), Settings(scale_w=1280, scale_h=-2, fps="30000/1001"))
    assert value_of(cmd, "-vf") == "scale=1280:-2,fps=30000/1001"
    assert "-r" not in cmd and "-s" not in cmd      # the filter chain is the only place they are set


def test_encode_cmd_scale_only_and_fps_only():
    scale = encode_cmd(TOOLS, Path("a.mkv"), Path("b.mkv"), Settings(scale_w=640, scale_h=360))
    assert value_of(scale, "-vf") == "scale=640:360"
    fps = encode_cmd(TOOLS, Path("a.mkv"), Path("b.mkv"), Settings(fps="25"))
    assert value_of(fps, "-vf") == "fps=25"


@pytest.mark.parametrize("vcodec, crf", [("libx264", "23"), ("libx265", "28")])
def test_encode_cmd_default_crf_is_the_encoders_own_default(vcodec, crf):
    cmd = encode_cmd(TOOLS, Path("a.mkv"), Path("b.mkv"), Settings(vcodec=vcodec))
    assert value_of(cmd, "-c:v") == vcodec
    assert value_of(cmd, "-crf") == crf


@pytest.mark.parametrize("vcodec", ["libvpx-vp9", "libsvtav1", "libaom-av1"])
def test_encode_cmd_always_sets_a_quality_for_other_encoders(vcodec):
    cmd = encode_cmd(TOOLS, Path("a.mkv"), Path("b.mkv"), Settings(vcodec=vcodec))
    lo, hi = 0, 63
    assert lo <= int(value_of(cmd, "-crf")) <= hi


def test_encode_cmd_passes_the_requested_crf_once():
    cmd = encode_cmd(TOOLS, Path("a.mkv"), Path("b.mkv"), Settings(vcodec="libx265", crf=18))
    assert value_of(cmd, "-crf") == "18"


def test_vp9_constant_quality_needs_zero_bitrate():
    cmd = encode_cmd(TOOLS, Path("a.mkv"), Path("b.webm"), Settings(vcodec="libvpx-vp9", crf=31))
    assert value_of(cmd, "-crf") == "31"
    assert value_of(cmd, "-b:v") == "0"
    assert cmd.index("-b:v") > cmd.index("-c:v")


def test_vp9_with_a_bitrate_uses_it_and_no_crf():
    cmd = encode_cmd(TOOLS, Path("a.mkv"), Path("b.webm"),
                     Settings(vcodec="libvpx-vp9", vbitrate=2_500_000, maxrate=3_000_000, bufsize=5_000_000))
    assert value_of(cmd, "-b:v") == "2500000"
    assert "-crf" not in cmd
    assert value_of(cmd, "-maxrate") == "3000000"
    assert value_of(cmd, "-bufsize") == "5000000"


def test_bitrate_mode_for_x264_has_no_crf():
    cmd = encode_cmd(TOOLS, Path("a.mkv"), Path("b.mkv"), Settings(vbitrate=800_000))
    assert value_of(cmd, "-b:v") == "800000"
    assert "-crf" not in cmd


@pytest.mark.parametrize("vcodec, preset", [("libvpx-vp9", "4"), ("libaom-av1", "6")])
def test_vp9_and_aom_presets_become_cpu_used(vcodec, preset):
    cmd = encode_cmd(TOOLS, Path("a.mkv"), Path("b.mkv"), Settings(vcodec=vcodec, preset=preset))
    assert value_of(cmd, "-cpu-used") == preset
    assert "-preset" not in cmd


@pytest.mark.parametrize("vcodec, preset", [("libx264", "veryfast"), ("libx265", "slow"), ("libsvtav1", "8")])
def test_x26x_and_svt_presets_are_presets(vcodec, preset):
    cmd = encode_cmd(TOOLS, Path("a.mkv"), Path("b.mkv"), Settings(vcodec=vcodec, preset=preset))
    assert value_of(cmd, "-preset") == preset
    assert "-cpu-used" not in cmd


def test_mpeg4_uses_qscale_not_crf():
    default = encode_cmd(TOOLS, Path("a.mkv"), Path("b.mkv"), Settings(vcodec="mpeg4"))
    assert "-crf" not in default and 1 <= int(value_of(default, "-q:v")) <= 31
    chosen = encode_cmd(TOOLS, Path("a.mkv"), Path("b.mkv"), Settings(vcodec="mpeg4", crf=5))
    assert value_of(chosen, "-q:v") == "5"
    bitrate = encode_cmd(TOOLS, Path("a.mkv"), Path("b.mkv"), Settings(vcodec="mpeg4", vbitrate=1_000_000))
    assert "-q:v" not in bitrate and value_of(bitrate, "-b:v") == "1000000"


def test_encode_cmd_pix_fmt_and_threads():
    cmd = encode_cmd(TOOLS, Path("a.mkv"), Path("b.mkv"), Settings(pix_fmt="yuv420p10le"), threads=4)
    assert value_of(cmd, "-pix_fmt") == "yuv420p10le"
    assert value_of(cmd, "-threads") == "4"
    assert "-threads" not in encode_cmd(TOOLS, Path("a.mkv"), Path("b.mkv"), Settings())


def test_encode_cmd_is_video_only():
    cmd = encode_cmd(TOOLS, Path("a.mkv"), Path("b.mkv"), Settings())
    assert values_of(cmd, "-map") == ["0:v:0"]
    assert {"-an", "-sn", "-dn"} <= set(cmd)


# ---------------------------------------------------------------- audio

def test_audio_cmd_golden():
    assert audio_cmd(TOOLS, Path("/in/movie.mp4"), Path("/w/audio.mka"), "aac", 192_000) == [
        "ffmpeg", *BASE, "-i", "file:/in/movie.mp4", "-map", "0:a", "-vn", "-sn", "-dn",
        "-c:a", "aac", "-b:a", "192000", "-f", "matroska", "file:/w/audio.mka",
    ]


def test_audio_copy_ignores_a_bitrate():
    cmd = audio_cmd(TOOLS, Path("in.mp4"), Path("a.mka"), "copy", 192_000)
    assert value_of(cmd, "-c:a") == "copy"
    assert "-b:a" not in cmd


def test_audio_without_bitrate_lets_the_encoder_choose():
    assert "-b:a" not in audio_cmd(TOOLS, Path("in.mp4"), Path("a.mka"), "libopus", None)


# ---------------------------------------------------------------- mux

def full_plan(**overrides) -> MuxPlan:
    plan = dict(concat_list=Path("/w/list.ffconcat"), source=Path("/in/movie.mkv"), source_offset=-0.04,
                video_index=0, audio=Path("/w/audio.mka"), audio_offset=0.021, audio_count=2,
                subtitles=((3, "copy"), (4, "mov_text")), attachments=(), muxer="mp4")
    plan.update(overrides)
    return MuxPlan(**plan)


def test_mux_cmd_inputs_are_concat_audio_then_source_with_their_offsets():
    cmd = mux_cmd(TOOLS, full_plan(), Path("/out/movie.mp4"))
    assert inputs_of(cmd) == ["file:/w/list.ffconcat", "file:/w/audio.mka", "file:/in/movie.mkv"]
    concat = cmd.index("file:/w/list.ffconcat")
    assert cmd[concat - 7:concat - 1] == ["-f", "concat", "-safe", "0", "-protocol_whitelist", "file"]
    for path, offset in (("file:/w/audio.mka", 0.021), ("file:/in/movie.mkv", -0.04)):
        i = cmd.index(path)
        assert cmd[i - 1] == "-i" and cmd[i - 3] == "-itsoffset"   # -itsoffset applies to the next input
        assert float(cmd[i - 2]) == pytest.approx(offset)


def test_mux_cmd_maps_video_audio_and_subtitles():
    cmd = mux_cmd(TOOLS, full_plan(), Path("/out/movie.mp4"))
    assert values_of(cmd, "-map") == ["0:v:0", "1:a", "2:3", "2:4"]
    assert value_of(cmd, "-map_chapters") == "2"          # chapters come from the source (input 2)
    assert cmd[-3:] == ["-f", "mp4", "file:/out/movie.mp4"]


def test_mux_cmd_copies_metadata_stream_by_stream():
    cmd = mux_cmd(TOOLS, full_plan(video_index=1), Path("/out/movie.mp4"))
    assert value_of(cmd, "-map_metadata") == "2"                       # global tags from the source
    assert value_of(cmd, "-map_metadata:s:v:0") == "2:s:1"             # the source's video stream #1
    assert value_of(cmd, "-map_metadata:s:a:0") == "1:s:a:0"           # audio tags from the audio file
    assert value_of(cmd, "-map_metadata:s:a:1") == "1:s:a:1"
    assert "-map_metadata:s:a:2" not in cmd
    assert value_of(cmd, "-map_metadata:s:s:0") == "2:s:3"
    assert value_of(cmd, "-map_metadata:s:s:1") == "2:s:4"


def test_mux_cmd_sets_extra_global_tags_after_copying_the_sources():
    cmd = mux_cmd(TOOLS, full_plan(tags=(("location", "+32.0929+034.8620+028.516/"),)), Path("/out/movie.mp4"))
    assert values_of(cmd, "-metadata")[-1] == "location=+32.0929+034.8620+028.516/"
    assert cmd.index("-map_metadata") < len(cmd) - cmd[::-1].index("-metadata")


def test_mux_cmd_converts_only_subtitles_that_need_it():
    cmd = mux_cmd(TOOLS, full_plan(), Path("/out/movie.mp4"))
    assert value_of(cmd, "-c") == "copy"
    assert value_of(cmd, "-c:s:1") == "mov_text"
    assert "-c:s:0" not in cmd                           # the first subtitle is copied
    assert cmd.index("-c:s:1") > cmd.index("-c")         # the specific option overrides the general one


@pytest.mark.parametrize("muxer, faststart", [("mp4", True), ("mov", True), ("matroska", False), ("webm", False)])
def test_faststart_only_for_mp4_and_mov(muxer, faststart):
    cmd = mux_cmd(TOOLS, full_plan(muxer=muxer, subtitles=()), Path("out"))
    assert ("-movflags" in cmd) is faststart
    if faststart:
        assert value_of(cmd, "-movflags") == "+faststart"
    assert cmd[-3:-1] == ["-f", muxer]


def test_mux_cmd_without_audio_reads_the_source_as_input_1():
    cmd = mux_cmd(TOOLS, full_plan(audio=None, audio_count=0, subtitles=((2, "copy"),)), Path("o.mkv"))
    assert inputs_of(cmd) == ["file:/w/list.ffconcat", "file:/in/movie.mkv"]
    assert values_of(cmd, "-map") == ["0:v:0", "1:2"]
    assert value_of(cmd, "-map_metadata") == "1"
    assert value_of(cmd, "-map_metadata:s:v:0") == "1:s:0"
    assert value_of(cmd, "-map_chapters") == "1"
    assert not any(arg.startswith("-map_metadata:s:a") for arg in cmd)
    assert values_of(cmd, "-itsoffset") == ["-0.040000"]


def test_mux_cmd_maps_each_attachment_with_its_tags():
    cmd = mux_cmd(TOOLS, full_plan(attachments=(5, 6), muxer="matroska"), Path("o.mkv"))
    assert {"2:5", "2:6"} <= set(values_of(cmd, "-map"))
    # Matroska refuses an attachment without its filename tag: the tags must be mapped too
    assert value_of(cmd, "-map_metadata:s:t:0") == "2:s:5" and value_of(cmd, "-map_metadata:s:t:1") == "2:s:6"
    plain = mux_cmd(TOOLS, full_plan(muxer="matroska"), Path("o.mkv"))
    assert not any(v in ("2:5", "2:6") for v in values_of(plain, "-map"))


def test_mux_cmd_sets_the_stream_tags_asked_for():
    cmd = mux_cmd(TOOLS, full_plan(stream_tags=(("a", 1, "handler_name", "Director's commentary"),
                                                ("s", 0, "language", "ger"))), Path("o.mp4"))
    assert value_of(cmd, "-metadata:s:a:1") == "handler_name=Director's commentary"
    assert value_of(cmd, "-metadata:s:s:0") == "language=ger"


# ---------------------------------------------------------------- concat list

def ffconcat_unquote(token: str) -> str:
    """How the concat demuxer reads one token (av_get_token): '...' is literal, \\x escapes x."""
    out, i, quoted = [], 0, False
    while i < len(token):
        c = token[i]
        if quoted:
            if c == "'":
                quoted = False
            else:
                out.append(c)
        elif c == "'":
            quoted = True
        elif c == "\\":
            i += 1
            out.append(token[i])
        else:
            out.append(c)
        i += 1
    assert not quoted, f"unbalanced quotes in {token!r}"
    return "".join(out)


def test_concat_list_golden():
    assert concat_list(["chunk_00000.mkv", "chunk_00001.mkv"]) == (
        "ffconcat version 1.0\n"
        "file 'chunk_00000.mkv'\n"
        "file 'chunk_00001.mkv'\n")


def test_concat_list_escapes_a_single_quote_by_closing_and_reopening():
    text = concat_list(["it's.mkv"])
    assert text.splitlines()[1] == "file 'it'\\''s.mkv'"


AWKWARD = ["it's.mkv", "two words.mkv", "'quoted'.mkv", "trailing\\.mkv", "ünïcødé ☃.mkv", "a''b.mkv",
           "-dash.mkv"]


def test_concat_list_names_read_back_exactly():
    lines = concat_list(AWKWARD).splitlines()
    assert lines[0] == "ffconcat version 1.0"
    assert len(lines) == len(AWKWARD) + 1                # one line per file, in order
    for name, line in zip(AWKWARD, lines[1:]):
        keyword, _, token = line.partition(" ")
        assert keyword == "file"
        assert ffconcat_unquote(token) == name



def test_concat_list_durations_follow_their_files():
    text = concat_list(["chunk_00000.mkv", "chunk_00001.mkv", "chunk_00002.mkv"], [3.0, None])
    assert text.splitlines() == [
        "ffconcat version 1.0",
        "file 'chunk_00000.mkv'",
        "duration 3.000000",
        "file 'chunk_00001.mkv'",          # None: no duration directive
        "file 'chunk_00002.mkv'",          # past the end of the durations: none either
    ]


def test_concat_list_duration_keeps_microseconds():
    text = concat_list(["a.mkv"], [1001 / 30000 * 7])
    duration = [line for line in text.splitlines() if line.startswith("duration ")]
    assert len(duration) == 1
    assert float(duration[0].split()[1]) == pytest.approx(1001 / 30000 * 7, abs=1e-6)
    assert "e" not in duration[0]


def test_encode_cmd_frame_range_turn_and_pad_filters_in_order():
    from pathlib import Path as _P

    from ffdt.common.ffmpeg import Tools as _T, encode_cmd as _enc
    from ffdt.common.settings import Settings as _S
    cmd = _enc(_T("ffmpeg", "ffprobe"), _P("/w/in.mkv"), _P("/w/out.mkv"),
               _S(rotate=90, pad_even=True, scale_w=320, scale_h=-2), frame_range=(50, 25))
    chain = cmd[cmd.index("-vf") + 1].split(",")
    assert chain == ["trim=start_frame=50:end_frame=75", "setpts=PTS-STARTPTS", "transpose=clock",
                     "pad=ceil(iw/2)*2:ceil(ih/2)*2", "scale=320:-2"]


def test_warm_up_starts_earlier_forces_an_idr_and_splits_there():
    cmd = encode_cmd(TOOLS, Path("/w/in.mkv"), Path("/w/c.mkv"), Settings(vcodec="libx264"),
                     frame_range=(100, 50), warmup=25)
    assert cmd[cmd.index("-vf") + 1].split(",")[0] == "trim=start_frame=75:end_frame=150"
    assert value_of(cmd, "-force_key_frames") == "expr:eq(n,25)"      # the chunk's first frame
    assert value_of(cmd, "-forced-idr") == "1"
    assert values_of(cmd, "-f") == ["matroska", "segment"] and value_of(cmd, "-segment_frames") == "25"
    assert cmd[-1] == "file:/w/c.mkv.%d"
    assert [p.name for p in warmup_parts(Path("/w/c.mkv"))] == ["c.mkv.0", "c.mkv.1"]


def test_warmed_up_x265_chunks_have_closed_gops():
    cmd = encode_cmd(TOOLS, Path("/w/in.mkv"), Path("/w/c.mkv"), Settings(vcodec="libx265"),
                     frame_range=(100, 50), warmup=25)
    assert "open-gop=0" in value_of(cmd, "-x265-params").split(":")
    plain = encode_cmd(TOOLS, Path("/w/in.mkv"), Path("/w/c.mkv"), Settings(vcodec="libx265"))
    assert "open-gop=0" not in value_of(plain, "-x265-params").split(":")


def test_warm_up_only_where_there_are_frames_before_and_the_encoder_takes_it():
    assert warmup_frames(Settings(vcodec="libx264"), 400) == 25
    assert warmup_frames(Settings(vcodec="libx265"), 10) == 10       # no more than the frames before
    assert warmup_frames(Settings(vcodec="libx264"), 0) == 0         # a chunk at a keyframe
    assert warmup_frames(Settings(vcodec="libvpx-vp9"), 400) == 0
    assert warmup_frames(Settings(vcodec="libx264", fps="30"), 400) == 0   # -fps renumbers frames


def test_hardware_encoders_get_their_own_constant_quality_and_presets():
    nvenc = encode_cmd(TOOLS, Path("a.mkv"), Path("b.mkv"), Settings(vcodec="hevc_nvenc", crf=24, preset="p6"))
    assert (value_of(nvenc, "-cq"), value_of(nvenc, "-rc"), value_of(nvenc, "-b:v"), value_of(nvenc, "-preset")) == \
        ("24", "vbr", "0", "p6")
    assert "-crf" not in nvenc
    qsv = encode_cmd(TOOLS, Path("a.mkv"), Path("b.mkv"), Settings(vcodec="h264_qsv"))
    assert value_of(qsv, "-global_quality") == "23" and "-crf" not in qsv
    with pytest.raises(UsageError, match="p1, p2"):
        Settings(vcodec="h264_nvenc", preset="slow")       # x264's names are not NVENC's
    with pytest.raises(UsageError, match="whole numbers"):
        Settings(vcodec="h264_qsv", crf=22.5)


def test_vaapi_encodes_open_the_render_device_and_upload_the_picture(monkeypatch):
    monkeypatch.setattr("ffdt.common.ffmpeg.render_device", lambda: "/dev/dri/renderD128")
    cmd = encode_cmd(TOOLS, Path("a.mkv"), Path("b.mkv"), Settings(vcodec="h264_vaapi", crf=25, scale_w=640,
                                                                   scale_h=-2, pix_fmt="yuv420p"))
    assert cmd.index("-vaapi_device") < cmd.index("-i") and value_of(cmd, "-vaapi_device") == "/dev/dri/renderD128"
    # the picture filters as in software (the boss's comparison runs them too), then the upload
    assert value_of(cmd, "-vf") == "scale=640:-2,format=nv12,hwupload"
    assert (value_of(cmd, "-qp"), value_of(cmd, "-rc_mode")) == ("25", "CQP")
    assert "-pix_fmt" not in cmd and "-crf" not in cmd
    ten = encode_cmd(TOOLS, Path("a.mkv"), Path("b.mkv"), Settings(vcodec="hevc_vaapi", pix_fmt="yuv420p10le"))
    assert value_of(ten, "-vf") == "format=p010,hwupload"
    with pytest.raises(UsageError, match="4:2:0 only"):
        Settings(vcodec="h264_vaapi", pix_fmt="yuv444p")
    with pytest.raises(UsageError, match="8-bit only"):
        Settings(vcodec="h264_vaapi", pix_fmt="yuv420p10le")
    with pytest.raises(UsageError, match="main10 goes with"):
        Settings(vcodec="hevc_vaapi", profile="main10")              # 10-bit profile, 8-bit upload
    with pytest.raises(UsageError, match="main10 goes with"):
        Settings(vcodec="hevc_vaapi", profile="main", pix_fmt="yuv420p10le")
    Settings(vcodec="hevc_vaapi", profile="main10", pix_fmt="yuv420p10le")
    Settings(vcodec="hevc_vaapi", pix_fmt="yuv420p10le")
    monkeypatch.setattr("ffdt.common.ffmpeg.render_device", lambda: None)
    assert "-vaapi_device" not in encode_cmd(TOOLS, Path("a.mkv"), Path("b.mkv"), Settings(vcodec="h264_vaapi"))
