"""All ffmpeg/ffprobe use: finding the binaries, pure argument builders, and the runners.

Builders return argument lists (never shell strings); inputs get a `file:` prefix so a name
like `-x.mp4` or `a:b.mp4` is never read as an option or a protocol.
"""
from __future__ import annotations

import bisect
import contextlib
import ctypes
import json
import logging
import signal
import sys
import os
import re
import shlex
import shutil
import subprocess
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from ffdt.common.config import ENCODER_TEST_TIMEOUT, FFMPEG_PROBE_TIMEOUT, FFMPEG_QUERY_TIMEOUT, FFMPEG_TOOL_TIMEOUT
from ffdt.common.encoders import ENCODERS
from ffdt.common.errors import FFmpegError, UsageError
from ffdt.common.settings import Settings

log = logging.getLogger(__name__)

BASE_FLAGS = ["-hide_banner", "-nostdin", "-loglevel", "error", "-y"]
# A file a peer sent (a chunk on a worker, a result on the boss) is opened as Matroska with local
# files as the only protocol: a playlist, a concat script or any other indirection in it fails
# instead of making ffmpeg read the host's other files or the network.
PEER_FILE = ["-f", "matroska", "-protocol_whitelist", "file"]
PEER_PIPE = ["-f", "matroska", "-protocol_whitelist", "pipe", "-i", "pipe:0"]   # the same, arriving on stdin
# The boss's decodes run with one decoder thread: about 30 % less CPU than frame threads for the
# same frames (a 5 s 360p chunk: 0.40 against 0.57 CPU-s), and the boss's CPU is what it must save.
ONE_THREAD = ["-threads", "1"]
CONCAT = ["-f", "concat", "-safe", "0", "-protocol_whitelist", "file"]    # lists the boss wrote itself
# What an ffmpeg child may see of our environment: ffmpeg parses hostile bytes, so nothing of ours
# (FFDT_PASSWORD above all) goes to it; only what finding libraries and devices needs.
CHILD_ENV_KEYS = ("PATH", "TMPDIR", "LANG", "LC_ALL", "LD_LIBRARY_PATH", "LIBVA_DRIVER_NAME", "CUDA_VISIBLE_DEVICES")
BUNDLED_DIR = Path(__file__).resolve().parent.parent / "client" / "ffmpeg"
INSTALL_HINT = "install it (Debian/Ubuntu: sudo apt-get install ffmpeg) or pass --ffmpeg PATH"


@dataclass(frozen=True)
class Tools:
    ffmpeg: str
    ffprobe: str


def find_tools(explicit: str | None = None, use_global: bool = False) -> Tools:
    """--ffmpeg PATH, else a build dropped in client/ffmpeg/, else FFMPEG_PATH, else PATH."""
    if explicit:
        ffmpeg = Path(explicit)
        candidates = [ffmpeg]
    elif not use_global and (BUNDLED_DIR / "ffmpeg").is_file():
        candidates = [BUNDLED_DIR / "ffmpeg"]
    elif os.environ.get("FFMPEG_PATH") and not use_global:
        candidates = [Path(os.environ["FFMPEG_PATH"])]
    else:
        found = shutil.which("ffmpeg")
        if not found:
            raise UsageError(f"ffmpeg not found on PATH: {INSTALL_HINT}")
        candidates = [Path(found)]
    ffmpeg = candidates[0]
    if not (ffmpeg.is_file() and os.access(ffmpeg, os.X_OK)):
        raise UsageError(f"ffmpeg not found at {ffmpeg}: {INSTALL_HINT}")
    ffprobe = ffmpeg.with_name(ffmpeg.name.replace("ffmpeg", "ffprobe"))
    if not ffprobe.is_file():
        found = shutil.which("ffprobe") if (use_global or not explicit) else None
        if not found:
            raise UsageError(f"ffprobe not found beside {ffmpeg}: {INSTALL_HINT}")
        ffprobe = Path(found)
    return Tools(str(ffmpeg), str(ffprobe))


def input_path(path: Path) -> str:
    return "file:" + str(path)


def input_args(path: Path, peer: bool = False) -> list[str]:
    """`-i` and the path, with the demuxer forced (PEER_FILE) for a file a peer sent."""
    return [*(PEER_FILE if peer else []), "-i", input_path(path)]


def child_env() -> dict[str, str]:
    return {k: os.environ[k] for k in CHILD_ENV_KEYS if k in os.environ}


# ---------------------------------------------------------------- runners

def run(cmd: list[str], *, timeout: float = FFMPEG_TOOL_TIMEOUT, nice: int = 0, strict: bool = False) -> str:
    """Run to completion; return stdout. FFmpegError with stderr's tail on failure or timeout,
    and with strict=True also when it printed any message (run it with `-v error`).
    nice > 0 runs the child at a lower priority (work that must not slow the job's main path).
    The child is killed on timeout, on any exception here, and by kill_children()."""
    stdout, stderr = run_capture(cmd, timeout=timeout, nice=nice)
    if strict and stderr.strip():
        raise FFmpegError(cmd, 0, tail(stderr, 1))
    return stdout


def run_capture(cmd: list[str], *, timeout: float = FFMPEG_TOOL_TIMEOUT, nice: int = 0) -> tuple[str, str]:
    """run(), returning (stdout, stderr) of a child that succeeded."""
    log.debug("running %s", shlex.join(cmd))
    started = time.monotonic()
    try:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, errors="replace", env=child_env(),
                                preexec_fn=(lambda: _lower_priority(nice)) if nice else die_with_parent)
    except OSError as exc:
        raise FFmpegError(cmd, None, f"cannot run {cmd[0]}: {exc}") from exc
    with _tracked(proc):
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            proc.kill()
            proc.communicate()
            raise FFmpegError(cmd, None, f"no result after {timeout:g}s") from exc
        except BaseException:
            proc.kill()
            proc.wait()
            raise
    log.debug("%.2fs for %s", time.monotonic() - started, Path(cmd[0]).name)
    if proc.returncode != 0:
        raise FFmpegError(cmd, proc.returncode, tail(stderr) or "killed")
    return stdout, stderr


_live: set[subprocess.Popen] = set()       # children of run() and _child() still running
_live_lock = threading.Lock()


@contextlib.contextmanager
def _tracked(proc: subprocess.Popen) -> Iterator[None]:
    with _live_lock:
        _live.add(proc)
    try:
        yield
    finally:
        with _live_lock:
            _live.discard(proc)


