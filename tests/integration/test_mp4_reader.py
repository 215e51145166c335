"""common/mp4.py against ffprobe: the boss plans its chunks from an MP4/MOV input's packets read
from the sample tables instead of demuxing the file with ffprobe, so where the reader answers,
its answer must be ffprobe's (key flags: the file's sync samples, which ffprobe's list holds,
with the I-pictures its H.264 parser adds), and where it cannot vouch it must say so."""
from __future__ import annotations

import dataclasses
import subprocess
from pathlib import Path

import pytest

from ffdt.client import media
from ffdt.client.split import PREFIX_PACKETS, Splitter
from ffdt.common import ffmpeg, mp4
from ffdt.common.settings import Settings
from tests.conftest import SHARED_MEDIA

pytestmark = pytest.mark.integration

# real files the reader must read itself (constant frame rate, at most one plain edit); the
# shared ones it refuses (variable frame rate, random-access sample groups) are still compared
READ_HERE = {"chrome-ad-270p-h264-aac.mp4", "people-432p-h264-noaudio.mp4",
             "android14-1080p-hevc10-hlg-aac-colorchart.mp4"}
SOURCE = ["-f", "lavfi", "-i", "testsrc2=size=320x180:rate=25:duration=3",
          "-f", "lavfi", "-i", "sine=sample_rate=48000:duration=3.3"]
MADE = {
    # what a camera or ffmpeg writes: B-frames (an edit list starting at the first composition
    # offset), AAC with its priming edit, the moov after the media
    "bframes.mp4": ["-c:v", "libx264", "-preset", "ultrafast", "-bf", "2", "-g", "25", "-c:a", "aac"],
    "faststart.mov": ["-c:v", "libx264", "-preset", "ultrafast", "-bf", "3", "-c:a", "aac", "-movflags", "+faststart"],
    "no-editlist.mp4": ["-c:v", "libx264", "-preset", "ultrafast", "-bf", "2", "-c:a", "aac", "-use_editlist", "0"],
    "hevc.mp4": ["-c:v", "libx265", "-preset", "ultrafast", "-x265-params", "log-level=error", "-c:a", "aac"],
    # audio cut shorter than its media by the edit (-t): ffmpeg trims the last packet
    "audio-trimmed.mp4": ["-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac", "-t", "2.5"],
    # sync samples where a decoder cannot start (x264 marks its recovery points so), and
    # interlaced coding (MBAFF): read as ffprobe reads them, but not IDR entry points
    "intra-refresh.mp4": ["-c:v", "libx264", "-preset", "ultrafast", "-intra-refresh", "1", "-g", "25", "-c:a", "aac"],
    "interlaced.mp4": ["-c:v", "libx264", "-preset", "ultrafast", "-flags", "+ildct+ilme", "-g", "25", "-c:a", "aac"],
}
IDR_ENTRY_POINTS = {"bframes.mp4": True, "faststart.mov": True, "no-editlist.mp4": True, "audio-trimmed.mp4": True,
                    "intra-refresh.mp4": False, "interlaced.mp4": False}
REFUSED = {
    "fragmented.mp4": ["-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac",
                       "-movflags", "+frag_keyframe+empty_moov"],
    "mp3-audio.mp4": ["-c:v", "libx264", "-preset", "ultrafast", "-c:a", "libmp3lame"],
    "pcm-audio.mov": ["-c:v", "libx264", "-preset", "ultrafast", "-c:a", "pcm_s16le"],
}


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tools = ffmpeg.find_tools()
    out = tmp_path_factory.mktemp("mp4")
    files = {}
    for name, args in {**MADE, **REFUSED}.items():
        files[name] = out / name
        subprocess.run([tools.ffmpeg, "-v", "error", *SOURCE, *args, f"file:{files[name]}"], check=True, timeout=120)
    return files


def read_both(path: Path) -> tuple[dict[int, list[ffmpeg.Packet]], dict[int, list[ffmpeg.Packet]]]:
    """(the reader's, ffprobe's) packets of the first video stream and the first audio stream's
    last, as media.inspect asks for them."""
    tools = ffmpeg.find_tools()
    probe = ffmpeg.probe(tools, path)
    video = next(int(s["index"]) for s in probe["streams"] if s["codec_type"] == "video")
    audio = [int(s["index"]) for s in probe["streams"] if s["codec_type"] == "audio"][:1]
    mine = mp4.packets_by_stream(path, probe, [video, *audio], last_only=audio)    # refused: no ffprobe read
    return mine, ffmpeg.packets_by_stream(tools, path, [video, *audio], last_only=audio)


