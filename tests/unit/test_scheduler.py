"""The boss's chunk table (client/scheduler.py): assignment, retries, lost workers, completion."""
from __future__ import annotations

import dataclasses
import threading
import time
from pathlib import Path

import pytest

from ffdt.client.scheduler import Chunk, ChunkState, Manifest, Scheduler

NO_WAIT = 0.05


def make_chunks(n: int) -> list[Chunk]:
    return [Chunk(Manifest(index=i, source=Path(f"src/chunk_{i:05d}.mkv"), size=1000 + i, sha256=f"{i:064x}",
                           frames=25, start=float(i))) for i in range(n)]


def finish(s: Scheduler, chunk: Chunk, worker: str) -> bool:
    """True if the result was recorded (first valid result), False if it was a duplicate."""
    return s.done(chunk, worker, Path(f"out/{chunk.name}.mkv"), "f" * 64) is not None


def test_chunk_names_are_zero_padded_so_they_sort_in_order():
    names = [c.name for c in make_chunks(12)]
    assert names[3] == "chunk_00003"
    assert sorted(names) == names


def test_take_hands_out_chunks_in_order_and_marks_them_assigned():
    s = Scheduler(make_chunks(3))
    got = [s.take("w1", wait=NO_WAIT), s.take("w2", wait=NO_WAIT), s.take("w1", wait=NO_WAIT)]
    assert [c.index for c in got] == [0, 1, 2]
    assert all(c.state is ChunkState.ASSIGNED and c.attempts == 1 for c in got)
    assert got[1].workers == {"w2"} and got[1].tried_on == ["w2"]


def test_take_returns_none_when_nothing_is_pending():
    s = Scheduler(make_chunks(1), max_copies=1)     # no straggler copies
    assert s.take("w1", wait=NO_WAIT) is not None
    started = time.monotonic()
    assert s.take("w2", wait=NO_WAIT) is None
    assert time.monotonic() - started < 2.0      # waited about `wait`, not forever


def test_done_records_the_result_and_finishing_the_last_chunk_sets_finished():
    s = Scheduler(make_chunks(2))
    a, b = s.take("w1", wait=NO_WAIT), s.take("w2", wait=NO_WAIT)
    assert finish(s, a, "w1") is True
    assert a.state is ChunkState.DONE and a.result == Path("out/chunk_00000.mkv") and a.result_sha256 == "f" * 64
    assert a.workers == set() and a.progress == a.frames
    assert not s.finished.is_set()
    assert finish(s, b, "w2") is True
    assert s.finished.is_set() and s.fatal is None
    assert s.counts() == (2, 50)


def test_a_duplicate_done_is_refused():
    s = Scheduler(make_chunks(2))
    chunk = s.take("w1", wait=NO_WAIT)
    assert finish(s, chunk, "w1") is True
    first_result = chunk.result
    assert s.done(chunk, "w1", Path("out/other.mkv"), "0" * 64) is None
    assert chunk.result == first_result and chunk.result_sha256 == "f" * 64


def test_failed_chunk_is_retried_first_then_fails_the_job_after_max_attempts():
    s = Scheduler(make_chunks(3), max_attempts=2)
    chunk = s.take("w1", wait=NO_WAIT)
    s.fail(chunk, "w1", "encoder crashed")
    assert chunk.state is ChunkState.PENDING and s.fatal is None and not s.finished.is_set()
    again = s.take("w2", wait=NO_WAIT)
    assert again is chunk                         # the retry jumps the queue: it holds up the concat
    assert chunk.attempts == 2 and chunk.tried_on == ["w1", "w2"]
    s.fail(chunk, "w2", "out of memory")
    assert chunk.state is ChunkState.FAILED
    assert s.finished.is_set()
    assert s.fatal is not None
    assert "chunk_00000" in s.fatal and "2 times" in s.fatal
    assert "w1" in s.fatal and "w2" in s.fatal and "out of memory" in s.fatal
    assert chunk.errors == ["w1: encoder crashed", "w2: out of memory"]
    assert s.take("w3", wait=NO_WAIT) is None     # a failed job hands out nothing more


