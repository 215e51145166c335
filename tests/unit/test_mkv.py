"""common/mkv.py on Matroska files built here byte by byte: what it reads, and what it refuses
(so the boss falls back to ffprobe). tests/integration/test_mkv_reader.py compares it with
ffprobe on what each encoder's ffmpeg writes."""
from __future__ import annotations

import struct

import pytest

from ffdt.common import mkv


def vint_size(n: int) -> bytes:
    for length in range(1, 9):
        if n < (1 << (7 * length)) - 1:
            return ((1 << (7 * length)) | n).to_bytes(length, "big") if length > 1 else bytes([0x80 | n])
    raise ValueError(n)


def el(element_id: int, payload: bytes, size: bytes | None = None) -> bytes:
    ident = element_id.to_bytes((element_id.bit_length() + 7) // 8, "big")
    return ident + (vint_size(len(payload)) if size is None else size) + payload


def uint(element_id: int, value: int) -> bytes:
    return el(element_id, value.to_bytes(max(1, (value.bit_length() + 7) // 8), "big"))


def simple(rel: int, key: bool, payload: bytes, track: int = 1, flags: int = 0) -> bytes:
    return el(mkv.SIMPLE_BLOCK, bytes([0x80 | track]) + struct.pack(">h", rel) +
              bytes([(0x80 if key else 0) | flags]) + payload)


def track(number: int = 1, kind: int = 1, extra: bytes = b"") -> bytes:
    return el(mkv.TRACK_ENTRY, uint(mkv.TRACK_NUMBER, number) + uint(mkv.TRACK_TYPE, kind) +
              el(mkv.CODEC_ID, b"V_MPEG4/ISO/AVC") + uint(mkv.DEFAULT_DURATION, 40_000_000) + extra)


def matroska(*clusters: bytes, tracks: bytes | None = None, segment_size: bytes | None = None,
             scale: int = 1_000_000) -> bytes:
    head = el(mkv.EBML, el(0x4282, b"matroska"))
    info = el(mkv.INFO, uint(mkv.TIMESTAMP_SCALE, scale))
    body = info + el(mkv.TRACKS, track() if tracks is None else tracks) + b"".join(clusters)
    return head + el(mkv.SEGMENT, body, segment_size)


def cluster(base: int, *blocks: bytes) -> bytes:
    return el(mkv.CLUSTER, uint(mkv.CLUSTER_TIMESTAMP, base) + b"".join(blocks))


def test_reads_simple_blocks_and_block_groups_across_clusters(tmp_path):
    group = el(mkv.BLOCK_GROUP, el(mkv.BLOCK, bytes([0x81]) + struct.pack(">h", 80) + b"\x00" + b"x" * 7) +
               uint(mkv.BLOCK_DURATION, 60) + el(mkv.REFERENCE_BLOCK, b"\xd8"))
    data = matroska(cluster(0, simple(0, True, b"k" * 100), simple(40, False, b"p" * 10), group),
                    cluster(1000, simple(0, True, b"K" * 50), simple(-40, False, b"")))
    path = tmp_path / "r.mkv"
    path.write_bytes(data)
    got = mkv.read_video_blocks(path)
    assert [(b.pts, b.key, b.size) for b in got] == [
        (0.0, True, 100), (0.04, False, 10), (0.08, False, 7), (1.0, True, 50), (0.96, False, 0)]
    assert [b.duration for b in got] == [0.04, 0.04, 0.06, 0.04, 0.04]


def test_an_unknown_size_segment_is_read_to_the_end_of_the_file(tmp_path):
    path = tmp_path / "r.mkv"
    path.write_bytes(matroska(cluster(0, simple(0, True, b"k")), segment_size=b"\x01" + b"\xff" * 7))
    assert len(mkv.read_video_blocks(path)) == 1


@pytest.mark.parametrize("data", [
    pytest.param(b"not matroska at all", id="not-ebml"),
    pytest.param(matroska(cluster(0, simple(0, True, b"k", flags=0x02))), id="laced"),
    pytest.param(matroska(cluster(0, simple(0, True, b"k", track=2))), id="other-track"),
    pytest.param(matroska(cluster(0, simple(0, True, b"k")), tracks=track() + track(2, 2)), id="two-tracks"),
    pytest.param(matroska(cluster(0, simple(0, True, b"k")), tracks=track(extra=el(mkv.CONTENT_ENCODINGS, b""))),
                 id="content-encoding"),
    pytest.param(matroska(el(mkv.CLUSTER, simple(0, True, b"k"))), id="block-before-timestamp"),
    pytest.param(matroska(cluster(0, simple(0, True, b"k")))[:-3], id="truncated"),
    pytest.param(matroska(cluster(0, el(mkv.SIMPLE_BLOCK, b"\x81\x00", size=vint_size(1 << 40)))),
                 id="size-past-parent"),
    pytest.param(matroska(cluster(0, simple(0, True, b"k")), tracks=b""), id="no-track"),
    # a hostile worker's timestamp scale of 0 divided by zero in the verifier and failed the job
    pytest.param(matroska(cluster(0, simple(0, True, b"k")), scale=0), id="zero-timestamp-scale"),
    pytest.param(matroska(cluster(0, simple(0, True, b"k")), scale=1 << 40), id="absurd-timestamp-scale"),
    pytest.param(matroska(cluster(0, simple(0, True, b"k")), segment_size=b"\x01" + b"\xff" * 7) + b"\xa3",
                 id="ends-after-an-element-id"),
])
def test_what_it_does_not_know_is_unsupported(tmp_path, data):
    path = tmp_path / "r.mkv"
    path.write_bytes(data)
    with pytest.raises(mkv.Unsupported):
        mkv.read_video_blocks(path)


UNKNOWN = b"\x01" + b"\xff" * 7


def growing(tracks: bytes, *clusters: bytes) -> bytes:
    """A result as ffmpeg's muxer has written it so far: a segment of unknown size, the track
    entries (a Void where the CRC-32 comes at the end), whole clusters."""
    head = el(mkv.EBML, el(0x4282, b"matroska"))
    body = el(mkv.INFO, uint(mkv.TIMESTAMP_SCALE, 1_000_000)) + el(mkv.TRACKS, tracks) + b"".join(clusters)
    return head + el(mkv.SEGMENT, body, UNKNOWN)


FIRST = cluster(0, simple(0, True, b"k" * 90), simple(80, False, b"b" * 9), simple(40, False, b"p" * 9))
SECOND = cluster(120, simple(0, False, b"q" * 30), simple(40, False, b"r" * 30))
THIRD = cluster(200, simple(0, False, b"s" * 30))


def test_a_file_still_being_written_shows_its_complete_clusters(tmp_path):
    path = tmp_path / "partial.mkv"
    path.write_bytes(growing(el(mkv.VOID, b"\x00" * 4) + track(), FIRST, SECOND, THIRD[:-5]))
    layout = mkv.read_layout(path)
    assert layout.blocks == (3, 2)                      # the third cluster is cut off: left out
    assert layout.prefix(3) == layout.clusters[0][1] < layout.prefix(4) == layout.clusters[1][1]
    assert layout.prefix(6) is None
    assert path.read_bytes()[layout.clusters[1][1]:] == THIRD[:-5]


def test_a_sample_stands_for_a_result_only_where_their_bytes_agree(tmp_path):
    result = tmp_path / "result.mkv"
    # the finished result: a CRC-32 in place of the Void, its segment size filled in (ffmpeg
    # keeps 8 bytes for it)
    finished = matroska(FIRST, SECOND, THIRD, tracks=el(mkv.CRC32, b"\x12\x34\x56\x78") + track(),
                        segment_size=UNKNOWN)
    size = len(finished) - finished.index(UNKNOWN) - 8
    result.write_bytes(finished.replace(UNKNOWN, b"\x01" + size.to_bytes(7, "big"), 1))
    sample = tmp_path / "sample.mkv"

    def agree(*clusters: bytes, entries: bytes = track()) -> int:
        data = matroska(*clusters, tracks=el(mkv.VOID, b"\x00" * 4) + entries, segment_size=UNKNOWN)
        sample.write_bytes(data)
        return mkv.same_start(sample, result)

    assert agree(FIRST, SECOND) == 5
    assert agree(FIRST) == 3
    assert agree(FIRST.replace(b"b" * 9, b"B" * 9), SECOND) == 0          # one frame's bytes differ
    assert agree(FIRST, SECOND, entries=track(extra=el(0x63A2, b"\x01\x64"))) == 0   # other codec private data
    assert agree(SECOND) == 0                                             # not where the result has it


def test_a_second_tracks_element_is_unsupported(tmp_path):
    """ffmpeg decodes with the first; a reader keeping the last would vouch for other bytes."""
    path = tmp_path / "two.mkv"
    path.write_bytes(growing(track(extra=el(0x63A2, b"\x01")) , FIRST).replace(
        el(mkv.TRACKS, track(extra=el(0x63A2, b"\x01"))),
        el(mkv.TRACKS, track(extra=el(0x63A2, b"\x01"))) + el(mkv.TRACKS, track()), 1))
    with pytest.raises(mkv.Unsupported):
        mkv.read_layout(path)
