"""The boss's on-disk job state: what resumes, and what forces a fresh start."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ffdt.client.jobstate import Identity, JobState
from ffdt.client.scheduler import Chunk, ChunkState, Manifest


def make_job(tmp_path: Path, n: int = 3) -> tuple[Path, Identity, list[Chunk]]:
    src = tmp_path / "in.mp4"
    src.write_bytes(b"input" * 100)
    work = tmp_path / "work"
    (work / "src").mkdir(parents=True)
    chunks = []
    for i in range(n):
        piece = work / "src" / f"piece_{i:05d}.mkv"
        piece.write_bytes(bytes([i]) * (100 + i))
        chunks.append(Chunk(Manifest(index=i, source=piece, size=piece.stat().st_size,
                                     sha256=hashlib.sha256(piece.read_bytes()).hexdigest(), frames=10, start=float(i))))
    return work, Identity.of(src, {"vcodec": "libx264"}), chunks


def finish(chunk: Chunk, work: Path, data: bytes = b"result") -> None:
    result = work / f"{chunk.name}.out.mkv"
    result.write_bytes(data)
    chunk.state, chunk.result, chunk.result_sha256 = ChunkState.DONE, result, hashlib.sha256(data).hexdigest()


def test_saved_state_resumes_with_verified_results_done(tmp_path):
    work, identity, chunks = make_job(tmp_path)
    finish(chunks[1], work)
    JobState(work, identity).save(chunks, 30)
    loaded, expected = JobState(work, identity).load()
    assert expected == 30
    assert [c.state for c in loaded] == [ChunkState.PENDING, ChunkState.DONE, ChunkState.PENDING]
    assert loaded[1].result == work / "chunk_00001.out.mkv"


def test_a_damaged_result_is_encoded_again(tmp_path):
    work, identity, chunks = make_job(tmp_path)
    finish(chunks[0], work)
    JobState(work, identity).save(chunks, 30)
    (work / "chunk_00000.out.mkv").write_bytes(b"garbage")
    loaded, _ = JobState(work, identity).load()
    assert loaded[0].state is ChunkState.PENDING


def test_changed_settings_or_input_start_fresh(tmp_path):
    work, identity, chunks = make_job(tmp_path)
    JobState(work, identity).save(chunks, 30)
    other = Identity(identity.input, identity.size, identity.mtime_ns, {"vcodec": "libx265"})
    assert JobState(work, other).load() is None
    (tmp_path / "in.mp4").write_bytes(b"changed input")
    assert JobState(work, Identity.of(tmp_path / "in.mp4", {"vcodec": "libx264"})).load() is None


def test_a_damaged_source_piece_forces_a_fresh_split(tmp_path):
    work, identity, chunks = make_job(tmp_path)
    JobState(work, identity).save(chunks, 30)
    chunks[2].source.write_bytes(b"\xff" * chunks[2].size)     # same size, other bytes
    assert JobState(work, identity).load() is None


def test_save_is_atomic_and_leaves_no_temp_file(tmp_path):
    work, identity, chunks = make_job(tmp_path)
    state = JobState(work, identity)
    state.save(chunks, 30)
    assert json.loads(state.path.read_text())["version"] == 1
    assert not (work / "state.json.tmp").exists()


def test_unreadable_state_is_ignored(tmp_path):
    work, identity, _ = make_job(tmp_path)
    (work / "state.json").write_text("{not json")
    assert JobState(work, identity).load() is None


def test_chunks_finished_after_the_split_come_back_from_the_journal(tmp_path):
    work, identity, chunks = make_job(tmp_path)
    state = JobState(work, identity)
    state.save(chunks, 30)                      # the split: nothing done yet
    for chunk in (chunks[0], chunks[2]):
        finish(chunk, work)
        state.record_done(chunk)
    with state.journal.open("a") as f:
        f.write('{"index": 1, "result_sha')       # a crash in the middle of a line
    loaded, _ = JobState(work, identity).load()
    assert [c.state for c in loaded] == [ChunkState.DONE, ChunkState.PENDING, ChunkState.DONE]


def test_a_new_state_starts_a_new_journal(tmp_path):
    work, identity, chunks = make_job(tmp_path)
    state = JobState(work, identity)
    state.save(chunks, 30)
    finish(chunks[0], work)
    state.record_done(chunks[0])
    fresh = [Chunk(c.manifest) for c in chunks]      # say, a fresh split with nothing done
    state.save(fresh, 30)
    assert not state.journal.exists()
    loaded, _ = JobState(work, identity).load()
    assert all(c.state is ChunkState.PENDING for c in loaded)