def test_max_attempts_one_fails_at_the_first_error():
    s = Scheduler(make_chunks(1), max_attempts=1)
    chunk = s.take("w1", wait=NO_WAIT)
    s.fail(chunk, "w1", "bad")
    assert chunk.state is ChunkState.FAILED and s.fatal and "chunk_00000" in s.fatal


def test_release_requeues_a_lost_workers_chunks_without_counting_the_attempt():
    s = Scheduler(make_chunks(3), max_attempts=1)
    mine = s.take("w1", wait=NO_WAIT)
    theirs = s.take("w2", wait=NO_WAIT)
    lost = s.release("w1", "connection lost")
    assert lost == [mine]
    assert mine.state is ChunkState.PENDING and mine.workers == set() and mine.attempts == 0
    assert theirs.state is ChunkState.ASSIGNED and theirs.workers == {"w2"}   # untouched
    retry = s.take("w3", wait=NO_WAIT)
    assert retry is mine and mine.attempts == 1
    # max_attempts=1: had the lost worker counted, this success could never have been reached
    assert finish(s, mine, "w3") is True
    assert s.fatal is None


def test_giveback_requeues_one_chunk_first_without_counting_the_attempt():
    s = Scheduler(make_chunks(3), max_attempts=1)
    refused = s.take("w1", wait=NO_WAIT)
    kept = s.take("w1", wait=NO_WAIT)
    s.giveback(refused, "w1")                     # e.g. the worker's disk was full
    assert refused.state is ChunkState.PENDING and refused.attempts == 0 and refused.workers == set()
    assert kept.state is ChunkState.ASSIGNED and kept.workers == {"w1"}    # only the one chunk
    assert s.take("w2", wait=NO_WAIT) is refused  # ahead of chunk 2
    assert finish(s, refused, "w2") is True and s.fatal is None


def test_a_late_failure_from_a_released_worker_changes_nothing():
    s = Scheduler(make_chunks(1), max_attempts=1)
    chunk = s.take("w1", wait=NO_WAIT)
    s.release("w1", "silent")
    s.fail(chunk, "w1", "late report")
    assert chunk.state is ChunkState.PENDING and s.fatal is None
    taken = s.take("w2", wait=NO_WAIT)
    s.fail(chunk, "w1", "even later")             # w1 no longer holds it; w2 does
    assert taken is chunk and chunk.state is ChunkState.ASSIGNED and chunk.workers == {"w2"}


def test_release_of_a_worker_with_no_chunks_is_harmless():
    s = Scheduler(make_chunks(2))
    chunk = s.take("w1", wait=NO_WAIT)
    assert s.release("w9", "gone") == []
    assert chunk.state is ChunkState.ASSIGNED and chunk.errors == []


def test_a_waiting_take_wakes_when_a_chunk_comes_back(background):
    s = Scheduler(make_chunks(1))
    chunk = s.take("w1", wait=NO_WAIT)
    waiter = background(s.take, "w2", 5.0)
    s.fail(chunk, "w1", "try elsewhere")
    got = waiter.join()
    assert got is chunk and chunk.workers == {"w2"}


def test_a_waiting_take_returns_none_when_the_job_is_aborted(background):
    s = Scheduler(make_chunks(1))
    s.take("w1", wait=NO_WAIT)
    waiter = background(s.take, "w2", 5.0)
    s.abort("user pressed ctrl-c")
    assert waiter.join() is None
    assert s.fatal == "user pressed ctrl-c" and s.finished.is_set()


def test_abort_keeps_the_first_fatal_reason():
    s = Scheduler(make_chunks(1), max_attempts=1)
    chunk = s.take("w1", wait=NO_WAIT)
    s.fail(chunk, "w1", "boom")
    first = s.fatal
    s.abort("later reason")
    assert s.fatal == first


def test_progress_is_clamped_and_ignored_from_other_workers():
    s = Scheduler(make_chunks(1))
    chunk = s.take("w1", wait=NO_WAIT)
    s.progress(0, "w1", 10)
    assert chunk.progress == 10
    s.progress(0, "w2", 20)                        # not its chunk
    assert chunk.progress == 10
    s.progress(0, "w1", 999)
    assert chunk.progress == chunk.frames
    s.progress(7, "w1", 5)                         # no such chunk: ignored, no IndexError