@contextlib.contextmanager
def children_killed_on_error(scope: Path | None = None) -> Iterator[None]:
    """If the block ends by an exception (Ctrl-C, SIGTERM, a failed job), kill every child first:
    threads waiting on them (checks in a pool) then return at once instead of holding it up.
    scope: a failed job kills only the children working on files under it (its work directory:
    another job of the same queue goes on); Ctrl-C and SIGTERM still end them all."""
    try:
        yield
    except (KeyboardInterrupt, SystemExit):
        kill_children()
        raise
    except BaseException:
        kill_children(scope)
        raise


def kill_children(scope: Path | None = None) -> None:
    """Kill every ffmpeg/ffprobe child still running (or those with a file under `scope` among
    their arguments), whichever thread waits on it: on Ctrl-C or SIGTERM a check running in a pool
    thread must not hold the exit up (each waiting thread then sees its child fail)."""
    mark = None if scope is None else input_path(scope) + "/"
    with _live_lock:
        procs = [p for p in _live if mark is None or any(str(a).startswith(mark) for a in p.args)]
    for proc in procs:
        with contextlib.suppress(OSError):
            proc.kill()


def tail(stderr: str, lines: int = 5) -> str:
    return "\n".join(stderr.strip().splitlines()[-lines:])


class Cancel:
    """A cancel switch for a running ffmpeg: set() kills the child it is attached to."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._proc: subprocess.Popen | None = None
        self._set = False

    def set(self) -> None:
        with self._lock:
            self._set = True
            if self._proc is not None and self._proc.poll() is None:
                self._proc.kill()

    def is_set(self) -> bool:
        return self._set

    def attach(self, proc: subprocess.Popen | None) -> None:
        with self._lock:
            self._proc = proc
            if proc is not None and self._set:
                proc.kill()


PR_SET_PDEATHSIG = 1
try:                     # loaded here, not in the forked child, where loading could deadlock
    # the process's own symbols, libc's among them: find_library("c") runs ldconfig, 25 ms of
    # every program's start (0.1 s on a quarter core)
    _LIBC = ctypes.CDLL(None) if sys.platform.startswith("linux") else None
except OSError:
    _LIBC = None


def die_with_parent() -> None:
    """In the child, before exec: ask Linux to SIGKILL it when its parent dies, so an ffmpeg
    never outlives a worker killed with SIGKILL. Elsewhere a no-op."""
    if _LIBC is not None:
        _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def _lower_priority(nice: int) -> None:
    die_with_parent()
    os.nice(nice)


@dataclass
class _Child:
    proc: subprocess.Popen
    timed_out: bool = False
    returncode: int | None = None
    stderr: str = ""


def _spawn(cmd: list[str], stdout: Any, stderr: Any, stdin: Any = subprocess.DEVNULL) -> subprocess.Popen:
    """Start a child with no stdin (unless given one), none of our secrets in its environment,
    dying with the thread that started it, and tracked for kill_children(); FFmpegError if it
    cannot start."""
    try:
        proc = subprocess.Popen(cmd, stdin=stdin, stdout=stdout, stderr=stderr, text=True,
                                errors="replace", env=child_env(), preexec_fn=die_with_parent)
    except OSError as exc:
        raise FFmpegError(cmd, None, f"cannot run {cmd[0]}: {exc}") from exc
    with _live_lock:
        _live.add(proc)
    return proc


@contextlib.contextmanager
def _child(cmd: list[str], timeout: float, feed: Callable[[int], None] | None = None) -> Iterator[_Child]:
    """A child with stdout piped and stderr kept in a temp file (a pipe could fill and block it),
    killed on timeout and on any exception in the block (KeyboardInterrupt included), so it never
    outlives the caller. After the block: its return code and stderr. feed: called in a thread of
    its own with the write end of the child's stdin, which it must close (the child's EOF)."""
    log.debug("running %s", shlex.join(cmd))
    with tempfile.TemporaryFile("w+", errors="replace") as err:
        if feed is None:
            proc = _spawn(cmd, subprocess.PIPE, err)
        else:
            read_end, write_end = os.pipe()
            try:
                proc = _spawn(cmd, subprocess.PIPE, err, stdin=read_end)
            except BaseException:
                os.close(write_end)
                raise
            finally:
                os.close(read_end)
            threading.Thread(target=feed, args=(write_end,), name="feed", daemon=True).start()
        child = _Child(proc)

        def expire() -> None:
            child.timed_out = True
            proc.kill()

        timer = threading.Timer(timeout, expire)
        timer.daemon = True
        timer.start()
        try:
            yield child
            child.returncode = proc.wait()
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        finally:
            timer.cancel()
            with _live_lock:
                _live.discard(proc)
            if proc.stdout is not None:
                proc.stdout.close()
        err.seek(0)
        child.stderr = err.read()


def run_counting(cmd: list[str], frames: int, on_progress: Callable[[float, float], None] | None, *,
                 timeout: float = FFMPEG_TOOL_TIMEOUT) -> None:
    """Run an ffmpeg to completion (as run()), telling on_progress(frames so far, `frames`) as
    it goes when one is given: ffmpeg's own `-progress` count, as the encodes report it."""
    if on_progress is None:
        run(cmd, timeout=timeout)
    else:
        run_with_progress([cmd[0], "-nostats", "-progress", "pipe:1", *cmd[1:]], timeout=timeout,
                          on_frames=lambda n: on_progress(n, frames))


def run_with_progress(cmd: list[str], *, timeout: float, on_frames: Callable[[int], None] = lambda n: None,
                      cancel: Cancel | None = None,
                      on_start: Callable[[subprocess.Popen], None] = lambda proc: None,
                      feed: Callable[[int], None] | None = None) -> str:
    """Run an ffmpeg that has `-progress pipe:1`, reporting `frame=` values as they come.

    The child is killed on timeout, on cancel, and on any exception here (KeyboardInterrupt
    included), so it never outlives the caller. Returns stderr (warnings) on success. feed: its
    stdin's writer, as for _child (an input read from `pipe:0`).
    """
    cancel = cancel or Cancel()
    with _child(cmd, timeout, feed) as child:
        cancel.attach(child.proc)
        try:
            on_start(child.proc)
            assert child.proc.stdout is not None
            for line in child.proc.stdout:
                if line.startswith("frame="):
                    value = line[6:].strip()
                    if value.isdigit():
                        on_frames(int(value))
        finally:
            cancel.attach(None)
    if child.returncode != 0:
        if cancel.is_set():
            raise FFmpegError(cmd, child.returncode, "cancelled")
        if child.timed_out:
            raise FFmpegError(cmd, None, f"no result after {timeout:g}s")
        raise FFmpegError(cmd, child.returncode, tail(child.stderr) or "killed")
    return child.stderr


