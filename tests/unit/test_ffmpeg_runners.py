"""The runners of common/ffmpeg.py with real child processes: what a child sees of our
environment, and how quickly a child ends when the boss is stopped."""
from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from ffdt.common import ffmpeg
from ffdt.common.errors import ChunkError, FFmpegError
from ffdt.common.settings import Settings


def test_children_get_none_of_our_secrets(monkeypatch):
    """ffmpeg parses hostile bytes: what it can read of our environment must hold no password."""
    monkeypatch.setenv("FFDT_PASSWORD", "hunter2-secret")
    monkeypatch.setenv("SOME_TOKEN", "t0ken")
    seen = ffmpeg.run(["env"], timeout=10)
    with ffmpeg.run_lines(["env"], timeout=10) as lines:
        seen_streaming = "".join(lines)
    for text in (seen, seen_streaming):
        assert "hunter2-secret" not in text and "FFDT_" not in text and "t0ken" not in text
        assert "PATH=" in text


@pytest.mark.parametrize("streaming", [False, True], ids=["run", "run_lines"])
def test_kill_children_ends_a_child_another_thread_waits_on(streaming):
    """Ctrl-C/SIGTERM reach the main thread; a check waiting in a pool thread must not hold the
    exit up for the length of its deadline."""
    outcome: list[BaseException | str] = []

    def check() -> None:
        try:
            if streaming:
                with ffmpeg.run_lines(["sleep", "60"], timeout=120) as lines:
                    list(lines)
            else:
                ffmpeg.run(["sleep", "60"], timeout=120)
            outcome.append("finished")
        except FFmpegError as exc:
            outcome.append(exc)

    thread = threading.Thread(target=check)
    thread.start()
    time.sleep(0.3)
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        with ffmpeg.children_killed_on_error():
            raise KeyboardInterrupt
    thread.join(10)
    assert not thread.is_alive() and time.monotonic() - started < 5
    assert isinstance(outcome[0], FFmpegError)


def test_a_failed_job_kills_only_its_own_children(tmp_path):
    """Two jobs of a queue run at once: one failing must not kill the other's ffmpeg; Ctrl-C ends both."""
    mine, theirs = tmp_path / "a.ffdt-work", tmp_path / "b.ffdt-work"
    outcome: dict[str, BaseException | str] = {}

    def child(name: str, work: Path) -> None:
        try:   # the child names a file of the work dir among its arguments, as ffmpeg does
            ffmpeg.run(["sh", "-c", "exec sleep 60", "sh", ffmpeg.input_path(work / "piece_00000.mkv")], timeout=120)
            outcome[name] = "finished"
        except FFmpegError as exc:
            outcome[name] = exc

    threads = [threading.Thread(target=child, args=(n, w)) for n, w in (("mine", mine), ("theirs", theirs))]
    for t in threads:
        t.start()
    time.sleep(0.3)
    with pytest.raises(RuntimeError):
        with ffmpeg.children_killed_on_error(mine):
            raise RuntimeError("this job failed")
    threads[0].join(10)
    assert isinstance(outcome.get("mine"), FFmpegError) and threads[1].is_alive()
    with pytest.raises(KeyboardInterrupt):
        with ffmpeg.children_killed_on_error(mine):
            raise KeyboardInterrupt
    threads[1].join(10)
    assert isinstance(outcome.get("theirs"), FFmpegError)


def test_a_child_past_its_deadline_is_killed():
    started = time.monotonic()
    with pytest.raises(FFmpegError, match="no result after 0.5s"):
        ffmpeg.run(["sleep", "30"], timeout=0.5)
    assert time.monotonic() - started < 5


# ---------------------------------------------------------------- the boss's comparison with the source

@pytest.fixture(scope="module")
def source_and_results(tmp_path_factory):
    """A 40-frame source and results made from it: whole, cut short, run long, with a box drawn
    from frame 20 on."""
    d = tmp_path_factory.mktemp("compare")
    tools = ffmpeg.find_tools()

    def make(name: str, *args: str) -> Path:
        ffmpeg.run([tools.ffmpeg, *ffmpeg.BASE_FLAGS, *args, "-c:v", "libx264", "-preset", "ultrafast",
                    "-f", "matroska", ffmpeg.input_path(d / name)])
        return d / name

    src = make("src.mkv", "-f", "lavfi", "-i", "testsrc2=size=160x96:rate=25", "-frames:v", "40")
    return tools, src, {
        "whole": make("whole.mkv", "-i", str(src)),
        "short": make("short.mkv", "-i", str(src), "-frames:v", "30"),
        "long": make("long.mkv", "-i", str(src), "-vf", "tpad=stop=5:stop_mode=clone"),
        "boxed": make("boxed.mkv", "-i", str(src), "-vf", "drawbox=w=80:h=48:color=red:t=fill:enable='gte(n,20)'"),
    }


