"""The join stage (client/join.py): the early concat, fed through named pipes while results come
in, writes the same output as a concat of the result files at the end; if it fails the end join
still writes it; a job that fails leaves no concat running, no pipe and no partial output."""
from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from ffdt.client import media
from ffdt.client.join import AudioJob, Join
from ffdt.client.scheduler import Chunk, ChunkState, Scheduler
from ffdt.client.split import Splitter
from ffdt.common import ffmpeg, mp4
from ffdt.common.settings import Settings
from ffdt.common.transfer import sha256_file


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """A 6 s source with audio (a keyframe each second), its three 2 s pieces, and each piece
    encoded as a worker would."""
    d = tmp_path_factory.mktemp("join")
    tools = ffmpeg.find_tools()
    src = d / "src.mp4"
    ffmpeg.run([tools.ffmpeg, *ffmpeg.BASE_FLAGS, "-f", "lavfi", "-i", "testsrc2=size=160x96:rate=25:duration=6",
                "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000:duration=6", "-c:v", "libx264",
                "-preset", "ultrafast", "-g", "25", "-c:a", "aac", "-shortest", ffmpeg.input_path(src)])
    info = media.inspect(tools, src)
    work = d / "work"
    work.mkdir()
    chunks = Splitter(tools, info, Settings(), work, 2.0).run(2, lambda chunks, complete: None)
    assert len(chunks) == 3
    results = []
    for chunk in chunks:
        out = work / f"{chunk.name}.enc.mkv"
        ffmpeg.run([tools.ffmpeg, *ffmpeg.BASE_FLAGS, "-i", ffmpeg.input_path(chunk.source), "-c:v", "libx264",
                    "-preset", "ultrafast", "-f", "matroska", ffmpeg.input_path(out)])
        results.append(out)
    audio = AudioJob(tools, src, work, "aac", None, True)
    audio.start()
    audio.join()
    return tools, info, work, [c.manifest for c in chunks], results, audio


def fresh_job(made, tmp_path: Path) -> tuple[Scheduler, Join, list[Path]]:
    """The chunk table of a new job over the made pieces, and its Join writing tmp_path/out.mkv
    (its work directory tmp_path/work)."""
    tools, info, _, manifests, results, audio = made
    scheduler = Scheduler([Chunk(m) for m in manifests])
    (tmp_path / "work").mkdir()
    join = Join(tools, info, Settings(), media.container_for(tmp_path / "out.mkv"), tmp_path / "out.mkv",
                tmp_path / "work", audio)
    return scheduler, join, results


def hand_in(scheduler: Scheduler, results: list[Path], order: list[int], tmp_path: Path, delay: float) -> None:
    """Mark the chunks done in this order, `delay` seconds apart, each with a copy of its result
    moved into the work directory as the boss does."""
    for index in order:
        time.sleep(delay)
        chunk = scheduler.chunks[index]
        chunk.state, chunk.workers = ChunkState.ASSIGNED, {"w"}      # as take() leaves it
        copy = tmp_path / "work" / f"{chunk.name}.recv.mkv"
        copy.write_bytes(results[index].read_bytes())
        scheduler.done(chunk, "w", tmp_path / "work" / f"{chunk.name}.out.mkv", sha256_file(copy), received=copy)


def packets(tools: ffmpeg.Tools, path: Path) -> str:
    return ffmpeg.run([tools.ffprobe, "-v", "error", "-show_entries", "packet=stream_index,pts,dts,duration,size,flags",
                       "-of", "csv=p=0", ffmpeg.input_path(path)])


@pytest.fixture(scope="module")
def reference(made, tmp_path_factory) -> Path:
    """The output of the end join (every result in before the concat starts)."""
    d = tmp_path_factory.mktemp("end")
    scheduler, join, results = fresh_job(made, d)
    hand_in(scheduler, results, [0, 1, 2], d, 0)
    join.finish(scheduler.chunks, made[1].shown_frames)
    assert not join.joined_early
    return d / "out.mkv"