class Background:
    """A child that runs while its caller does other things (the join, fed chunk by chunk while
    workers encode): no timeout until wait(), stderr kept in a temp file, killed by kill() and by
    kill_children() like any other child. wait() and kill() may race (one thread waits, another
    stops the job): stderr is read once, under a lock."""

    def __init__(self, cmd: list[str]) -> None:
        log.debug("running %s in the background", shlex.join(cmd))
        self.cmd = cmd
        self._err = tempfile.TemporaryFile("w+", errors="replace")
        self._stderr: str | None = None
        self._lock = threading.Lock()
        try:
            self.proc = _spawn(cmd, subprocess.DEVNULL, self._err)
        except FFmpegError:
            self._err.close()
            raise

    def running(self) -> bool:
        return self.proc.poll() is None

    def wait(self, timeout: float) -> None:
        """Until it ends (killed after `timeout` seconds); FFmpegError with stderr's tail if it failed."""
        try:
            returncode = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise FFmpegError(self.cmd, None, f"no result after {timeout:g}s") from None
        stderr = self._collect()
        if returncode != 0:
            raise FFmpegError(self.cmd, returncode, tail(stderr) or "killed")

    def kill(self) -> None:
        """Kill it if it runs; reap it either way."""
        with contextlib.suppress(OSError):
            self.proc.kill()
        self.proc.wait()
        self._collect()

    def _collect(self) -> str:
        with self._lock:
            if self._stderr is None:
                self._err.seek(0)
                self._stderr = self._err.read()
                self._err.close()
                with _live_lock:
                    _live.discard(self.proc)
            return self._stderr


@contextlib.contextmanager
def run_lines(cmd: list[str], *, timeout: float) -> Iterator[Iterator[str]]:
    """Run a child and hand its stdout lines to the caller as they come. Leaving the block
    normally waits for the child (FFmpegError with stderr's tail if it failed); leaving it by an
    exception kills it first."""
    with _child(cmd, timeout) as child:
        assert child.proc.stdout is not None
        yield iter(child.proc.stdout.readline, "")
    if child.returncode != 0:
        raise FFmpegError(cmd, None if child.timed_out else child.returncode,
                          f"no result after {timeout:g}s" if child.timed_out else tail(child.stderr) or "killed")


# ---------------------------------------------------------------- probing

def probe(tools: Tools, path: Path) -> dict:
    """ffprobe's JSON for format, streams and chapters."""
    out = run([tools.ffprobe, "-v", "error", "-print_format", "json", "-show_format", "-show_streams",
               "-show_chapters", "-show_programs", input_path(path)], timeout=FFMPEG_PROBE_TIMEOUT)
    try:
        return json.loads(out)
    except ValueError as exc:
        raise FFmpegError([tools.ffprobe], 0, "unreadable ffprobe output") from exc


@dataclass(frozen=True, slots=True)   # an input's packets are many: slots halve them
class Packet:
    pts: float
    dts: float
    duration: float
    key: bool
    pts_known: bool = True    # False: the file stores none (second fields), `pts` is the dts
    size: int = -1            # bytes (-1: not asked for)
    dts_known: bool = True    # False: the file stores none here (Matroska, before the first B-frames)
    discard: bool = False     # decoded but not shown: an edit list hides it (mp4/mov, ffprobe's "D" flag)

    @property
    def end(self) -> float:
        return self.pts + self.duration


_PKT_FIELD = re.compile(r"(\w+)=([^|]*)")


def packets_end(packets: Sequence[Packet]) -> float:
    """Where the last of these packets ends (0 when there are none)."""
    return max((p.end for p in packets), default=0.0)


def stream_packets(tools: Tools, path: Path, stream: str = "v:0", *, strict: bool = False,
                   peer: bool = False, timeout: float = FFMPEG_TOOL_TIMEOUT) -> list[Packet]:
    """The packets of one stream (the first video one by default) in file (decode) order,
    without decoding them. strict=True: any demuxer message (a damaged file) is an FFmpegError;
    peer=True: a file a peer sent (PEER_FILE)."""
    out = run([tools.ffprobe, "-v", "error", "-fflags", "+genpts", *input_args(path, peer), "-select_streams", stream,
               "-show_entries", "packet=pts_time,dts_time,duration_time,flags,size", "-of", "compact=p=0"],
              strict=strict, timeout=timeout)
    packets = [_packet(dict(_PKT_FIELD.findall(line))) for line in out.splitlines()]
    return [p for p in packets if p is not None]


def video_codec(tools: Tools, path: Path, *, peer: bool = False, timeout: float = FFMPEG_TOOL_TIMEOUT) -> str:
    """The codec of the first video stream, as ffprobe names it ("" if none)."""
    out = run([tools.ffprobe, "-v", "error", *input_args(path, peer), "-select_streams", "v:0",
               "-show_entries", "stream=codec_name", "-of", "csv=p=0"], timeout=timeout)
    return out.strip().splitlines()[0].strip() if out.strip() else ""


PROGRESS_EVERY_PACKETS = 1000      # how often packets_by_stream says how far it has read


def packets_by_stream(tools: Tools, path: Path, indices: Sequence[int],
                      timeout: float = FFMPEG_TOOL_TIMEOUT,
                      on_progress: Callable[[float], None] | None = None,
                      last_only: Sequence[int] = ()) -> dict[int, list[Packet]]:
    """The packets of these streams (by stream index), each in file order, from one ffprobe run
    that decodes nothing: ffprobe demuxes every stream whatever it prints, so one run for all of
    them reads the input once. Lines of other streams are skipped unparsed (memory follows the
    streams asked for, not the file's). on_progress: called now and then with the timestamp
    (seconds) of the packet read last, for a film whose read takes a while. last_only: streams
    of which only where they end is wanted: their list holds just the packet that ends last (a
    film's audio packets took more memory than its video's)."""
    wanted = {f"stream_index={i}|": i for i in indices}
    found: dict[int, list[Packet]] = {i: [] for i in indices}
    cmd = [tools.ffprobe, "-v", "error", "-fflags", "+genpts", *input_args(path), "-show_entries",
           "packet=stream_index,pts_time,dts_time,duration_time,flags,size", "-of", "compact=p=0"]
    kept = 0
    with run_lines(cmd, timeout=timeout) as lines:
        for line in lines:
            index = wanted.get(line[:line.find("|") + 1])
            if index is not None and (packet := _packet(dict(_PKT_FIELD.findall(line)))) is not None:
                kept += 1
                if index in last_only:
                    if not found[index] or packet.end > found[index][0].end:
                        found[index] = [packet]
                else:
                    found[index].append(packet)
                if on_progress is not None and kept % PROGRESS_EVERY_PACKETS == 0:
                    on_progress(packet.pts)
    return found


