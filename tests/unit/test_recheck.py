"""The re-encode check's bookkeeping (client/recheck.py), without processes: who gets the second
encode, what a match, a mismatch and a third encode decide, and a check nobody can finish."""
from __future__ import annotations

from pathlib import Path

from ffdt.client.recheck import Rechecks
from ffdt.client.scheduler import Chunk, ChunkState, Manifest, Scheduler

ALIKE = ("ffmpeg 5.1.9", 1, 0)


class FakeLink:
    def __init__(self, name: str, encoder=ALIKE) -> None:
        self.offer = type("Offer", (), {"name": name})()
        self.encoder, self.lied, self.alive, self.dropped_for = encoder, None, True, None

    def is_alive(self) -> bool:
        return self.alive

    def drop(self, why: str) -> None:
        self.lied = self.dropped_for = why
        self.alive = False


def setup(tmp_path: Path, fraction: float = 1.0, links=None):
    links = links or [FakeLink("a"), FakeLink("b"), FakeLink("c")]
    chunks = [Chunk(Manifest(index=i, source=tmp_path / f"p{i}.mkv", size=1, sha256="0" * 64, frames=25,
                             start=float(i))) for i in range(6)]
    sched = Scheduler(chunks)
    reports, cancels = [], []
    checks = Rechecks(fraction, sched, lambda: links, tmp_path, lambda *a, **k: reports.append((a, k)),
                      lambda index, workers: cancels.append((index, workers)))
    return checks, sched, links, reports