def early_job(made, tmp_path: Path) -> tuple[Scheduler, Join, list[Path]]:
    scheduler, join, results = fresh_job(made, tmp_path)
    join.start_early(scheduler, ready=lambda: True)
    return scheduler, join, results


def concat_started(join: Join) -> ffmpeg.Background:
    deadline = time.monotonic() + 20
    while join._early is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert join._early is not None
    return join._early


def test_the_early_join_writes_what_the_end_join_writes(made, reference, tmp_path):
    scheduler, join, results = early_job(made, tmp_path)
    # out of order, as workers finish: chunk 0 holds up the others until it comes
    hand_in(scheduler, results, [2, 0, 1], tmp_path, 0.3)
    summary = join.finish(scheduler.chunks, made[1].shown_frames)
    assert join.joined_early
    assert summary["frames"] == made[1].shown_frames
    assert packets(made[0], tmp_path / "out.mkv") == packets(made[0], reference)
    assert not join.pipes.exists() and not join.tmp.exists()


def test_a_failed_early_join_is_done_again_from_the_files(made, reference, tmp_path):
    scheduler, join, results = early_job(made, tmp_path)
    hand_in(scheduler, results, [0], tmp_path, 0)
    concat_started(join).kill()        # the concat dies half-way (a full disk, say)
    hand_in(scheduler, results, [1, 2], tmp_path, 0)
    join.finish(scheduler.chunks, made[1].shown_frames)
    assert not join.joined_early
    assert packets(made[0], tmp_path / "out.mkv") == packets(made[0], reference)


def test_a_failed_job_leaves_no_concat_pipe_or_partial_output(made, tmp_path):
    scheduler, join, results = early_job(made, tmp_path)
    hand_in(scheduler, results, [0], tmp_path, 0)
    proc = concat_started(join).proc
    assert proc.poll() is None           # waiting on chunk 1's pipe
    started = time.monotonic()
    scheduler.abort("a worker sent garbage three times")
    join.close()
    assert time.monotonic() - started < 5
    assert proc.poll() is not None
    assert proc not in ffmpeg._live
    assert not join.pipes.exists() and not join.tmp.exists() and not (tmp_path / "out.mkv").exists()
    assert not any(t.name == "join" and t.is_alive() for t in threading.enumerate())


def test_the_job_waits_for_the_split_and_the_audio_before_the_early_join(made, tmp_path):
    scheduler, join, results = fresh_job(made, tmp_path)
    ready = threading.Event()
    join.start_early(scheduler, ready=ready.is_set)
    hand_in(scheduler, results, [0, 1], tmp_path, 0)
    time.sleep(0.8)
    assert join._early is None           # the audio is not there yet: the concat would read half a file
    ready.set()
    hand_in(scheduler, results, [2], tmp_path, 0)
    join.finish(scheduler.chunks, made[1].shown_frames)
    assert join.joined_early and (tmp_path / "out.mkv").exists()


def test_a_big_input_says_why_the_probe_takes_time(made, monkeypatch, caplog):
    """Reading every packet of a long input takes a while with nothing else on screen: the boss
    says what it is doing (for inputs of a gigabyte or more; here the bound is lowered). Not
    for an MP4 whose sample tables give the packets (common/mp4.py): nothing takes time then."""
    tools, info = made[0], made[1]
    monkeypatch.setattr(media, "QUIET_PROBE_BYTES", 1)
    with caplog.at_level("INFO", logger=media.log.name):
        media.inspect(tools, info.path)
    assert not any("reading its packets" in r.getMessage() for r in caplog.records)

    def refuse(*args, **kwargs):
        raise mp4.Unsupported("for the test")

    monkeypatch.setattr(mp4, "packets_by_stream", refuse)      # as for an input the reader leaves to ffprobe
    with caplog.at_level("INFO", logger=media.log.name):
        media.inspect(tools, info.path)
    assert any("reading its packets" in r.getMessage() for r in caplog.records)
    caplog.clear()
    monkeypatch.setattr(media, "QUIET_PROBE_BYTES", 1 << 40)
    with caplog.at_level("INFO", logger=media.log.name):
        media.inspect(tools, info.path)
    assert not any("reading its packets" in r.getMessage() for r in caplog.records)