def test_assigned_to_checks_the_worker():
    s = Scheduler(make_chunks(2))
    chunk = s.take("w1", wait=NO_WAIT)
    assert s.assigned_to(0, "w1") is chunk
    assert s.assigned_to(0, "w2") is None
    assert s.assigned_to(1, "w1") is None
    assert s.assigned_to(-1, "w1") is None


@pytest.mark.parametrize("chunks", [[], "all-done"], ids=["empty", "all-done"])
def test_a_table_with_nothing_to_do_is_finished_at_once(chunks):
    if chunks == "all-done":
        chunks = make_chunks(2)
        for c in chunks:
            c.state = ChunkState.DONE
    s = Scheduler(chunks)
    assert s.finished.is_set()
    assert s.take("w1", wait=NO_WAIT) is None


def test_a_result_that_lands_after_its_worker_was_released_is_not_handed_out_again():
    """The boss verifies a downloaded result in the background; the worker's link may die (release)
    before that verification finishes and calls done()."""
    s = Scheduler(make_chunks(2))
    chunk = s.take("w1", wait=NO_WAIT)
    s.release("w1", "connection lost")            # back in the queue
    assert finish(s, chunk, "w1") is True         # ...but its result was good after all
    nxt = s.take("w2", wait=NO_WAIT)
    assert nxt is not chunk
    assert chunk.state is ChunkState.DONE
    assert s.counts()[0] == 1


def test_an_idle_worker_gets_a_copy_of_the_slowest_chunk_and_the_first_result_wins():
    s = Scheduler(make_chunks(2))
    a, b = s.take("w1", wait=NO_WAIT), s.take("w2", wait=NO_WAIT)
    s.progress(a.index, "w1", 20)
    s.progress(b.index, "w2", 5)                   # b is the straggler
    copy = s.take("w3", wait=NO_WAIT)
    assert copy is b and b.workers == {"w2", "w3"} and b.attempts == 1
    assert s.take("w4", wait=NO_WAIT) is None       # b has two copies; a is past half-way: no copy wins
    others = s.done(b, "w3", Path("out/b.mkv"), "f" * 64)
    assert others == {"w2"}                          # the slower copy is to be cancelled
    assert s.done(b, "w2", Path("out/b2.mkv"), "e" * 64) is None and b.result == Path("out/b.mkv")


def test_in_a_queue_an_idle_worker_takes_the_next_files_chunk_not_a_copy():
    """A queue's first file has only its tail left, the next file's chunks wait: a worker idle
    in the first gets no straggler copy there (it takes a chunk of the next file), until the
    next file has none waiting."""
    second = Scheduler(make_chunks(3))
    first = Scheduler(make_chunks(2), copies_wanted=lambda: not second.has_pending())
    a, b = first.take("w1", wait=NO_WAIT), first.take("w2", wait=NO_WAIT)
    first.progress(a.index, "w1", 20)
    first.progress(b.index, "w2", 5)                 # b is the straggler
    assert first.take("w3", wait=NO_WAIT) is None and b.workers == {"w2"}
    for worker in ("w3", "w4", "w5"):
        assert second.take(worker, wait=NO_WAIT) is not None
    assert not second.has_pending()
    assert first.take("w3", wait=NO_WAIT) is b and b.workers == {"w2", "w3"}


def test_a_failed_copy_does_not_requeue_a_chunk_still_encoding_elsewhere():
    s = Scheduler(make_chunks(1))
    chunk = s.take("w1", wait=NO_WAIT)
    assert s.take("w2", wait=NO_WAIT) is chunk
    s.fail(chunk, "w2", "boom")
    assert chunk.state is ChunkState.ASSIGNED and chunk.workers == {"w1"} and s.fatal is None