def result(tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    path.write_bytes(name.encode())
    return path


def test_a_chunk_not_drawn_counts_at_once(tmp_path):
    checks, sched, links, _ = setup(tmp_path, fraction=0.0)
    chunk = sched.take("a", 0)
    r = result(tmp_path, "r1")
    assert checks.accept(links[0], chunk, r, "s1", left=5, workers=3) == (links[0], r, "s1")


def test_no_draw_in_the_last_round_nor_without_a_worker_alike(tmp_path):
    checks, sched, links, _ = setup(tmp_path)
    chunk = sched.take("a", 0)
    r = result(tmp_path, "r1")
    assert checks.accept(links[0], chunk, r, "s1", left=2, workers=3) is not None        # the last round
    links[1].encoder = links[2].encoder = ("ffmpeg 6.0", 1, 0)
    chunk = sched.take("a", 0)
    assert checks.accept(links[0], chunk, r, "s1", left=5, workers=3) is not None        # nobody alike


def test_a_match_settles_the_chunk_with_one_result(tmp_path):
    checks, sched, links, _ = setup(tmp_path)
    chunk = sched.take("a", 0)
    assert checks.accept(links[0], chunk, result(tmp_path, "r1"), "s1", left=5, workers=3) is None
    # back in the queue first, for the others alike only
    assert chunk.state is ChunkState.PENDING and chunk.only == {"b", "c"}
    assert sched.take("a", 0) is not chunk
    assert sched.take("b", 0) is chunk
    second = result(tmp_path, "r2")
    assert checks.accept(links[1], chunk, second, "s1", left=5, workers=3) == (links[1], second, "s1")
    assert checks.agreed == 1 and chunk.only is None
    assert not list(tmp_path.glob("*.kept-*"))         # the first copy is gone
    assert not any(link.lied for link in links)


def test_a_mismatch_goes_to_a_third_and_the_odd_one_is_dropped(tmp_path):
    checks, sched, links, reports = setup(tmp_path)
    chunk = sched.take("a", 0)
    assert checks.accept(links[0], chunk, result(tmp_path, "r1"), "lie", left=5, workers=3) is None
    assert sched.take("b", 0) is chunk
    assert checks.accept(links[1], chunk, result(tmp_path, "r2"), "true", left=5, workers=3) is None
    assert chunk.only == {"c"}
    assert sched.take("c", 0) is chunk
    third = result(tmp_path, "r3")
    assert checks.accept(links[2], chunk, third, "true", left=5, workers=3) == (links[2], third, "true")
    assert "differs from 2 other workers'" in links[0].dropped_for
    assert links[1].lied is None and links[2].lied is None
    assert any(k.get("worker") == "a" for _, k in reports)


def test_a_check_nobody_alike_can_finish_keeps_the_first_result(tmp_path):
    checks, sched, links, _ = setup(tmp_path, links=[FakeLink("a"), FakeLink("b")])
    chunk = sched.take("a", 0)
    assert checks.accept(links[0], chunk, result(tmp_path, "r1"), "s1", left=5, workers=2) is None
    assert checks.settle_stalled() == []
    links[1].alive = False
    sched.release("b", "lost")
    [(settled, link, path, sha)] = checks.settle_stalled()
    assert settled is chunk and link is links[0] and sha == "s1" and path.read_bytes() == b"r1"


def test_a_second_encode_is_never_copied_to_the_first_worker_nor_fails_the_job(tmp_path):
    checks, sched, links, _ = setup(tmp_path)
    for chunk in sched.chunks[1:]:
        chunk.state = ChunkState.DONE          # only chunk 0 is left: the queue is empty after it
    chunk = sched.take("a", 0)
    assert checks.accept(links[0], chunk, result(tmp_path, "r1"), "s1", left=5, workers=3) is None
    assert sched.take("b", 0) is chunk
    # idle, "a" would take a straggler copy of chunk 0: not of its own result's second encode
    assert sched.take("a", 0) is None
    taken = 1
    while taken:                               # "b" fails it again and again
        sched.fail(chunk, "b", "bad result")
        assert not sched.finished.is_set() and sched.fatal is None
        taken = sched.take("b", 0) is chunk
    # out of tries, the chunk is nobody's: the job counts the first worker's checked result
    [(settled, link, _, sha)] = checks.settle_stalled()
    assert settled is chunk and link is links[0] and sha == "s1"


def test_a_liars_other_chunks_are_encoded_again(tmp_path):
    redone = []
    links = [FakeLink("a"), FakeLink("b"), FakeLink("c")]
    checks, sched, _, _ = setup(tmp_path, links=links)
    checks.redone = redone.extend
    counted = sched.take("a", 0)                  # chunk 0: "a"'s result counted, not drawn
    (tmp_path / f"{counted.name}.out.mkv").write_bytes(b"a's")
    sched.done(counted, "a", tmp_path / f"{counted.name}.out.mkv", "x")
    chunk = sched.take("a", 0)                    # chunk 1: drawn, and "a" lies
    assert checks.accept(links[0], chunk, result(tmp_path, "r1"), "lie", left=5, workers=3) is None
    assert sched.take("b", 0) is chunk
    assert checks.accept(links[1], chunk, result(tmp_path, "r2"), "true", left=5, workers=3) is None
    assert sched.take("c", 0) is chunk
    assert checks.accept(links[2], chunk, result(tmp_path, "r3"), "true", left=5, workers=3) is not None
    assert redone == [counted] and counted.state is ChunkState.PENDING and counted.result is None
    assert not (tmp_path / f"{counted.name}.out.mkv").exists()
    # and a result of its that was already on its way no longer counts
    late = sched.take("b", 0)
    assert checks.accept(links[0], late, result(tmp_path, "r4"), "z", left=5, workers=3) is None
    assert not (tmp_path / "r4").exists()


def test_a_worker_that_reconnects_does_not_check_its_own_result(tmp_path):
    again = FakeLink("a")                          # the same worker, a new session
    checks, sched, links, _ = setup(tmp_path, links=[FakeLink("a"), again, FakeLink("b")])
    chunk = sched.take("a", 0)
    assert checks.accept(links[0], chunk, result(tmp_path, "r1"), "s1", left=5, workers=3) is None
    assert chunk.only == {"b"}


def test_three_results_that_all_differ_count_the_first_and_say_whose(tmp_path):
    checks, sched, links, _ = setup(tmp_path, links=[FakeLink(n) for n in "abcd"])
    chunk = sched.take("a", 0)
    assert checks.accept(links[0], chunk, result(tmp_path, "r1"), "s1", left=5, workers=4) is None
    assert sched.take("b", 0) is chunk
    assert checks.accept(links[1], chunk, result(tmp_path, "r2"), "s2", left=5, workers=4) is None
    taker = sched.take("c", 0) or sched.take("d", 0)
    assert taker is chunk
    counted, path, sha = checks.accept(links[2], chunk, result(tmp_path, "r3"), "s3", left=5, workers=4)
    assert counted is links[0] and sha == "s1" and path.read_bytes() == b"r1"
    # recorded as the job does: handed in by "c", made by "a": a later redo of "a" finds it
    sched.done(chunk, "c", tmp_path / "out.mkv", sha, received=path, made_by=counted.offer.name)
    assert chunk.made_by == "a" and sched.redo("a") == [chunk]


def test_a_kept_chunk_out_of_tries_whose_result_stops_counting_goes_to_anyone(tmp_path):
    checks, sched, links, _ = setup(tmp_path)
    chunk = sched.take("a", 0)
    assert checks.accept(links[0], chunk, result(tmp_path, "r1"), "s1", left=5, workers=3) is None
    while (taken := sched.take("b", 0) or sched.take("c", 0)) is chunk:
        sched.fail(chunk, next(iter({"b", "c"} & set(chunk.tried_on[-1:]))), "bad result")
    assert chunk.only == set() and sched.fatal is None
    links[0].drop("lied elsewhere")                # its kept result no longer counts
    with checks.lock:
        assert checks.settle_stalled() == []       # nothing honest kept: encoded afresh, by anyone
    assert chunk.only is None and sched.take("d", 0) is chunk


def test_a_worker_nobody_can_check_is_named_once(tmp_path, caplog):
    links = [FakeLink("a"), FakeLink("b", encoder=("ffmpeg 6.0", 1, (0, 0), "x86_64/1")), FakeLink("c", None)]
    checks, sched, _, _ = setup(tmp_path, links=links)
    with caplog.at_level("WARNING", logger="boss"):
        for link in links * 2:
            chunk = sched.take(link.offer.name, 0)
            assert checks.accept(link, chunk, result(tmp_path, f"r{chunk.index}"), "s", left=5, workers=3)
    said = [r.getMessage() for r in caplog.records if "no other worker alike" in r.getMessage()]
    assert len(said) == 3 and "does not say what it runs" in said[2]