def _packet(f: dict[str, str]) -> Packet | None:
    """A Packet from ffprobe's packet fields (None: no timestamp at all)."""
    pts, dts = _num(f.get("pts_time")), _num(f.get("dts_time"))
    known = pts is not None
    pts = pts if known else dts
    if pts is None:
        return None
    size, flags = str(f.get("size", "")), str(f.get("flags", ""))
    return Packet(pts, dts if dts is not None else pts, _num(f.get("duration_time")) or 0.0,
                  flags.startswith("K"), known, int(size) if size.isdigit() else -1, dts is not None, "D" in flags)


SAMPLE_PACKETS = 100     # packets probe_with_packets keeps from the start of a stream not kept whole


def probe_with_packets(tools: Tools, path: Path, whole: Sequence[int] | None = None,
                       on_progress: Callable[[float], None] | None = None) -> tuple[dict, dict[int, list[Packet]]]:
    """probe() and every stream's packets (by stream index, file order) in one ffprobe run: for
    checking an output, where each process start counts. whole: the streams whose every packet
    is kept (None: all); of the others, the first SAMPLE_PACKETS and the one that ends last,
    enough for where they end and their typical packet (a film's audio packets outnumber its
    frames). ffprobe's compact JSON starts each packet on a line of its own (one with side data
    goes on over a few deeper lines): they are parsed as they come, and the rest of the text,
    its packet list left empty, is the probe; memory follows the Packets kept, not ffprobe's
    text (a 3-minute output's whole JSON took 14 MB at its peak). on_progress: as for
    packets_by_stream."""
    cmd = [tools.ffprobe, "-v", "error", "-fflags", "+genpts", "-print_format", "json=c=1", "-show_format",
           "-show_streams", "-show_chapters", "-show_entries",
           "packet=stream_index,pts_time,dts_time,duration_time,flags,size", input_path(path)]
    packets: dict[int, list[Packet]] = {}
    rest: list[str] = []
    element: list[str] = []          # the lines of the packet being read
    last: dict[int, Packet] = {}     # of a stream not kept whole: its packet past the sample that ends last
    inside = False                   # within the packet list
    read = 0                         # packets so far

    def take() -> None:
        nonlocal read
        text = "".join(element).strip().rstrip(",")
        element.clear()
        if text:
            entry = json.loads(text)
            packet = _packet({k: str(v) for k, v in entry.items() if not isinstance(v, (list, dict))})
            if packet is None:
                return
            index = int(entry.get("stream_index", -1))
            kept = packets.setdefault(index, [])
            read += 1
            if on_progress is not None and read % PROGRESS_EVERY_PACKETS == 0:
                on_progress(packet.pts)
            if whole is None or index in whole or len(kept) < SAMPLE_PACKETS:
                kept.append(packet)
            elif index not in last or packet.end > last[index].end:
                last[index] = packet

    try:
        with run_lines(cmd, timeout=FFMPEG_TOOL_TIMEOUT) as lines:
            for line in lines:
                if not inside:
                    inside = line.strip() == '"packets": ['
                    rest.append(line)
                elif line.startswith("    ]"):          # the list's end (nested lists are deeper)
                    take()
                    inside = False
                    rest.append(line)
                else:
                    if line.startswith("        {"):     # the next packet
                        take()
                    element.append(line)
        info = json.loads("".join(rest))
    except ValueError as exc:
        raise FFmpegError([tools.ffprobe], 0, "unreadable ffprobe output") from exc
    info.pop("packets", None)
    for index, packet in last.items():
        packets[index].append(packet)
    return info, packets


def _decoded_times(tools: Tools, path: Path, intervals: str, *, concat: bool = False, one_thread: bool = False,
                   strict: bool = False, nice: int = 0) -> list[float | None]:
    """Timestamps of the video frames a decoder outputs in ffprobe's `-read_intervals`, in order
    (None where a frame has none): of a file, or (concat=True) of the files an ffconcat list joins.
    strict=True: any decoder message is an FFmpegError."""
    demuxer = CONCAT if concat else []
    threads = ONE_THREAD if one_thread else []      # a few frames are not worth more
    out = run([tools.ffprobe, "-v", "error", *threads, *demuxer, "-i", input_path(path), "-select_streams", "v:0",
               "-read_intervals", intervals, "-show_entries", "frame=best_effort_timestamp_time", "-of", "csv=p=0"],
              strict=strict, nice=nice)
    return [_num(line.split(",")[0]) for line in out.splitlines() if line.strip()]


def frame_times(tools: Tools, path: Path, until: float) -> list[float | None]:
    """Timestamps of the frames a decoder outputs, in order, from the start of a file up to about
    `until` seconds in (None where it has none)."""
    return _decoded_times(tools, path, f"%+{until:.3f}")


def count_frames_in(tools: Tools, path: Path, packets: int) -> int:
    """Frames a decoder outputs from the first `packets` video packets of a file (decoder
    messages ignored, as with decode_check(count_only=True))."""
    return len(_decoded_times(tools, path, f"%+#{int(packets)}", one_thread=True))


def count_frames_at(tools: Tools, path: Path, starts: Sequence[float], packets: int) -> list[int]:
    """For each keyframe time in `starts` (rising), the frames a decoder outputs from the
    `packets` packets read after seeking there; one ffprobe run, one decoder thread."""
    intervals = ",".join(f"{t + 0.0005:.6f}%+#{int(packets)}" for t in starts)   # past rounding only
    counts = [0] * len(starts)
    for t in _decoded_times(tools, path, intervals, one_thread=True):
        if t is not None:       # a frame belongs to the last interval starting at or before it
            counts[max(0, bisect.bisect_right(starts, t + 0.001) - 1)] += 1
    return counts


def decode_spans(tools: Tools, path: Path, spans: Sequence[tuple[float, float]], concat: bool = False,
                 nice: int = 0) -> int:
    """Decode the video in each (start, end) time span (from the keyframe at or before start) in
    one ffprobe run, of a file or (concat=True) of the files an ffconcat list joins; return the
    frames decoded. Any decoder message is an FFmpegError."""
    intervals = ",".join(f"{a:.6f}%{b:.6f}" if a > 0 else f"%{b:.6f}" for a, b in spans)   # 0: no seek
    return len(_decoded_times(tools, path, intervals, concat=concat, one_thread=True, strict=True, nice=nice))


def count_packets(tools: Tools, path: Path, concat: bool = False) -> int:
    """Video packets in a file, every one (stream_packets skips those without timestamps), or
    with concat=True in all the files of an ffconcat list: one ffprobe run, not one per file."""
    demuxer = CONCAT if concat else []
    out = run([tools.ffprobe, "-v", "error", *demuxer, "-i", input_path(path),
               "-select_streams", "v:0", "-count_packets", "-show_entries", "stream=nb_read_packets",
               "-of", "default=noprint_wrappers=1"])
    found = re.search(r"^nb_read_packets=(\d+)", out, re.M)     # some streams print side data too
    if not found:
        raise FFmpegError([tools.ffprobe], 0, f"unreadable packet count: {out.strip()[:80]!r}")
    return int(found[1])