def test_the_longest_chunks_go_out_first():
    chunks = make_chunks(4)
    for chunk, frames in zip(chunks, (25, 40, 10, 40)):
        chunk.manifest = dataclasses.replace(chunk.manifest, frames=frames)
    s = Scheduler(chunks)
    assert [s.take(f"w{i}", wait=NO_WAIT).index for i in range(4)] == [1, 3, 0, 2]


def test_a_worker_holding_a_chunk_gets_no_copy_and_an_idle_one_takes_a_held_chunk_not_yet_started():
    s = Scheduler(make_chunks(3))
    a, b = s.take("w1", wait=NO_WAIT), s.take("w1", wait=NO_WAIT)    # w1 encodes a, holds b (prefetched)
    s.progress(a.index, "w1", 0)                                      # a started, b not
    c = s.take("w2", wait=NO_WAIT)
    assert s.take("w2", wait=NO_WAIT) is None, "w2 still holds c: asking ahead gets no copy"
    assert finish(s, c, "w2")
    stolen = s.take("w2", wait=NO_WAIT)
    assert stolen is b, "the held, unstarted chunk is taken before a copy of one being encoded"
    assert s.steal(b, "w2") == {"w1"} and b.workers == {"w2"}
    assert s.assigned_to(b.index, "w1") is None                       # w1's copy is to be cancelled
    assert s.steal(a, "w2") == set(), "a chunk already started is never taken away"


def test_chunks_added_while_splitting_are_handed_out_and_the_job_finishes_only_when_complete():
    chunks = make_chunks(3)
    s = Scheduler([], complete=False)
    assert s.take("w1", wait=NO_WAIT) is None
    s.add(chunks[:2], complete=False)
    first = s.take("w1", wait=NO_WAIT)
    assert first is not None and s.take("w2", wait=NO_WAIT) is not None
    assert s.take("w3", wait=NO_WAIT) is None, "no straggler copies while chunks are still coming"
    for chunk in chunks[:2]:
        assert finish(s, chunk, "w1" if chunk is first else "w2")
    assert not s.finished.is_set(), "every chunk known so far is done, but the split goes on"
    s.add(chunks[2:], complete=True)
    assert finish(s, s.take("w1", wait=NO_WAIT), "w1")
    assert s.finished.is_set()
    with pytest.raises(ValueError):
        s.add(make_chunks(1), complete=True)       # index 0 again: out of order


def test_on_done_runs_outside_the_lock_and_finished_waits_for_it():
    seen: list[tuple[bool, bool]] = []

    def on_done(chunk: Chunk) -> None:          # journals to disk: must not hold up other links
        other: list[bool] = []
        probe = threading.Thread(target=lambda: other.append(s._cond.acquire(timeout=1) and not s._cond.release()))
        probe.start()
        probe.join(timeout=5)
        seen.append((other == [True], s.finished.is_set()))

    s = Scheduler(make_chunks(1), on_done=on_done)
    assert finish(s, s.take("w1", wait=NO_WAIT), "w1")
    assert seen == [(True, False)], "another thread could take the lock, and the job was not finished yet"
    assert s.finished.is_set()


def test_a_chunk_just_handed_to_an_idle_worker_is_copied_not_taken_away():
    s = Scheduler(make_chunks(1))
    chunk = s.take("w1", wait=NO_WAIT)               # w1 is about to start it; no progress seen yet
    copy = s.take("w2", wait=NO_WAIT)
    assert copy is chunk and chunk.workers == {"w1", "w2"}
    assert s.steal(chunk, "w2") == set() and chunk.workers == {"w1", "w2"}, "w1 keeps its copy"


def test_a_worker_lost_while_holding_a_chunk_gets_no_copy_of_it_when_it_comes_back():
    s = Scheduler(make_chunks(2))
    chunk = s.take("w1", wait=NO_WAIT)
    s.release("w1", "silent for 30s")                # frozen: its chunk goes back to the queue
    assert s.take("w2", wait=NO_WAIT) is chunk
    other = s.take("w3", wait=NO_WAIT)
    assert finish(s, other, "w3")
    assert s.take("w1", wait=NO_WAIT) is None, "the woken worker is not handed its old chunk again"
    assert s.take("w3", wait=NO_WAIT) is chunk       # an idle worker that was not lost still gets a copy


