"""Chunk planning (client/split.py) and output-container rules (client/media.py), without ffmpeg."""
from __future__ import annotations

from pathlib import Path

import pytest

from ffdt.client.media import Stream, carried_tags, check_combination, clean_cuts, container_for
from ffdt.client.split import Span, auto_chunk_seconds, gop_spans, plan_cuts
from ffdt.common.ffmpeg import Packet
from ffdt.common.errors import UsageError


def every(step: float, until: float, start: float = 0.0) -> list[float]:
    """Keyframe times start, start+step, ... below start+until."""
    n = round(until / step)
    return [start + i * step for i in range(n)]


def audio(codec: str, index: int = 1) -> Stream:
    return Stream(index=index, kind="audio", codec=codec, start=0.0)


# ---------------------------------------------------------------- plan_cuts

def test_keyframe_every_second_cut_every_three():
    # chunks [0,3) [3,6) [6,10): a cut at 9 would leave a 1 s tail, shorter than half the target
    assert plan_cuts(every(1.0, 10.0), start=0.0, end=10.0, target=3.0) == [3.0, 6.0]


def test_last_chunk_is_kept_when_at_least_half_the_target():
    # cut at 9 leaves 9..10.5 = 1.5 s, exactly half of 3: allowed
    assert plan_cuts(every(1.0, 10.0), start=0.0, end=10.5, target=3.0) == [3.0, 6.0, 9.0]


def test_cuts_are_relative_to_the_start():
    keyframes = every(1.0, 10.0, start=10.0)          # an input whose timestamps begin at 10 s
    assert plan_cuts(keyframes, start=10.0, end=20.0, target=3.0) == [3.0, 6.0]


def test_chunks_are_at_least_target_long_with_irregular_keyframes():
    keyframes = [0.0, 0.5, 2.9, 3.1, 4.0, 6.0, 6.2, 9.5, 12.0, 12.1, 15.0, 19.0]
    target, end = 3.0, 20.0
    cuts = plan_cuts(keyframes, start=0.0, end=end, target=target)
    assert cuts == [3.1, 6.2, 9.5, 15.0]    # 12.0 and 12.1 are too close to 9.5
    bounds = [0.0, *cuts, end]
    assert all(b - a >= target for a, b in zip(bounds, bounds[1:-1]))   # every chunk but the last
    assert end - cuts[-1] >= target / 2                                # no tiny last chunk
    assert set(cuts) <= set(keyframes)                                 # only ever at keyframes


def test_unsorted_and_repeated_keyframes_plan_the_same():
    keyframes = every(1.0, 10.0)
    shuffled = keyframes[::-1] + keyframes[:5]
    assert plan_cuts(shuffled, 0.0, 10.0, 3.0) == plan_cuts(keyframes, 0.0, 10.0, 3.0)


def test_no_keyframes_means_no_cuts():
    assert plan_cuts([], start=0.0, end=10.0, target=3.0) == []


def test_only_the_first_keyframe_means_no_cuts():
    assert plan_cuts([0.0], start=0.0, end=60.0, target=3.0) == []


def test_target_longer_than_the_input_means_no_cuts():
    assert plan_cuts(every(1.0, 10.0), start=0.0, end=10.0, target=30.0) == []


def test_never_cuts_at_the_very_start():
    assert 0.0 not in plan_cuts(every(0.5, 10.0), start=0.0, end=10.0, target=0.5)


# ---------------------------------------------------------------- auto_chunk_seconds

@pytest.mark.parametrize("duration, workers, seconds", [
    (600.0, 4, 50.0),      # 600 s over 4 workers * 3 rounds
    (60.0, 2, 10.0),       # three rounds of 10 s
    (60.0, 4, 15.0),       # two rounds would be 7.5 s chunks: one round of 15 s instead
    (60.0, 6, 10.0),       # one round
    (60.0, 8, 7.5),        # one round, even if shorter than 10 s...
    (1.0, 8, 5.0),         # ...but never below 5 s
    (36000.0, 1, 120.0),   # ceiling: never longer than 120 s
])
def test_auto_chunk_seconds(duration, workers, seconds):
    assert auto_chunk_seconds(duration, workers) == pytest.approx(seconds)


@pytest.mark.parametrize("duration, workers, seconds", [
    (60.0, 6, 5.0),        # two rounds of 5 s: a late or slow worker takes fewer
    (60.0, 4, 5.0),        # three rounds
    (60.0, 2, 10.0),       # three rounds already: no shorter
    (20.0, 6, 5.0),        # one round, as short as ever
])
def test_dense_video_gets_rounds_of_shorter_chunks(duration, workers, seconds):
    assert auto_chunk_seconds(duration, workers, pixel_bit_rate=8.0) == pytest.approx(seconds)
    assert auto_chunk_seconds(duration, workers, pixel_bit_rate=1.3) == auto_chunk_seconds(duration, workers)


def test_auto_chunk_seconds_stays_in_bounds():
    for duration in (0.0, 0.1, 7.0, 500.0, 1e6):
        for workers in (0, 1, 2, 16, 256):      # 0: no division by zero
            for bpp in (0.0, 80.0):
                for frames in (0, 1, 30_000):
                    assert 5.0 <= auto_chunk_seconds(duration, workers, bpp, frames) <= 120.0