def _num(text: str | None) -> float | None:
    try:
        return float(text) if text not in (None, "", "N/A") else None
    except ValueError:
        return None


def decode_check(tools: Tools, path: Path, *, with_audio: bool = False, audio_only: bool = False,
                 count_only: bool = False, frames: int | None = None, peer: bool = False,
                 timeout: float = FFMPEG_TOOL_TIMEOUT) -> int:
    """Decode start to end (or the first `frames` video frames); return the video frame count.
    Any message is an error (for our own files, the null muxer's timestamp complaints are not:
    decoder_messages) unless
    count_only=True: a piece of the source may warn where a single run over the source warns
    too (broken DTS; H.264 "mmco: unref short failure" after an open-GOP keyframe)."""
    cmd = [tools.ffmpeg, "-hide_banner", "-nostdin", "-v", "error", "-nostats", "-progress", "pipe:1",
           *ONE_THREAD, *input_args(path, peer)]
    if not audio_only:
        cmd += ["-map", "0:v:0"]
    if with_audio or audio_only:
        cmd += ["-map", "0:a?"]
    if frames is not None:
        cmd += ["-frames:v", str(frames)]
    cmd += ["-fps_mode", "passthrough", "-enc_time_base", "-1", "-f", "null", "-"]
    seen = [0]
    stderr = run_with_progress(cmd, timeout=timeout, on_frames=lambda n: seen.__setitem__(0, n))
    # our own files may carry the source's timestamp quirks; a peer's result may not
    stderr = stderr.strip() if peer else decoder_messages(stderr)
    if stderr and not count_only:
        raise FFmpegError(cmd, 0, f"decode errors in {path.name}: {tail(stderr, 1)}")
    return seen[0]


# The null muxer's own complaint about timestamps it is handed (a MediaRecorder file's Opus
# repeats timestamps; a single ffmpeg run prints the same): about the muxer, not the decode.
_MUXER_NOISE = re.compile(r"^\[null @ [^]]*\] Application provided invalid, non monotonically increasing dts")


def decoder_messages(stderr: str) -> str:
    """ffmpeg's messages with the null muxer's timestamp complaints (and their "Last message
    repeated" lines) taken out."""
    kept: list[str] = []
    noise = False
    for line in stderr.splitlines():
        stripped = line.strip()
        if _MUXER_NOISE.match(stripped):
            noise = True
        elif stripped.startswith("Last message repeated") and noise:
            pass
        elif stripped:
            noise = False
            kept.append(line)
    return "\n".join(kept)


def capabilities(tools: Tools) -> tuple[str, list[str]]:
    """(ffmpeg version line, names of the video/audio encoders this build has)."""
    first = run([tools.ffmpeg, "-hide_banner", "-version"], timeout=FFMPEG_QUERY_TIMEOUT).splitlines()[0]
    # "ffmpeg version 5.1.9-0+deb12u1 Copyright ..." -> "ffmpeg 5.1.9-0+deb12u1"
    words = first.split()
    version = f"ffmpeg {words[2]}" if len(words) > 2 and words[1] == "version" else first[:100]
    listing = run([tools.ffmpeg, "-hide_banner", "-encoders"], timeout=FFMPEG_QUERY_TIMEOUT)
    names = []
    _, _, table = listing.partition("------")     # the legend above this line is not encoders
    for line in table.splitlines():
        parts = line.split()
        if len(parts) >= 2 and len(parts[0]) == 6 and parts[0][0] in "VA":
            names.append(parts[1])
    return version, names


def working_encoders(tools: Tools, listed: Sequence[str]) -> tuple[list[str], dict[str, str]]:
    """Which of our encoders (common/encoders.py) this build lists and can open here: each
    encodes one small frame (a build with NVENC on a machine with no NVIDIA GPU lists it, and
    fails at the first frame). Returns (the working ones, {the failing ones: ffmpeg's reason}).
    The software encoders are tried together in one ffmpeg run (one process start for all; each
    on its own only if that fails), the hardware ones each on its own, at the same time."""
    wanted = [name for name in ENCODERS if name in set(listed)]
    software = [n for n in wanted if not ENCODERS[n].hardware]

    def opens(names: Sequence[str]) -> str:
        cmd = [tools.ffmpeg, "-hide_banner", "-nostdin", "-v", "error", *device_args(names[0]), "-f", "lavfi",
               "-i", "color=c=gray:s=256x144:r=25"]
        for name in names:         # (a device encoder is tried on its own: names is [it])
            upload = upload_filters(Settings(vcodec=name))
            # a hardware one with its rate-control flags too: an older build may lack one of them
            args = encoder_args(Settings(vcodec=name)) if ENCODERS[name].hardware else ["-c:v", name]
            cmd += ["-map", "0:v", *(["-vf", ",".join(upload)] if upload else []), "-frames:v", "1", *args,
                    *ENCODERS[name].always, "-f", "null", "-"]
        try:
            run(cmd, timeout=ENCODER_TEST_TIMEOUT)
            return ""
        except FFmpegError as exc:
            return encoder_complaint(exc)

    together = len(software) > 1
    groups = ([software] if together else []) + [[n] for n in wanted if n not in software or not together]
    with ThreadPoolExecutor(max_workers=4, thread_name_prefix="encoder-test") as pool:
        found = dict(zip(map(tuple, groups), pool.map(opens, groups)))
        if together and found[tuple(software)]:          # one of them does not open: which?
            found.update(zip(((n,) for n in software), pool.map(opens, [[n] for n in software])))
    reasons = {n: found.get((n,), "") for n in wanted}
    return [n for n in wanted if not reasons[n]], {n: why for n, why in reasons.items() if why}


# ---------------------------------------------------------------- builders