@pytest.mark.parametrize("result,frames", [("whole", 40), ("short", 30), ("long", 45)])
def test_a_full_comparison_has_one_value_per_result_frame(source_and_results, result, frames):
    """One decode of a result checks its picture and counts its frames, longer or shorter than
    the source's (the boss's full check relies on the count)."""
    tools, src, results = source_and_results
    compared = ffmpeg.compare_with_source(tools, src, results[result], Settings(), None, None, timeout=60)
    assert len(compared.psnr) == frames
    assert min(compared.psnr[:30]) > 30 and compared.messages == ""


def test_a_comparison_sees_a_change_only_where_it_looks(source_and_results):
    tools, src, results = source_and_results
    head = ffmpeg.compare_with_source(tools, src, results["boxed"], Settings(), None, 3, timeout=60)
    full = ffmpeg.compare_with_source(tools, src, results["boxed"], Settings(), None, None, timeout=60)
    assert len(head.psnr) == 3 and min(head.psnr) > 30
    assert min(full.psnr[:20]) > 30 and max(full.psnr[20:]) < 25


def test_a_comparison_over_a_frame_range_pairs_the_ranges_frames(source_and_results):
    """A chunk cut by frame range: the result holds the range's frames only."""
    tools, src, results = source_and_results
    compared = ffmpeg.compare_with_source(tools, src, results["short"], Settings(), (0, 30), None, timeout=60)
    assert len(compared.psnr) == 30 and min(compared.psnr) > 30
    shifted = ffmpeg.compare_with_source(tools, src, results["short"], Settings(), (5, 30), 10, timeout=60)
    assert max(shifted.psnr) < 30      # frame i against the source's i + 5: not the same picture


def test_several_comparisons_in_one_run_give_each_pair_its_own_values(source_and_results, tmp_path):
    """compare_many: each pair's values are what a run of its own gives, a frame range included."""
    tools, src, results = source_and_results
    boxed = tmp_path / "boxed-early.mkv"
    ffmpeg.run([tools.ffmpeg, *ffmpeg.BASE_FLAGS, "-i", str(src), "-vf", "drawbox=w=80:h=48:color=red:t=fill",
                "-c:v", "libx264", "-preset", "ultrafast", "-f", "matroska", str(boxed)])
    pairs = [(src, results["whole"], None), (src, boxed, None), (src, results["short"], (5, 30))]
    many = ffmpeg.compare_many(tools, pairs, Settings(), 3, timeout=60)
    alone = [ffmpeg.compare_with_source(tools, a, b, Settings(), r, 3, timeout=60) for a, b, r in pairs]
    assert [[round(v, 1) for v in c.psnr] for c in many] == [[round(v, 1) for v in c.psnr] for c in alone]
    assert min(many[0].psnr) > 30 and max(many[1].psnr) < 25 and max(many[2].psnr) < 30
    assert all(c.messages == "" for c in many)