# ---------------------------------------------------------------- containers

@pytest.mark.parametrize("name, muxer", [("out.mp4", "mp4"), ("OUT.MKV", "matroska"), ("a.b.webm", "webm"),
                                         ("x.mov", "mov"), ("x.m4v", "mp4")])
def test_container_for_known_extensions(name, muxer):
    assert container_for(Path(name)).muxer == muxer


@pytest.mark.parametrize("name", ["out.avi", "out", "out.mp4.part", "movie.ts"])
def test_container_for_unknown_extension_is_a_usage_error(name):
    with pytest.raises(UsageError, match="cannot write"):
        container_for(Path(name))


def test_vp9_in_mov_is_refused():
    with pytest.raises(UsageError, match="vp9"):
        check_combination(container_for(Path("o.mov")), "vp9", "aac", [audio("aac")])


def test_h264_in_webm_is_refused():
    with pytest.raises(UsageError, match="h264"):
        check_combination(container_for(Path("o.webm")), "h264", "libopus", [audio("opus")])


def test_copying_ac3_into_webm_is_refused():
    with pytest.raises(UsageError, match="ac3"):
        check_combination(container_for(Path("o.webm")), "vp9", "copy", [audio("opus", 1), audio("ac3", 2)])


def test_copying_opus_into_webm_is_fine():
    check_combination(container_for(Path("o.webm")), "vp9", "copy", [audio("opus")])


def test_aac_into_mp4_is_fine():
    check_combination(container_for(Path("o.mp4")), "h264", "aac", [audio("ac3")])


def test_encoder_names_are_mapped_to_codecs():
    check_combination(container_for(Path("o.webm")), "av1", "libopus", [audio("aac")])   # libopus -> opus
    with pytest.raises(UsageError, match="libvorbis"):
        check_combination(container_for(Path("o.mp4")), "h264", "libvorbis", [audio("aac")])


def test_matroska_takes_any_audio():
    check_combination(container_for(Path("o.mkv")), "hevc", "copy", [audio("truehd"), audio("dts", 2)])


def test_audio_codec_does_not_matter_without_audio():
    check_combination(container_for(Path("o.webm")), "vp9", "aac", [])


def test_split_piece_cuts_a_long_gop_into_frame_ranges():
    from ffdt.client.split import split_piece
    ranges = split_piece(frames=1140, seconds=45.6, target=8.0)
    assert len(ranges) == 6
    assert ranges[0][0] == 0 and sum(n for _, n in ranges) == 1140
    assert all(a + n == b for (a, n), (b, _) in zip(ranges, ranges[1:]))    # contiguous, no gap or overlap


def test_split_piece_keeps_a_short_piece_whole():
    from ffdt.client.split import split_piece
    assert split_piece(frames=60, seconds=2.0, target=2.0) == [(0, 60)]
    assert split_piece(frames=3, seconds=100.0, target=1.0) == [(0, 1), (1, 1), (2, 1)]   # never empty ranges


def gop_packets(frames: list[tuple[str, int]], fps: float = 25.0) -> list[Packet]:
    """Packets in decode order from (type, display index) pairs; 'I' marks a keyframe."""
    return [Packet(pts=n / fps, dts=i / fps, duration=1 / fps, key=kind == "I") for i, (kind, n) in enumerate(frames)]


def test_closed_gops_cut_at_every_keyframe():
    # I0 P3 B1 B2 | I4 P7 B5 B6: each GOP's B-frames lie between its own I and P
    packets = gop_packets([("I", 0), ("P", 3), ("B", 1), ("B", 2), ("I", 4), ("P", 7), ("B", 5), ("B", 6)])
    assert clean_cuts(packets) == [0, 4]


def test_open_gop_keyframe_is_not_a_cut():
    # I0 P3 B1 B2 | I6 B4 B5 P9 B7 B8: B4 and B5 come after I6 in the file but show before it and
    # reference P3, so a cut at I6 would leave them undecodable in both chunks
    packets = gop_packets([("I", 0), ("P", 3), ("B", 1), ("B", 2), ("I", 6), ("B", 4), ("B", 5),
                           ("P", 9), ("B", 7), ("B", 8)])
    assert clean_cuts(packets) == [0]


def test_packets_without_timestamps_do_not_block_a_cut():
    # field pairs: the second field of each frame stores no pts (ffprobe falls back to its dts)
    packets = [Packet(0.0, -0.04, 0.02, True), Packet(-0.02, -0.02, 0.02, False, pts_known=False),
               Packet(0.04, 0.0, 0.02, False), Packet(0.0, 0.0, 0.02, False, pts_known=False),
               Packet(0.08, 0.04, 0.02, True), Packet(0.04, 0.04, 0.02, False, pts_known=False)]
    assert clean_cuts(packets) == [0, 4]


APPLE = {"com.apple.quicktime.location.ISO6709": "+32.0929+034.8620+028.516/",
         "com.apple.quicktime.make": "Apple", "com.apple.quicktime.model": "iPhone 6"}