def segment_cmd(tools: Tools, src: Path, out_pattern: Path, cut_times: Sequence[float],
                list_on_stdout: bool = False, dts_shift: float = 0.0) -> list[str]:
    """Split the first video stream at the given keyframe times (stream copy, video only).
    list_on_stdout: print "name,start,end" for each piece as soon as it is complete.
    dts_shift: seconds to move decode timestamps back so none is after its frame's presentation
    (media.MediaInfo.dts_shift); else the muxer "replaces by guess" and the frames' order is lost."""
    # +genpts: AVI with B-frames stores no presentation timestamps, which Matroska needs
    cmd = [tools.ffmpeg, *BASE_FLAGS, "-fflags", "+genpts", "-i", input_path(src), "-map", "0:v:0", "-an", "-sn",
           "-dn", "-c", "copy", "-f", "segment", "-reset_timestamps", "1",
           # a cut time lands on a keyframe's own timestamp; the delta keeps float rounding from
           # pushing the cut to the next keyframe
           "-segment_time_delta", "0.001", "-segment_format", "matroska"]
    if dts_shift > 0:
        cmd += ["-bsf:v", f"setts=pts=PTS:dts=DTS-{min(float(dts_shift), 10.0):.6f}/TB"]
    if cut_times:
        cmd += ["-segment_times", ",".join(f"{t:.6f}" for t in cut_times)]
    else:
        cmd += ["-segment_time", "1000000000"]
    if list_on_stdout:
        cmd += ["-segment_list", "pipe:1", "-segment_list_type", "csv"]
    return cmd + [input_path(out_pattern)]


# A chunk cut inside a long GOP starts its encoder this many frames early, forces a keyframe at
# its first frame and drops the frames before it. A fresh x264/x265 gives its first keyframe a
# QP from its initial guess, not from the frames before (as one run does); on a static scene
# that keyframe's quality lasts the whole chunk. Measured on office-720p-vp9 (x264 CRF 23): a
# chunk at frame 228 was 0.44 dB below one run over the same frames, 0.05 dB with 25 frames of
# warm-up (0.04 dB with 50).
WARMUP_FRAMES = 25
WARMUP_ENCODERS = {name for name, e in ENCODERS.items() if e.warmup}


def warmup_frames(s: Settings, skip: int) -> int:
    """Frames to encode and drop before a chunk that starts `skip` frames into its piece."""
    return min(skip, WARMUP_FRAMES) if s.vcodec in WARMUP_ENCODERS and s.fps is None else 0


def warmup_parts(dst: Path) -> tuple[Path, Path]:
    """The two files a warmed-up encode writes: the frames to drop, then the chunk."""
    return dst.with_name(dst.name + ".0"), dst.with_name(dst.name + ".1")


SAMPLE_CLUSTER_MS = 250    # a sampled result's clusters last at most this (ffmpeg's default: 5 s),
                           # so its first frames are written soon and its sample is small


def encode_cmd(tools: Tools, src: Path | None, dst: Path, s: Settings, threads: int = 0,
               frame_range: tuple[int, int] | None = None, warmup: int = 0, sampled: bool = False) -> list[str]:
    """Encode one chunk (video only) into Matroska, reporting progress on stdout.

    frame_range=(skip, count): decode from the start, drop `skip` frames, encode the next `count`
    (a chunk cut inside a long GOP). warmup=N (up to skip): encode N frames before those, then
    split them off into warmup_parts(dst) (see WARMUP_FRAMES). sampled: short clusters, so that
    the start of the result is written, final, while the encode goes on (client/encode.py takes
    a sample of it for the boss); not with a warm-up. src None: the chunk comes on stdin (its
    bytes fed as they arrive; the same result bytes as from the file)."""
    source = PEER_PIPE if src is None else input_args(src, peer=True)
    cmd = [tools.ffmpeg, *BASE_FLAGS, "-nostats", "-progress", "pipe:1", *device_args(s.vcodec),
           *source, "-map", "0:v:0", "-an", "-sn", "-dn", "-map_metadata", "-1"]
    filters = [*picture_filters(s, frame_range, warmup), *upload_filters(s)]
    if filters:
        cmd += ["-vf", ",".join(filters)]
    # Keep every frame with its own timestamp (VFR included): by default ffmpeg would drop frames
    # whose timestamps collide, and round the rest to 1/average-rate, which merges close frames
    # of a variable-rate source. The boss checks the frame count.
    cmd += ["-fps_mode", "passthrough", "-enc_time_base", "-1"]
    cmd += encoder_args(s, closed_gop=bool(warmup))
    if threads:
        cmd += ["-threads", str(threads)]
    # no random segment UID or date in the container: one build with the same settings and threads
    # writes the same bytes for a chunk (the boss's re-encode check compares results' SHA-256)
    cmd += ["-fflags", "+bitexact"]
    if warmup:
        # the chunk's first frame becomes an IDR (nothing after it refers back), which is also the
        # first keyframe at or after packet `warmup`: where the segment muxer cuts
        cmd += ["-force_key_frames", f"expr:eq(n,{int(warmup)})", "-forced-idr", "1",
                "-f", "segment", "-segment_frames", str(int(warmup)), "-reset_timestamps", "1",
                "-segment_format", "matroska", input_path(dst.with_name(dst.name + ".%d"))]
        return cmd
    if sampled:
        # (and each packet written at once: a small picture's clusters sat in the 32 KB write
        # buffer until the end of the encode)
        cmd += ["-cluster_time_limit", str(SAMPLE_CLUSTER_MS), "-flush_packets", "1"]
    return cmd + ["-f", "matroska", input_path(dst)]


def render_device() -> str | None:
    """The first GPU render node (/dev/dri/renderD128 ...) for VAAPI, None on a machine without."""
    nodes = sorted(Path("/dev/dri").glob("renderD*")) if Path("/dev/dri").is_dir() else []
    return str(nodes[0]) if nodes else None


def device_args(vcodec: str) -> list[str]:
    """Global options before the input for an encoder that needs a device opened (VAAPI)."""
    if not ENCODERS[vcodec].upload:
        return []
    device = render_device()
    return ["-vaapi_device", device] if device else []     # (without one, the encoder fails to open)


def upload_filters(s: Settings) -> list[str]:
    """The filters that hand the picture to the GPU, last in the chain (VAAPI); else none."""
    upload = ENCODERS[s.vcodec].upload
    if not upload:
        return []
    return [f"format={upload['10' if s.pix_fmt == 'yuv420p10le' else '8']}", "hwupload"]


def encoder_args(s: Settings, closed_gop: bool = False) -> list[str]:
    """-c:v and everything the encoder itself is given, from checked settings only."""
    cmd = ["-c:v", s.vcodec, *_rate_control(s)]
    if s.pix_fmt and not ENCODERS[s.vcodec].upload:      # (uploaded: the format filter sets it)
        cmd += ["-pix_fmt", s.pix_fmt]
    for option, value in (("-color_primaries", s.color_primaries), ("-color_trc", s.color_trc),
                          ("-colorspace", s.colorspace), ("-color_range", s.color_range)):
        if value:
            cmd += [option, value]
    for option, value in (("-tune", s.tune), ("-profile:v", s.profile)):
        if value:
            cmd += [option, value]
    if s.level and s.vcodec != "libx265":
        cmd += ["-level", s.level]
    user = [f"{k}={v}" for k, v in s.codec_params]       # checked against the encoder's whitelist
    if s.vcodec == "libx264" and user:
        cmd += ["-x264-params", ":".join(user)]
    if s.vcodec == "libx265":
        # with open GOPs x265 turns a forced IDR into a CRA whose picture order count runs on
        # from the warm-up frames: two such chunks in a row repeat counts and will not decode
        params = [*user, *([f"level-idc={s.level}"] if s.level else []), "log-level=error",
                  *(["open-gop=0"] if closed_gop else [])]
        if s.master_display or s.max_cll:
            params.append("hdr10=1")
            if s.master_display:
                params.append(f"master-display={s.master_display}")
            if s.max_cll:
                params.append(f"max-cll={s.max_cll}")
        cmd += ["-x265-params", ":".join(params)]
    return cmd


