"""Which results the boss decodes (client/checks.py VerifyPolicy): the start of each ffmpeg
build's first result, retried chunks and a random sample in full, the rest by packets only."""
from __future__ import annotations

from pathlib import Path

import pytest

from ffdt.client.checks import HEAD_FRAMES, VerifyPolicy
from ffdt.client.scheduler import Chunk, Manifest


def chunk(i: int, errors: list[str] | None = None) -> Chunk:
    return Chunk(Manifest(index=i, source=Path(f"src/chunk_{i:05d}.mkv"), size=1, sha256="0" * 64, frames=10,
                          start=float(i)), errors=errors or [])


def test_a_builds_first_result_has_its_start_decoded_then_the_build_gets_packet_checks():
    policy = VerifyPolicy(0.0)
    assert policy.decode_frames("ffmpeg 5.1", chunk(0)) == HEAD_FRAMES
    # while that check runs, the same build's other results are not decoded a second time
    assert policy.decode_frames("ffmpeg 5.1", chunk(1)) == 0
    # another build is checked on its own
    assert policy.decode_frames("ffmpeg 6.0", chunk(2)) == HEAD_FRAMES
    policy.decoded("ffmpeg 5.1", passed=True)
    assert policy.decode_frames("ffmpeg 5.1", chunk(3)) == 0


def test_a_failed_first_check_leaves_the_build_untrusted():
    policy = VerifyPolicy(0.0)
    assert policy.decode_frames("b", chunk(0)) == HEAD_FRAMES
    policy.decoded("b", passed=False)
    assert policy.decode_frames("b", chunk(1)) == HEAD_FRAMES


def test_retried_chunks_and_the_random_sample_are_decoded_in_full():
    policy = VerifyPolicy(0.0)
    policy.decode_frames("b", chunk(0))
    policy.decoded("b", passed=True)
    assert policy.decode_frames("b", chunk(1, errors=["w1: 9 frames, expected 10"])) is None
    everything = VerifyPolicy(1.0)
    assert all(everything.decode_frames("b", chunk(i)) is None for i in range(20))


def test_the_last_round_is_not_drawn_and_the_earlier_rounds_make_up_for_it():
    policy = VerifyPolicy(0.1)
    draws = 20_000
    # 12 chunks on 6 workers: with 5 left or fewer, a decode would hold up the output
    assert not any(policy.drawn(left, 12, 6) for left in range(6) for _ in range(200))
    early = sum(policy.drawn(8, 12, 6) for _ in range(draws)) / draws
    assert 0.17 < early < 0.23                  # 0.1 * 12 / 6: the same 1.2 decodes expected in all
    # one round only: every result is in it, and drawn as before
    one_round = sum(policy.drawn(2, 6, 6) for _ in range(draws)) / draws
    assert 0.08 < one_round < 0.12
    assert all(VerifyPolicy(1.0).drawn(0, 12, 6) for _ in range(50))      # 1: everything, always
    assert not any(VerifyPolicy(0.0).drawn(8, 12, 6) for _ in range(500))


def output_info(frame_rate: float = 25.0, start: float = 0.0):
    from ffdt.client.media import MediaInfo
    return MediaInfo(Path("out.mp4"), "mp4", start, 60.0, [], 0, 1500, start, 60.0, [0], [True], [start], frame_rate)


def test_the_output_is_decoded_at_the_last_and_one_other_chunk_not_the_first():
    from ffdt.client.checks import BORDER_FRAMES_AFTER, decode_spans_for
    borders = [6.0 * i for i in range(1, 10)]                 # ten chunks
    drawn = set()
    for _ in range(200):
        spans = decode_spans_for(output_info(), borders)
        starts = [round(a - 0.02, 6) for a, _ in spans]        # half a frame in
        # the first chunk's frames were decoded by its own check, with the same parameter sets
        assert len(spans) == 2 and starts[-1] == 54.0 and starts[0] in borders[:-1]
        assert all(b - a == pytest.approx((BORDER_FRAMES_AFTER - 0.5) / 25) for a, b in spans)
        drawn.add(starts[0])
    assert len(drawn) > 3                                      # the other one is drawn, not fixed
    assert [round(a - 0.02, 6) for a, _ in decode_spans_for(output_info(), [30.0])] == [30.0]   # two chunks
    assert [round(a - 0.02, 6) for a, _ in decode_spans_for(output_info(), [])] == [0.0]        # one chunk: it