def test_apple_location_becomes_the_mp4_location_atom():
    assert carried_tags(APPLE, "mp4") == {"location": "+32.0929+034.8620+028.516/"}
    assert carried_tags(APPLE, "mov") == {"location": "+32.0929+034.8620+028.516/", "make": "Apple",
                                          "model": "iPhone 6"}


def test_tags_are_not_rewritten_where_they_already_travel():
    assert carried_tags(APPLE, "matroska") == {}              # Matroska keeps every tag as it is
    assert carried_tags({**APPLE, "location": "+1+2/"}, "mp4") == {}   # the source's own wins


def test_mov_gets_quicktime_language_codes_and_handler_names():
    from ffdt.client.join import mp4_stream_tags
    video = Stream(0, "video", "h264", 0.0)
    audio = [Stream(1, "audio", "aac", 0.0, {"language": "fra", "title": "Commentaire"}),
             Stream(2, "audio", "aac", 0.0, {"language": "eng"})]
    subs = [Stream(3, "subtitle", "mov_text", 0.0, {"language": "deu"})]
    assert mp4_stream_tags("mov", video, audio, subs) == (
        ("a", 0, "handler_name", "Commentaire"), ("s", 0, "language", "ger"))    # fra is QuickTime's own
    assert mp4_stream_tags("mp4", video, audio, subs) == (("a", 0, "handler_name", "Commentaire"),)
    assert mp4_stream_tags("matroska", video, audio, subs) == ()


def test_a_single_keyframe_piece_is_sent_whole_to_every_chunk():
    pts = [i / 25 for i in range(300)]
    key = [i == 0 for i in range(300)]
    assert gop_spans(pts, key, [(0, 100), (100, 100), (200, 100)]) == [
        Span(0, 300, 0), Span(0, 300, 100), Span(0, 300, 200)]


def test_a_chunk_gets_the_gops_from_the_keyframe_before_it_to_the_one_after_it():
    pts = [i / 25 for i in range(30)]
    key = [i % 10 == 0 for i in range(30)]                  # GOPs of 10 frames, no B-frames
    assert gop_spans(pts, key, [(0, 15), (15, 15)]) == [Span(0, 20, 0), Span(10, 30, 5)]


def test_open_gop_spans_reach_back_for_the_b_frames_shown_before_a_keyframe():
    # I0 P3 B1 B2 P6 B4 B5 | I9 B7 B8 P11 B10: B7 and B8 need P6, so frames 6-8 must decode from I0
    packets = gop_packets([("I", 0), ("P", 3), ("B", 1), ("B", 2), ("P", 6), ("B", 4), ("B", 5),
                           ("I", 9), ("B", 7), ("B", 8), ("P", 11), ("B", 10)])
    pts, key = [p.pts for p in packets], [p.key for p in packets]
    assert gop_spans(pts, key, [(0, 6), (6, 3), (9, 3)]) == [
        Span(0, 7, 0),        # I0..B5 show frames 0-6: the chunk keeps 0-5
        Span(0, 12, 6),       # frames 6-8: from I0 (six frames before them), through B8
        Span(7, 12, 0)]       # frames 9-11: from I9, whose B7 and B8 the decoder drops


def test_a_span_reaches_back_far_enough_for_the_encoder_warm_up():
    pts = [i / 25 for i in range(100)]
    key = [i % 10 == 0 for i in range(100)]                 # GOPs of 10 frames
    # the chunk at frame 50 wants 25 frames before it: the keyframe at 20 is the last with as many
    assert gop_spans(pts, key, [(0, 50), (50, 50)], lead=25) == [Span(0, 50, 0), Span(20, 100, 30)]
    # a chunk too near the piece's start for a full warm-up starts at the piece's start
    assert gop_spans(pts, key, [(0, 10), (10, 90)], lead=25)[1] == Span(0, 100, 10)


@pytest.mark.parametrize("duration, frames, workers, seconds", [
    (50.75, 338, 6, 25.375),   # a webcam at 6.7 fps: 8.5 s chunks would hold 56 frames; two of 169
    (50.75, 338, 1, 25.375),   # one worker: three rounds of 17 s would hold 113 frames each
    (60.0, 1800, 6, 10.0),     # 30 fps: 300 frames a chunk already
    (30.0, 720, 6, 7.5),       # 24 fps, one round of 5 s = 120 frames: four chunks of 180 instead
    (3.0, 20, 8, 5.0),         # fewer frames than one chunk's least: one chunk, never below 5 s
])
def test_sparse_video_at_a_low_frame_rate_gets_fewer_longer_chunks(duration, frames, workers, seconds):
    assert auto_chunk_seconds(duration, workers, pixel_bit_rate=1.3, frames=frames) == pytest.approx(seconds)
    # a dense source (camera noise) keeps its rounds: an extra keyframe is a small share of its bits
    assert auto_chunk_seconds(duration, workers, pixel_bit_rate=8.0, frames=frames) == \
        auto_chunk_seconds(duration, workers, pixel_bit_rate=8.0)
