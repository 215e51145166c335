"""common/mkv.py against ffprobe on what each encoder's ffmpeg writes as a worker's result: the
boss reads every result's packets with it instead of starting ffprobe, so the two must agree."""
from __future__ import annotations

import subprocess

import pytest

from ffdt.client.checks import result_packets
from ffdt.common import ffmpeg, mkv

pytestmark = pytest.mark.integration

ENCODES = {
    "libx264": ["-c:v", "libx264", "-preset", "ultrafast", "-bf", "3"],
    "libx265": ["-c:v", "libx265", "-preset", "ultrafast", "-x265-params", "log-level=error"],
    "libvpx-vp9": ["-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8"],
    "mpeg4": ["-c:v", "mpeg4"],
}


@pytest.mark.parametrize("encoder", sorted(ENCODES))
def test_blocks_are_the_packets_ffprobe_lists(tmp_path, encoder):
    tools = ffmpeg.find_tools()
    out = tmp_path / "result.mkv"
    # variable frame rate, as workers keep the source's timestamps
    subprocess.run([tools.ffmpeg, "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25:duration=2",
                    "-vf", "setpts='PTS+gte(N,20)*0.3/TB'", *ENCODES[encoder], "-fps_mode", "passthrough",
                    "-enc_time_base", "-1", "-f", "matroska", f"file:{out}"], check=True, timeout=60)
    blocks = mkv.read_video_blocks(out)
    probed = ffmpeg.stream_packets(tools, out)
    assert len(blocks) == len(probed) == 50
    assert [(round(b.pts, 3), b.key, b.size) for b in blocks] == [(round(p.pts, 3), p.key, p.size) for p in probed]
    assert [round(b.duration, 3) for b in blocks] == [round(p.duration, 3) for p in probed]


def test_a_file_it_does_not_know_is_listed_by_ffprobe(tmp_path):
    """A result with an audio track beside the video: the reader refuses it, ffprobe lists it."""
    tools = ffmpeg.find_tools()
    out = tmp_path / "result.mkv"
    subprocess.run([tools.ffmpeg, "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=160x120:rate=10:duration=1",
                    "-f", "lavfi", "-i", "sine=duration=1", "-c:v", "mpeg4", "-c:a", "pcm_s16le", "-f", "matroska",
                    f"file:{out}"], check=True, timeout=60)
    with pytest.raises(mkv.Unsupported):
        mkv.read_video_blocks(out)
    packets = result_packets(tools, out, timeout=30)
    assert len(packets) == 10 and packets[0].key and all(p.dts_known for p in packets)