def test_a_manifest_round_trips_through_the_state_file_and_assign_sends_its_projection():
    whole = Manifest(index=3, source=Path("/work/src/piece_00003.mkv"), size=10, sha256="a" * 64, frames=50,
                     start=1.5, span=1.96)
    ranged = dataclasses.replace(whole, skip=12, whole=False)
    for m in (whole, ranged):
        assert Manifest.from_state(m.to_state(), Path("/work/src")) == m
    assert whole.assign_fields() == {"chunk": 3, "size": 10, "sha256": "a" * 64, "frames": 50}
    assert ranged.assign_fields()["skip"] == 12 and ranged.assign_fields()["limit"] == 50
    # the state file names the source; where it lives is the boss's own business
    state = {**whole.to_state(), "source": "../../etc/passwd"}
    assert Manifest.from_state(state, Path("/work/src")).source == Path("/work/src/passwd")
    with pytest.raises((KeyError, TypeError)):     # the job state loader starts fresh on these
        Manifest.from_state({k: v for k, v in whole.to_state().items() if k != "sha256"}, Path("/work/src"))


def test_asking_ahead_yields_to_a_worker_that_has_nothing():
    s = Scheduler(make_chunks(3))
    s.take("w1", wait=NO_WAIT)                      # w1 encodes chunk 0
    assert finish(s, s.take("w2", wait=NO_WAIT), "w2")      # w2 did chunk 1 and holds nothing
    assert s.take("w1", wait=NO_WAIT) is None, "w1 asking ahead must not take w2's next chunk"
    assert s.take("w2", wait=NO_WAIT) is s.chunks[2]
    gone = Scheduler(make_chunks(3))
    gone.take("w1", wait=NO_WAIT)
    assert finish(gone, gone.take("w2", wait=NO_WAIT), "w2")
    gone.release("w2", "session ended")             # w2 left the job: w1 may ask ahead again
    assert gone.take("w1", wait=NO_WAIT) is gone.chunks[2]


def test_wait_done_waits_for_the_result_file_to_be_in_place(tmp_path):
    """The early join copies a result as soon as wait_done says so: not before its file is moved."""
    s = Scheduler(make_chunks(2))
    chunk = s.take("w1", wait=NO_WAIT)
    assert s.wait_done(chunk, 0.05) is None
    received, result = tmp_path / "recv.mkv", tmp_path / "out.mkv"
    received.write_bytes(b"result")
    seen = []
    waiter = threading.Thread(target=lambda: seen.append((s.wait_done(chunk, 5), result.exists())))
    waiter.start()
    s.done(chunk, "w1", result, "f" * 64, received=received)
    waiter.join()
    assert seen == [(True, True)]
    other = s.take("w1", wait=NO_WAIT)
    s.abort("stopped")
    assert s.wait_done(other, 5) is False


def test_a_chunk_may_end_its_workers_work_only_with_nothing_behind_it():
    """may_end_with (when the boss fetches a result's sample): not while chunks wait to be
    handed out, nor while the worker holds another one, nor while the split may add more."""
    s = Scheduler(make_chunks(4))
    a, b = s.take("w1", wait=NO_WAIT), s.take("w2", wait=NO_WAIT)
    assert not s.may_end_with(a, "w1")              # two chunks still wait
    c, d = s.take("w1", wait=NO_WAIT), s.take("w2", wait=NO_WAIT)
    assert not s.may_end_with(a, "w1") and not s.may_end_with(b, "w2")    # each holds one behind
    assert finish(s, a, "w1")
    s.progress(b.index, "w2", 25)
    s.progress(d.index, "w2", 1)          # w2 is on d: b's result is still on its way
    assert s.may_end_with(c, "w1") and s.may_end_with(d, "w2")
    growing = Scheduler(make_chunks(1), complete=False)
    e = growing.take("w1", wait=NO_WAIT)
    assert not growing.may_end_with(e, "w1")
    growing.add([], complete=True)
    assert growing.may_end_with(e, "w1")