def tuning_error(tools: Tools, src: Path, s: Settings, filters: Sequence[str]) -> str:
    """The encoder's own complaint when it cannot open with these settings on this input's
    first frame ("x264 [error]: baseline profile doesn't support 4:4:4"), else "". For a boss
    before any work: a worker would fail every chunk with ffmpeg's generic line instead. An
    encoder this ffmpeg does not have counts as no complaint (the workers' may)."""
    cmd = [tools.ffmpeg, "-hide_banner", "-nostdin", "-v", "error", "-i", input_path(src), "-map", "0:v:0",
           "-frames:v", "1", *(["-vf", ",".join(filters)] if filters else []), *encoder_args(s), "-f", "null", "-"]
    try:
        run(cmd, timeout=ENCODER_TEST_TIMEOUT)
        return ""
    except FFmpegError as exc:
        return "" if "Unknown encoder" in exc.detail else encoder_complaint(exc)


def encoder_complaint(exc: FFmpegError) -> str:
    """An encoder's own first line names the cause ("[h264_nvenc @ 0x..] Cannot load
    libcuda.so.1"); ffmpeg's last is the generic "Error initializing output stream"."""
    first = (exc.detail.strip().splitlines() or ["the encoder does not open"])[0]
    return re.sub(r"^\[\S+ @ 0x[0-9a-f]+\] ", "", first)


def picture_filters(s: Settings, frame_range: tuple[int, int] | None = None, warmup: int = 0) -> list[str]:
    """The filters between a chunk's decoded frames and the encoder (encode_cmd; the boss's
    comparison with the source runs the same)."""
    # Chunks carry no display matrix, so turn the picture as ffmpeg's autorotate would in a
    # single run; then scale the picture the viewer sees.
    filters = {0: [], 90: ["transpose=clock"], 180: ["hflip", "vflip"], 270: ["transpose=cclock"]}[s.rotate]
    if frame_range is not None:
        skip, count = frame_range
        filters = [f"trim=start_frame={int(skip) - warmup}:end_frame={int(skip) + int(count)}",
                   "setpts=PTS-STARTPTS", *filters]
    if s.pad_even:
        filters.append("pad=ceil(iw/2)*2:ceil(ih/2)*2")     # 4:2:0 needs even sizes; keep every pixel
    if s.scale_w is not None:
        filters.append(f"scale={s.scale_w}:{s.scale_h}")
    if s.fps is not None:
        filters.append(f"fps={s.fps}")
    return filters


@dataclass
class Comparison:
    """A result's frames against the source's (compare_with_source)."""
    psnr: list[float]       # dB (all planes) of each result frame compared, in order; inf: identical
    messages: str           # what ffmpeg printed: a decoder's complaint, the result's or the source's


def compare_with_source(tools: Tools, source: Path, result: Path, s: Settings,
                        frame_range: tuple[int, int] | None, frames: int | None, *, timeout: float,
                        source_frames: int | None = None) -> Comparison:
    """Decode the first `frames` frames of a result (None: all of them) and measure each against
    the source chunk's frame of the same index as the encoder saw it (picture_filters). Pairing
    is by index, not timestamp (Matroska rounds those to 1 ms). One decode of the result does
    both jobs of a full check: with the source's last frame repeated for ever (tpad), there is a
    PSNR for every frame the result has, so their count is the result's frame count.
    source_frames: decode only this many of the source's (a sample's frames are counted, its
    first few compared); the values after them measure against a repeated frame and mean nothing."""
    ref = ",".join([*picture_filters(s, frame_range),
                    *([f"trim=end_frame={int(source_frames)}"] if source_frames else []),
                    *([] if frames else ["tpad=stop=-1:stop_mode=clone"]), "setpts=N/TB"])
    # one decoder thread each: frame threads decode ahead, frames this check never looks at;
    # N/TB (frame N at N seconds): no output time base can fold two frames into one timestamp
    cmd = [tools.ffmpeg, "-hide_banner", "-nostdin", "-v", "error", *ONE_THREAD, "-i", input_path(source),
           *ONE_THREAD, *input_args(result, peer=True), "-filter_complex",
           f"[0:v:0]{ref}[ref];[1:v:0]setpts=N/TB[res];[res][ref]psnr=stats_file=-:shortest=1",
           *(["-frames:v", str(frames)] if frames else []), "-f", "null", "-"]
    stdout, stderr = run_capture(cmd, timeout=timeout)
    values = [float(found[1]) for found in re.finditer(r"psnr_avg:(\S+)", stdout)]
    return Comparison(values, stderr.strip())


PAIR_OFFSET = 1000     # seconds: compare_many moves pair i's frames to i x this, to tell them apart