def assert_same(mine: dict[int, list[ffmpeg.Packet]], theirs: dict[int, list[ffmpeg.Packet]]) -> None:
    assert mine.keys() == theirs.keys()
    for index, packets in mine.items():
        assert len(packets) == len(theirs[index])
        assert all(not p.key or q.key for p, q in zip(packets, theirs[index])), "a key flag ffprobe does not give"
        assert packets[0].key
        unkeyed = [[dataclasses.replace(p, key=False) for p in ps] for ps in (packets, theirs[index])]
        assert unkeyed[0] == unkeyed[1]


@pytest.mark.parametrize("name", sorted(MADE))
def test_made_files_are_read_as_ffprobe_reads_them(made, name):
    assert_same(*read_both(made[name]))


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_what_it_cannot_vouch_for_is_left_to_ffprobe(made, name):
    with pytest.raises(mp4.Unsupported):
        read_both(made[name])


@pytest.mark.skipif(SHARED_MEDIA is None, reason="needs the team's shared media")
def test_real_mp4_and_mov_files_agree_with_ffprobe_or_are_refused():
    names = sorted(p.name for p in SHARED_MEDIA.iterdir() if p.suffix in (".mp4", ".mov"))
    read = []
    for name in names:
        try:
            both = read_both(SHARED_MEDIA / name)
        except mp4.Unsupported:
            continue
        assert_same(*both)
        read.append(name)
    assert READ_HERE <= set(read)


