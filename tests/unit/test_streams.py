"""Stream choice (client/streams.py) on small ffprobe-like dicts, the shape of
`ffprobe -show_streams -show_programs -of json`: which video and audio a job takes, what it drops
and why, and the one-line UsageError for a choice the input does not have."""
from __future__ import annotations

from typing import Any

import pytest

from ffdt.client.streams import Choice, StreamOptions, choose, describe, is_default, uncarried
from ffdt.common.errors import UsageError


def video(index: int, width: int = 320, height: int = 240, **extra: Any) -> dict[str, Any]:
    return {"index": index, "codec_type": "video", "codec_name": "h264", "width": width, "height": height,
            **extra}


def audio(index: int, sample_rate: str = "48000", channels: int = 2, **extra: Any) -> dict[str, Any]:
    # ffprobe writes sample_rate as a string
    return {"index": index, "codec_type": "audio", "codec_name": "aac", "sample_rate": sample_rate,
            "channels": channels, **extra}


def program(program_id: int, *indices: int) -> dict[str, Any]:
    return {"program_id": program_id, "streams": [{"index": i} for i in indices]}


def probe(*streams: dict[str, Any], programs: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    info: dict[str, Any] = {"streams": list(streams)}
    if programs is not None:
        info["programs"] = programs
    return info


def two_programs() -> dict[str, Any]:
    """A DVB-like capture: program 1 is video 0 + audio 1, program 2 is video 2 + audio 3, 4."""
    return probe(video(0), audio(1), video(2, 720, 576), audio(3), audio(4),
                 programs=[program(1, 0, 1), program(2, 2, 3, 4)])


def usage_error(info: dict[str, Any], **options: Any) -> str:
    with pytest.raises(UsageError) as caught:
        choose(info, StreamOptions(**options))
    return str(caught.value)


# ---------------------------------------------------------------- the default video

def test_the_largest_video_is_chosen_and_the_other_dropped():
    choice = choose(probe(video(0, 320, 240), video(1, 1280, 720), audio(2)))
    assert choice == Choice(video=1, audio=(2,), program=None, dropped=((0, "another video stream"),))


def test_the_first_video_wins_a_tie():
    assert choose(probe(video(0, 640, 480), video(1, 480, 640), video(2, 640, 480))).video == 0


def test_a_video_with_nothing_decodable_is_never_chosen_however_large_declared():
    # width 0: no picture found, though the declared height is the largest
    choice = choose(probe(video(0, 0, 2160), video(1, 320, 240)))
    assert choice.video == 1
    assert choice.dropped == ((0, "nothing decodable"),)


def test_an_attached_picture_is_never_chosen_nor_listed_as_dropped():
    cover = video(1, 1920, 1080, codec_name="mjpeg", disposition={"attached_pic": 1})
    choice = choose(probe(video(0), cover, audio(2)))
    assert choice.video == 0
    assert choice.dropped == ()
    assert choice.keeps(1)


# ---------------------------------------------------------------- undecodable audio

@pytest.mark.parametrize("dead", [audio(2, sample_rate="0"), audio(2, channels=0)])
def test_audio_without_a_sample_rate_or_channels_is_dropped(dead):
    choice = choose(probe(video(0), audio(1), dead))
    assert choice.audio == (1,)
    assert choice.dropped == ((2, "nothing decodable"),)
    assert not choice.keeps(2) and choice.keeps(1)


# ---------------------------------------------------------------- programs

def test_only_the_videos_programs_audio_is_taken():
    # video 2 is the larger, so program 2 is the one chosen
    choice = choose(two_programs())
    assert (choice.video, choice.program, choice.audio) == (2, 2, (3, 4))
    assert choice.dropped == ((0, "another video stream"), (1, "another program's"))


def test_programs_without_streams_are_ignored():
    info = probe(video(0), audio(1), audio(2), programs=[program(7), program(1, 0, 1, 2)])
    choice = choose(info)
    assert (choice.program, choice.audio, choice.dropped) == (1, (1, 2), ())


def test_programs_without_streams_do_not_scope_the_audio():
    choice = choose(probe(video(0), audio(1), audio(2), programs=[program(1)]))
    assert (choice.program, choice.audio) == (None, (1, 2))


def test_program_option_picks_that_programs_video_and_audio():
    choice = choose(two_programs(), StreamOptions(program=1))
    assert (choice.video, choice.program, choice.audio) == (0, 1, (1,))
    assert choice.dropped == ((2, "another video stream"), (3, "another program's"), (4, "another program's"))


def test_an_unknown_program_names_the_known_ones():
    info = two_programs()
    info["programs"].append(program(9))              # no streams: not a known program
    message = usage_error(info, program=5)
    assert "--program 5" in message
    assert "programs: 1, 2)" in message


def test_a_program_option_on_a_file_without_programs_says_so():
    assert "none with streams" in usage_error(probe(video(0)), program=1)


# ---------------------------------------------------------------- --video-stream

def test_video_stream_option_takes_that_stream_even_when_smaller():
    choice = choose(probe(video(0, 320, 240), video(1, 1920, 1080)), StreamOptions(video=0))
    assert choice.video == 0
    assert choice.dropped == ((1, "another video stream"),)


@pytest.mark.parametrize("index", [1, 2, 9])     # audio, an attached picture, no such stream
def test_video_stream_option_refuses_what_is_not_a_video(index):
    cover = video(2, codec_name="png", disposition={"attached_pic": 1})
    message = usage_error(probe(video(0), audio(1), cover), video=index)
    assert f"--video-stream {index}: not a video stream" in message
    assert "video streams: 0)" in message


def test_video_stream_option_refuses_an_undecodable_video():
    message = usage_error(probe(video(0), video(1, 0, 0)), video=1)
    assert message == "--video-stream 1: the stream has nothing decodable"


# ---------------------------------------------------------------- --audio-streams

@pytest.mark.parametrize("text, parsed", [
    ("all", "all"), ("first", "first"), ("none", "none"), ("3,1", "3,1"), (" FIRST ", "first"), ("3, 1", "3,1"),
])
def test_parse_audio_accepts(text, parsed):
    assert StreamOptions.parse_audio(text) == parsed


@pytest.mark.parametrize("text", ["x", "-1", "", "1,,2", "2,-1"])
def test_parse_audio_refuses(text):
    with pytest.raises(UsageError, match="--audio-streams"):
        StreamOptions.parse_audio(text)


@pytest.mark.parametrize("option, taken, not_chosen", [
    ("all", (1, 2, 3), ()),
    ("first", (1,), (2, 3)),
    ("none", (), (1, 2, 3)),
    ("3,1", (3, 1), (2,)),                         # the user's order, not the file's
])
def test_audio_option_chooses(option, taken, not_chosen):
    choice = choose(probe(video(0), audio(1), audio(2), audio(3)), StreamOptions(audio=option))
    assert choice.audio == taken
    assert choice.dropped == tuple((i, "not chosen") for i in not_chosen)


def test_first_audio_skips_an_undecodable_one():
    choice = choose(probe(video(0), audio(1, channels=0), audio(2)), StreamOptions(audio="first"))
    assert choice.audio == (2,)
    assert choice.dropped == ((1, "nothing decodable"),)


@pytest.mark.parametrize("index", [0, 9])      # the video, no such stream
def test_audio_option_refuses_an_index_that_is_not_audio(index):
    message = usage_error(probe(video(0), audio(1)), audio=f"1,{index}")
    assert message == f"--audio-streams: stream {index} is not an audio stream of the input"


def test_audio_option_refuses_an_undecodable_audio():
    message = usage_error(probe(video(0), audio(1, sample_rate="0")), audio="1")
    assert "stream 1 has nothing decodable" in message


# ---------------------------------------------------------------- no video to transcode

def test_no_video_at_all():
    assert "no video stream" in usage_error(probe(audio(0), {"index": 1, "codec_type": "data"}))


def test_only_undecodable_video():
    message = usage_error(probe(video(0, 0, 0), video(1, width=640, height=0), audio(2)))
    assert "nothing decodable" in message
    assert "#0 video h264" in message and "#1 video h264" in message


def test_only_an_attached_picture_is_no_video():
    assert "no video stream" in usage_error(probe(video(0, disposition={"attached_pic": 1}), audio(1)))


# ---------------------------------------------------------------- is_default

def test_is_default_for_the_first_video_and_every_audio_in_order():
    info = probe(video(0), audio(1), audio(2))
    assert is_default(info, choose(info))


@pytest.mark.parametrize("choice", [
    Choice(video=1, audio=(2, 3), program=None),     # not the first video
    Choice(video=0, audio=(2,), program=None),       # not every audio
    Choice(video=0, audio=(3, 2), program=None),     # not in file order
    Choice(video=0, audio=(), program=None),
])
def test_is_not_default_otherwise(choice):
    assert not is_default(probe(video(0), video(1), audio(2), audio(3)), choice)


def test_dropping_an_undecodable_audio_is_not_default():
    info = probe(video(0), audio(1), audio(2, sample_rate="0"))
    assert not is_default(info, choose(info))


# ---------------------------------------------------------------- describe

def test_nothing_to_say_when_nothing_is_dropped_and_there_was_no_choice():
    info = probe(video(0), audio(1))
    assert describe(info, choose(info)) == []


def test_a_streams_line_when_something_is_dropped():
    info = probe(video(0), audio(1), audio(2, sample_rate="0"))
    assert describe(info, choose(info)) == [
        "streams: video #0 video h264 320x240; audio #1 audio aac "
        "(--video-stream, --program, --audio-streams choose others)",
        "dropping #2 audio aac: nothing decodable",
    ]


def test_one_line_per_reason_naming_every_stream_dropped_for_it():
    info = probe(video(0, 640, 480), video(1, 0, 0), audio(2, tags={"language": "eng"}),
                 audio(3, sample_rate="0", tags={"language": "deu"}), audio(4, channels=0))
    lines = describe(info, choose(info))
    assert lines[0].startswith("streams: video #0 video h264 640x480; audio #2 audio aac (eng) (")
    assert lines[1:] == [
        "dropping #1 video h264, #3 audio aac (deu), #4 audio aac: nothing decodable",
    ]


def test_describe_names_the_program_and_each_reason():
    info = two_programs()
    lines = describe(info, choose(info, StreamOptions(program=1, audio="none")))
    assert lines == [
        "streams: video #0 video h264 320x240 of program 1; audio none "
        "(--video-stream, --program, --audio-streams choose others)",
        "dropping #1 audio aac: not chosen",
        "dropping #2 video h264: another video stream",
        "dropping #3 audio aac, #4 audio aac: another program's",
    ]


# ---------------------------------------------------------------- uncarried

@pytest.mark.parametrize("kind, codec, carried", [
    ("data", "scte_35", False),
    ("data", "", False),
    ("subtitle", "dvb_teletext", False),
    ("subtitle", "dvb_subtitle", True),
    ("subtitle", "subrip", True),
])
def test_uncarried(kind, codec, carried):
    reason = uncarried(kind, codec)
    assert (reason is None) == carried
    if not carried:
        assert ("data" if kind == "data" else codec) in reason


def test_a_video_stream_outside_the_chosen_program_is_refused() -> None:
    info = {"streams": [video(0), audio(1), video(2), audio(3)],
            "programs": [program(1, 0, 1), program(2, 2, 3)]}
    with pytest.raises(UsageError, match="not in --program 2"):
        choose(info, StreamOptions(video=0, program=2))


def test_an_audio_stream_named_twice_is_refused() -> None:
    with pytest.raises(UsageError, match="twice"):
        StreamOptions.parse_audio("1,1")


def test_a_video_codec_without_decoder_is_named() -> None:
    info = {"streams": [{"index": 0, "codec_type": "video", "codec_tag_string": "dav1", "width": 320, "height": 240}]}
    with pytest.raises(UsageError, match=r"no decoder for its video codec \(codec tag 'dav1'\)"):
        choose(info)