def compare_many(tools: Tools, pairs: Sequence[tuple[Path, Path, tuple[int, int] | None]], s: Settings,
                 frames: int, *, timeout: float) -> list[Comparison]:
    """compare_with_source for several (source, result, frame range) pairs, the first `frames`
    frames of each, in one ffmpeg run: one process start and one filter graph each, not one
    run each (a run at 640x360 cost 0.14 CPU-s alone, 0.09 a pair in a run of four). Each
    pair's PSNR goes to stdout through `metadata`, its frames moved to PAIR_OFFSET x (pair + 1)
    seconds so that the lines tell whose they are. The messages are the run's, not a pair's:
    a caller that gets any compares those pairs one by one."""
    cmd = [tools.ffmpeg, "-hide_banner", "-nostdin", "-v", "error"]
    graphs: list[str] = []
    for i, (source, result, frame_range) in enumerate(pairs):
        cmd += [*ONE_THREAD, "-i", input_path(source), *ONE_THREAD, *input_args(result, peer=True)]
        ref = ",".join([*picture_filters(s, frame_range), "setpts=N/TB", f"trim=end_frame={int(frames)}"])
        graphs += ["-filter_complex",
                   f"[{2 * i}:v:0]{ref}[ref{i}];[{2 * i + 1}:v:0]setpts=N/TB,trim=end_frame={int(frames)}[res{i}];"
                   f"[res{i}][ref{i}]psnr,setpts=N/TB+{(i + 1) * PAIR_OFFSET}/TB,"
                   f"metadata=mode=print:key=lavfi.psnr.psnr_avg:file=-[out{i}]"]
    outputs = [arg for i in range(len(pairs)) for arg in ("-map", f"[out{i}]", "-f", "null", "-")]
    stdout, stderr = run_capture(cmd + graphs + outputs, timeout=timeout)
    values: list[list[float]] = [[] for _ in pairs]
    pair = -1
    for line in stdout.splitlines():
        if line.startswith("frame:"):
            found = re.search(r"pts_time:(\S+)", line)
            pair = int(float(found[1]) // PAIR_OFFSET) - 1 if found else -1
        elif line.startswith("lavfi.psnr.psnr_avg=") and 0 <= pair < len(pairs):
            values[pair].append(float(line.partition("=")[2]))
    return [Comparison(v, stderr.strip()) for v in values]


def _rate_control(s: Settings) -> list[str]:
    """Quality or bit rate, and preset, as the encoder's table entry (common/encoders.py) says."""
    e = ENCODERS[s.vcodec]
    args: list[str] = []
    if s.vbitrate is None:
        args += [e.quality_option, str(s.crf if s.crf is not None else e.default_quality), *e.constant_quality_extra]
    else:
        args += ["-b:v", str(s.vbitrate)]
    if s.maxrate is not None:
        args += ["-maxrate", str(s.maxrate)]
    if s.bufsize is not None:
        args += ["-bufsize", str(s.bufsize)]
    if s.preset is not None and e.preset_option:
        args += [e.preset_option, s.preset]
    return args + list(e.always)


def copy_cmd(tools: Tools, src: Path, dst: Path, streams: Sequence[tuple[int, str]]) -> list[str]:
    """Copy the chosen streams, (stream index, codec or "copy"), with chapters and metadata into
    Matroska: the input as the later stages read it (client/media.own_copy). ffmpeg's command
    line makes jumping timestamps continuous on the way."""
    cmd = [tools.ffmpeg, *BASE_FLAGS, "-i", input_path(src)]
    codecs = ["-c", "copy"]
    for n, (index, codec) in enumerate(streams):
        cmd += ["-map", f"0:{int(index)}"]
        if codec != "copy":
            codecs += [f"-c:{n}", codec]
    return cmd + codecs + ["-map_metadata", "0", "-map_chapters", "0", "-f", "matroska", input_path(dst)]


def audio_cmd(tools: Tools, src: Path, dst: Path, acodec: str, abitrate: int | None) -> list[str]:
    """Take every audio stream out once (encoded or copied) into Matroska, metadata kept."""
    cmd = [tools.ffmpeg, *BASE_FLAGS, "-i", input_path(src), "-map", "0:a", "-vn", "-sn", "-dn",
           "-c:a", acodec]
    if abitrate is not None and acodec != "copy":
        cmd += ["-b:a", str(abitrate)]
    return cmd + ["-f", "matroska", input_path(dst)]


def concat_list(names: Sequence[str], durations: Sequence[float | None] = ()) -> str:
    """An ffconcat script for files beside it, each name quoted for the concat demuxer.

    A file's `duration` fixes where the next file starts: the source's own chunk borders, so a
    variable-frame-rate input keeps its timestamps instead of trusting each chunk's last frame.
    """
    lines = ["ffconcat version 1.0"]
    for i, name in enumerate(names):
        escaped = name.replace("'", "'\\''")   # close quote, escaped quote, reopen
        lines.append(f"file '{escaped}'")
        if i < len(durations) and durations[i] is not None:
            lines.append(f"duration {durations[i]:.6f}")
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class MuxPlan:
    """How the final output is assembled from the encoded video, the audio and the source."""
    concat_list: Path
    source: Path
    source_offset: float            # shifts the source's streams onto the output video's timeline
    video_index: int                # the source video stream whose metadata the output keeps
    audio: Path | None = None       # every audio stream, encoded once by the boss
    audio_offset: float = 0.0
    audio_count: int = 0
    subtitles: tuple[tuple[int, str], ...] = ()   # (source stream index, codec or "copy")
    attachments: tuple[int, ...] = ()             # source stream indices of attachments (fonts)
    stream_tags: tuple[tuple[str, int, str, str], ...] = ()  # (kind v/a/s, position, key, value) to set
    tags: tuple[tuple[str, str], ...] = ()          # global tags to set beside the source's
    muxer: str = "matroska"


def mux_cmd(tools: Tools, plan: MuxPlan, dst: Path) -> list[str]:
    """Join the chunks (concat demuxer) and mux in audio, subtitles, chapters and metadata."""
    cmd = [tools.ffmpeg, *BASE_FLAGS, *CONCAT, "-i", input_path(plan.concat_list)]
    src = 1
    if plan.audio is not None:
        cmd += ["-itsoffset", f"{plan.audio_offset:.6f}", "-i", input_path(plan.audio)]
        src = 2
    cmd += ["-itsoffset", f"{plan.source_offset:.6f}", "-i", input_path(plan.source)]
    cmd += ["-map", "0:v:0"]
    # Any stream metadata mapping turns off ffmpeg's default per-stream copy, so map each one.
    meta = ["-map_metadata", str(src), "-map_metadata:s:v:0", f"{src}:s:{plan.video_index}"]
    if plan.audio is not None:
        cmd += ["-map", "1:a"]
        for i in range(plan.audio_count):
            meta += [f"-map_metadata:s:a:{i}", f"1:s:a:{i}"]
    codecs = ["-c", "copy"]
    for n, (index, codec) in enumerate(plan.subtitles):
        cmd += ["-map", f"{src}:{index}"]
        meta += [f"-map_metadata:s:s:{n}", f"{src}:s:{index}"]
        if codec != "copy":
            codecs += [f"-c:s:{n}", codec]
    for n, index in enumerate(plan.attachments):
        cmd += ["-map", f"{src}:{index}"]
        meta += [f"-map_metadata:s:t:{n}", f"{src}:s:{index}"]     # filename and mimetype travel as tags
    for kind, position, key, value in plan.stream_tags:
        meta += [f"-metadata:s:{kind}:{position}", f"{key}={value}"]
    for key, value in plan.tags:
        meta += ["-metadata", f"{key}={value}"]
    cmd += meta + ["-map_chapters", str(src)] + codecs
    if plan.muxer in ("mp4", "mov"):
        cmd += ["-movflags", "+faststart"]
    return cmd + ["-f", plan.muxer, input_path(dst)]