def test_results_compared_at_once_share_runs_and_a_bad_one_is_told_apart(source_and_results, tmp_path):
    """checks.Comparisons: results checked at the same time are compared in fewer ffmpeg runs
    than results, each with its own values; a result that is not a video fails alone (the run it
    was in is done again result by result) and the others still pass."""
    from ffdt.client.checks import Comparisons
    from ffdt.client.scheduler import Chunk, Manifest
    tools, src, results = source_and_results
    garbage = tmp_path / "garbage.mkv"
    garbage.write_bytes(b"\x1a\x45\xdf\xa3" + bytes(range(256)) * 40)
    alone = {n: ffmpeg.compare_with_source(tools, src, results[n], Settings(), None, 3, timeout=60).psnr
             for n in ("whole", "boxed", "short", "long")}

    def at_once(comparisons: Comparisons, paths: list[Path]) -> list[object]:
        start, outcome = threading.Barrier(len(paths)), [None] * len(paths)

        def check(i: int) -> None:
            chunk = Chunk(Manifest(index=i, source=src, size=1, sha256="0" * 64, frames=40, start=0.0))
            start.wait()
            try:
                outcome[i] = comparisons.compare(chunk, paths[i], 3, timeout=60).psnr
            except FFmpegError as exc:
                outcome[i] = exc
        threads = [threading.Thread(target=check, args=(i,)) for i in range(len(paths))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        return outcome

    names = ["whole", "boxed", "short", "long", "whole", "boxed", "short", "long"]
    good = Comparisons(tools, Settings())
    outcome = at_once(good, [results[n] for n in names])
    assert [[round(v, 1) for v in o] for o in outcome] == [[round(v, 1) for v in alone[n]] for n in names]
    assert good.compared == len(names) and good.runs < len(names) - 2, (good.runs, good.compared)

    mixed = at_once(Comparisons(tools, Settings()), [results["whole"], garbage, results["boxed"], results["long"]])
    assert isinstance(mixed[1], FFmpegError), mixed[1]
    assert [[round(v, 1) for v in o] for o in (mixed[0], mixed[2], mixed[3])] == \
        [[round(v, 1) for v in alone[n]] for n in ("whole", "boxed", "long")]


# ---------------------------------------------------------------- probing

@pytest.mark.parametrize("name, codecs", [
    ("av.mkv", ["-c:v", "libx264", "-preset", "ultrafast", "-g", "10", "-c:a", "aac"]),
    # Opus's last packet carries side data (samples to skip): ffprobe prints it over several lines
    ("av.webm", ["-c:v", "libvpx", "-g", "10", "-c:a", "libopus"]),
])
def test_probe_with_packets_reads_as_probe_and_the_packet_list_do(tmp_path, name, codecs):
    """The output check's one ffprobe run, parsed packet by packet as it comes, must give what
    two separate runs give: the same streams and format, every stream's packets in file order."""
    tools = ffmpeg.find_tools()
    path = tmp_path / name
    ffmpeg.run([tools.ffmpeg, *ffmpeg.BASE_FLAGS, "-f", "lavfi", "-i", "testsrc2=size=160x96:rate=25:duration=2",
                "-f", "lavfi", "-i", "sine=sample_rate=48000:duration=2.013", "-metadata", "title=a, b {c}",
                *codecs, ffmpeg.input_path(path)])
    info, packets = ffmpeg.probe_with_packets(tools, path)
    alone = ffmpeg.probe(tools, path)
    assert "packets" not in info
    counted = [int(s.pop("nb_read_packets")) for s in info["streams"]]      # ffprobe counts what it read
    assert info["streams"] == alone["streams"] and info["format"]["tags"]["title"] == "a, b {c}"
    assert packets == ffmpeg.packets_by_stream(tools, path, [0, 1])
    assert counted == [len(packets[0]), len(packets[1])]
    assert len(packets[0]) == 50 and sum(p.key for p in packets[0]) == 5 and len(packets[1]) > 20


def test_probe_with_packets_keeps_a_sample_and_the_end_of_the_other_streams(tmp_path):
    """For the output check of a film: the video's every packet, of the audio only enough for
    where it ends and its typical packet."""
    tools = ffmpeg.find_tools()
    path = tmp_path / "av.mkv"
    ffmpeg.run([tools.ffmpeg, *ffmpeg.BASE_FLAGS, "-f", "lavfi", "-i", "testsrc2=size=64x48:rate=25:duration=8",
                "-f", "lavfi", "-i", "sine=sample_rate=48000:duration=8.3", "-c:v", "libx264", "-preset", "ultrafast",
                "-c:a", "aac", ffmpeg.input_path(path)])
    _, every = ffmpeg.probe_with_packets(tools, path)
    _, some = ffmpeg.probe_with_packets(tools, path, whole=(0,))
    assert some[0] == every[0] and len(every[1]) > ffmpeg.SAMPLE_PACKETS + 50
    assert some[1] == every[1][:ffmpeg.SAMPLE_PACKETS] + [max(every[1], key=lambda p: p.pts + p.duration)]
    assert ffmpeg.packets_end(some[1]) == ffmpeg.packets_end(every[1])


def test_a_sample_is_used_only_if_it_shows_its_first_frames_before_its_end(tmp_path):
    """checks.Samples keeps a sample only if it decodes to SAMPLE_MIN_FRAMES frames or more
    (the pictures a decoder may hold back at its end cannot be its first three), each of them the
    source's; then the result that starts with its bytes is vouched for, another is not."""
    from ffdt.client import checks
    from ffdt.client.encode import SAMPLE_BLOCKS
    from ffdt.client.scheduler import Chunk, Manifest
    from ffdt.common import mkv
    tools = ffmpeg.find_tools()
    src, result = tmp_path / "src.mkv", tmp_path / "result.mkv"
    ffmpeg.run([tools.ffmpeg, "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=128x96:rate=30:duration=3",
                "-c:v", "ffv1", str(src)])
    settings = Settings(preset="veryfast")
    ffmpeg.run(ffmpeg.encode_cmd(tools, src, result, settings, threads=1, sampled=True))
    chunk = Chunk(Manifest(index=0, source=src, size=src.stat().st_size, sha256="0" * 64, frames=90, start=0.0))
    samples = checks.Samples()

    def sample_of(blocks: int) -> Path:
        end = mkv.read_layout(result, enough=blocks).prefix(blocks)
        assert end is not None and end < result.stat().st_size      # short clusters: a true prefix
        path = tmp_path / f"sample{blocks}.mkv"
        data = result.read_bytes()[:end]
        at = data.index(bytes.fromhex("18538067")) + 4          # the segment's size, as it is while the
        path.write_bytes(data[:at] + bytes.fromhex("01ffffffffffffff") + data[at + 8:])   # muxer writes
        return path

    short = sample_of(8)                     # shows fewer than 21 frames: its end may hold its first
    assert not samples.check(tools, chunk, "w", short, settings) and not short.exists()
    good = sample_of(SAMPLE_BLOCKS)
    assert samples.check(tools, chunk, "w", good, settings)
    assert samples.take(chunk, "w") == good
    assert checks.sample_stands_for(good, result)
    other = tmp_path / "other.mkv"
    ffmpeg.run(ffmpeg.encode_cmd(tools, src, other, Settings(preset="veryfast", crf=40), threads=1, sampled=True))
    assert not checks.sample_stands_for(good, other)

    # check_result of a trusted build: the result the sample stands for needs no comparison of
    # its own; another is compared itself, and one whose picture is not the source's fails
    policy = checks.VerifyPolicy(0.0)
    policy.decoded("build", True)
    assert checks.check_result(tools, chunk, result, settings, policy, "w", "build", sample=good) == (90, False, True)
    assert checks.check_result(tools, chunk, other, settings, policy, "w", "build", sample=good) == (90, False, False)
    boxed = tmp_path / "boxed.mkv"
    ffmpeg.run([tools.ffmpeg, "-v", "error", "-i", str(src), "-vf", "drawbox=w=iw/2:h=ih/2:color=red:t=fill",
                "-c:v", "libx264", "-preset", "veryfast", str(boxed)])
    with pytest.raises(ChunkError, match="not the source's picture"):
        checks.check_result(tools, chunk, boxed, settings, policy, "w", "build", sample=good)


def test_a_result_of_another_codec_than_the_jobs_is_rejected(tmp_path):
    """The concat would copy it into the output as it is (and a sample's check assumes a known
    codec's reorder depth): checks.result_packets holds every result to the job's codec, by its
    Matroska CodecID, or by ffprobe for a file the reader does not know. mkv.CODEC_IDS is what
    ffmpeg's muxer writes for each encoder's codec."""
    from ffdt.client import checks
    from ffdt.client.scheduler import Chunk, Manifest
    from ffdt.common import mkv
    from ffdt.common.encoders import ENCODERS
    tools = ffmpeg.find_tools()
    src = tmp_path / "src.mkv"
    ffmpeg.run([tools.ffmpeg, "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=128x96:rate=30:duration=1",
                "-c:v", "ffv1", str(src)])
    made = {}
    for name in ("libx264", "libx265", "libvpx-vp9", "libaom-av1", "mpeg4"):
        out = tmp_path / f"{name}.mkv"
        extra = ["-cpu-used", "8"] if name == "libaom-av1" else ["-deadline", "realtime"] if name == "libvpx-vp9" else []
        ffmpeg.run([tools.ffmpeg, "-v", "error", "-i", str(src), "-c:v", name, *extra, str(out)])
        codec = ENCODERS[name].codec
        assert len(mkv.read_video_blocks(out, codec)) == 30, name
        made[codec] = out
    with pytest.raises(mkv.Unsupported, match="not a h264 track"):
        mkv.read_video_blocks(made["vp9"], "h264")
    chunk = Chunk(Manifest(index=0, source=src, size=src.stat().st_size, sha256="0" * 64, frames=30, start=0.0))
    policy = checks.VerifyPolicy(0.0)
    policy.decoded("build", True)
    settings = Settings(preset="veryfast")
    assert checks.check_result(tools, chunk, made["h264"], settings, policy, "w", "build")[0] == 30
    with pytest.raises(ChunkError, match="vp9, not h264"):
        checks.check_result(tools, chunk, made["vp9"], settings, policy, "w", "build")