def test_a_file_cut_short_is_left_to_ffprobe_and_said(made, tmp_path, caplog):
    """With the moov first, a file cut short keeps whole sample tables: the reader must see
    that their samples run past the end; ffprobe then reads what is there, as one ffmpeg run
    would, and the user is told."""
    whole = bytearray(made["faststart.mov"].read_bytes())
    cut = tmp_path / "cut.mov"
    cut.write_bytes(whole[:len(whole) // 2])
    with pytest.raises(mp4.CutShort, match="'mdat' box runs past the end"):      # its box says it is longer
        read_both(cut)
    with caplog.at_level("WARNING", logger=media.log.name):
        assert media.inspect(ffmpeg.find_tools(), cut).frames < 75      # ffprobe's read stops at the cut
    assert any("shorter than its index says" in r.getMessage() for r in caplog.records)
    # a box size of 0 means "to the end of the file": only the sample tables show what is missing
    mdat = whole.find(b"mdat") - 4
    whole[mdat:mdat + 4] = bytes(4)
    cut.write_bytes(whole[:len(whole) // 2])
    with pytest.raises(mp4.CutShort, match="samples run past the end"):
        read_both(cut)
    # bytes after the last box are not a cut: no "cut short" for them
    padded = tmp_path / "padded.mov"
    padded.write_bytes(made["faststart.mov"].read_bytes() + b"\xd8\x1aO\x04" * 4)
    with pytest.raises(mp4.Unsupported, match="not a box") as refused:
        read_both(padded)
    assert not isinstance(refused.value, mp4.CutShort)


def test_damaged_tables_are_refused_not_misread(made, tmp_path):
    """Bytes of the video's timing and sync tables (stts, stss, ctts: what timestamps and key
    flags come from) flipped one at a time (every 13th: each costs an ffprobe run, two if the
    reader takes the file): the reader either refuses or still gives ffprobe's answer for the
    file as it now is. (Not the codec configuration before them: a damaged SPS
    changes what ffprobe's H.264 parser makes of the durations, which the tables give. Nor the
    chunk and size tables after them: damaged, they make ffmpeg read other bytes as packets,
    which the split's count of each piece's packets catches.)"""
    data = bytearray(made["faststart.mov"].read_bytes())
    first, last = data.find(b"stts") - 4, data.find(b"stsc") - 4
    assert 0 < first < last
    damaged = tmp_path / "damaged.mov"
    for at in range(first, last, 13):
        copy = bytearray(data)
        copy[at] ^= 0xFF
        damaged.write_bytes(bytes(copy))
        try:
            both = read_both(damaged)
        except (mp4.Unsupported, ffmpeg.FFmpegError):
            continue
        assert_same(*both)


def test_inspect_of_an_mp4_is_the_same_either_way(made, monkeypatch):
    """What the boss plans from (frames, keyframes, timestamps, the audio's end) does not
    depend on which of the two read the packets."""
    tools = ffmpeg.find_tools()
    path = made["bframes.mp4"]
    ours = media.inspect(tools, path)

    def refuse(*args, **kwargs):
        raise mp4.Unsupported("for the test")

    monkeypatch.setattr(mp4, "packets_by_stream", refuse)
    theirs = media.inspect(tools, path)
    assert ours.frames == theirs.frames == 75
    assert (ours.pts, ours.key, ours.keyframe_positions) == (theirs.pts, theirs.key, theirs.keyframe_positions)
    assert (ours.video_start, ours.video_duration, ours.audio_end) == \
        (theirs.video_start, theirs.video_duration, theirs.audio_end)


def test_a_table_given_twice_is_refused(made, tmp_path):
    """Two stts boxes in one track (the sync table renamed): which one ffmpeg would use is not
    this reader's to guess."""
    tools = ffmpeg.find_tools()
    original = made["faststart.mov"]
    data = bytearray(original.read_bytes())
    at = data.find(b"stss")
    data[at:at + 4] = b"stts"
    twice = tmp_path / "twice.mov"
    twice.write_bytes(bytes(data))
    with pytest.raises(mp4.Unsupported, match="two 'stts' boxes"):
        mp4.packets_by_stream(twice, ffmpeg.probe(tools, original), [0])


def test_idr_entry_points_are_where_a_decoder_starts_clean(made):
    """mp4.idr_entry_points lets the boss skip decoding from two keyframes before its first
    chunk goes out: where it says yes, PREFIX_PACKETS packets from every keyframe decode to as
    many frames (the decode it stands for); x264's intra-refresh recovery points do not, and
    must get a no; interlaced coding gets a no too (the decode decides)."""
    tools = ffmpeg.find_tools()
    for name, expected in IDR_ENTRY_POINTS.items():
        path = made[name]
        info = media.inspect(tools, path)
        assert info.idr_keyframes is expected, name
        shown = ffmpeg.count_frames_at(tools, path, info.keyframes, packets=PREFIX_PACKETS)
        assert shown, name
        if expected:
            assert all(n == PREFIX_PACKETS for n in shown), (name, shown)
    assert ffmpeg.count_frames_at(tools, made["intra-refresh.mp4"], [1.0], packets=PREFIX_PACKETS) == [0]
    probe = ffmpeg.probe(tools, made["hevc.mp4"])
    with pytest.raises(mp4.Unsupported):
        mp4.idr_entry_points(made["hevc.mp4"], probe, 0)
    # a damaged SPS (zeros after its level: no Exp-Golomb code ends) is a no, not an error
    damaged = bytearray(made["bframes.mp4"].read_bytes())
    config = damaged.find(b"avcC") + 4
    sps_length = int.from_bytes(damaged[config + 6:config + 8], "big")
    damaged[config + 12:config + 8 + sps_length] = bytes(sps_length - 4)
    broken = made["bframes.mp4"].with_name("damaged-sps.mp4")
    broken.write_bytes(bytes(damaged))
    assert mp4.idr_entry_points(broken, ffmpeg.probe(tools, broken), 0) is False


@pytest.mark.parametrize("name", ["bframes.mp4", "intra-refresh.mp4"])
def test_the_split_decodes_only_where_the_tables_cannot_tell(made, tmp_path, monkeypatch, name):
    """The streaming split of an MP4 of IDR keyframes hands out its chunks without the entry
    decode; of intra-refresh keyframes it still decodes, finds them no entry points, and the
    chunks all decode from the first frame (split() with entry_points=False)."""
    tools = ffmpeg.find_tools()
    info = media.inspect(tools, made[name])
    decodes = []
    real = ffmpeg.count_frames_at
    monkeypatch.setattr(ffmpeg, "count_frames_at", lambda *args, **kw: decodes.append(args) or real(*args, **kw))
    chunks = Splitter(tools, info, Settings(), tmp_path, 1.0).run(2, lambda chunks, complete: None)
    assert sum(c.frames for c in chunks) == info.frames
    if info.idr_keyframes:
        assert not decodes and len(chunks) == 3
    else:
        assert decodes and all(c.manifest.frame_range is not None or c.index == 0 for c in chunks)
