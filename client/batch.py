"""Many files, one farm: the queue stage above the job (client/job.py). Not named queue.py: a
script's own folder comes first on sys.path, before the standard library.

`ffdt-boss IN1 IN2 DIR ... -o OUTDIR/` transcodes each input into OUTDIR, a folder's files with
their sub-folders mirrored; the next file starts while the last one's tail is still encoding. A
file that fails is reported and the queue goes on; an output that exists is a finished file (the
boss renames an output into place only once it passed its checks), so running the same command
again resumes the queue: finished files are skipped, and an interrupted one resumes from its
work directory.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

from ffdt.client.job import JobHandle, transcode
from ffdt.common.errors import TranscoderError, UsageError

if TYPE_CHECKING:
    from ffdt.client.boss import BossConfig

log = logging.getLogger("boss")

# what a folder's files must end with to be queued, unless --extensions says otherwise
VIDEO_EXTENSIONS = ("3gp", "avi", "dv", "flv", "m2ts", "m4v", "mkv", "mov", "mp4", "mpeg", "mpg", "mts", "mxf",
                    "ogv", "ts", "vob", "webm", "wmv")


@dataclass(frozen=True)
class Entry:
    source: Path
    output: Path
    work_dir: Path | None       # the --work-dir for this file (None: beside its output)


@dataclass
class Outcome:
    entry: Entry
    status: str                 # done, skipped, failed, interrupted
    seconds: float = 0.0
    detail: str = ""
    frames: int = 0
    # when, in seconds from the queue's start: the file's job began, its first chunk went out,
    # it ended (the next file's first chunks go out before the last one ends)
    began: float | None = None
    first_out: float | None = None
    ended: float | None = None


def is_queue(inputs: list[Path], output: Path, as_folder: bool = False) -> bool:
    """Queue mode: several inputs, a folder among them, or an output that is a folder (one that
    exists, or written as OUTDIR/)."""
    return len(inputs) > 1 or any(p.is_dir() for p in inputs) or as_folder or output.is_dir()


def parse_extensions(text: str) -> tuple[str, ...]:
    exts = tuple(sorted({e.strip().lower().lstrip(".") for e in text.split(",") if e.strip()}))
    if not exts or not all(e.isalnum() for e in exts):
        raise UsageError(f"--extensions takes names such as mp4,mkv,mov, not {text!r}")
    return exts


def plan(inputs: Iterable[Path], outdir: Path, suffix: str, *, recursive: bool, extensions: tuple[str, ...],
         work_dir: Path | None = None) -> list[Entry]:
    """The queue, in the order given (a folder's files sorted by path): each input's output in
    `outdir` with `suffix` (".mp4"), a folder's sub-folders mirrored. UsageError for an input that
    does not exist, an empty queue, or two inputs that would write the same output."""
    entries: list[Entry] = []
    for given in inputs:
        if given.is_dir():
            found = sorted(p for p in (given.rglob("*") if recursive else given.iterdir())
                           if p.is_file() and p.suffix.lower().lstrip(".") in extensions
                           and not any(part.startswith(".") for part in p.relative_to(given).parts))
            if not found:
                log.warning("%s: no files ending in %s%s", given, ", ".join(f".{e}" for e in extensions),
                            "" if recursive else " (--recursive for its sub-folders)")
            pairs = [(p, p.relative_to(given)) for p in found]
        elif given.is_file():
            pairs = [(given, Path(given.name))]
        else:
            raise UsageError(f"{given}: no such file or folder")
        for source, rel in pairs:
            out = outdir / rel.with_suffix(suffix)
            entries.append(Entry(source, out, None if work_dir is None else work_dir / rel.parent))
    if not entries:
        raise UsageError("nothing to transcode: no input files found")
    seen: dict[Path, Path] = {}
    for e in entries:
        key = e.output.resolve()
        if key in seen:
            raise UsageError(f"{seen[key]} and {e.source} would both be written to {e.output}")
        seen[key] = e.source
    return entries


MAX_AT_ONCE = 2        # the file in its tail and the next one
QUEUE_POLL = 0.2       # seconds between looks at the running jobs
STOP_WAIT = 30.0       # after Ctrl-C, how long a stopped job may take to end


@dataclass
class Running:
    """A file being transcoded in a thread of its own."""
    number: int
    entry: Entry
    handle: JobHandle
    queue_start: float
    thread: threading.Thread | None = None
    outcome: Outcome | None = None


def run_queue(cfg: BossConfig, entries: list[Entry]) -> int:
    """Each entry as a job of its own with the same settings. The next file starts as soon as
    the running one has handed out its last chunk: while its tail is encoded, checked and
    joined, the workers it leaves idle take the next file's first chunks (a worker's sessions
    with both jobs share its slots). Returns 0 if every file is done or was already, 1 if any
    failed."""
    from ffdt.client.local import LocalCluster
    outcomes: dict[int, Outcome] = {}
    cluster = None
    if cfg.local:         # one set of local workers for the whole queue, not one per file
        log.info("starting a local tracker and %d worker%s", cfg.local, "s" if cfg.local > 1 else "")
        cluster = LocalCluster(cfg.local, cfg.ffmpeg_args)
        cfg = dataclasses.replace(cfg, local=0, tracker=cluster.addr, user=cluster.boss_user,
                                  password=cluster.password)
    log.info("queue: %d file%s -> %s", len(entries), "s" if len(entries) > 1 else "", cfg.output)
    todo = list(enumerate(entries, 1))
    queue_start = time.monotonic()
    running: list[Running] = []
    try:
        while todo or running:
            for r in [r for r in running if r.thread is not None and not r.thread.is_alive()]:
                running.remove(r)
                outcomes[r.number] = _told(r, len(entries))
            # the next file: when nothing runs, or the newest job has only its tail left
            if todo and (not running or (len(running) < MAX_AT_ONCE and running[-1].handle.all_out())):
                number, entry = todo.pop(0)
                if entry.output.exists() and not cfg.overwrite:
                    outcomes[number] = Outcome(entry, "skipped", detail="exists (-y to transcode it again)")
                    log.info("[%d/%d] %s: %s exists, skipped", number, len(entries), entry.source, entry.output)
                    continue
                r = Running(number, entry, JobHandle(), queue_start)
                # a tail worker of an earlier file takes this file's chunks, not a straggler copy
                for earlier in running:
                    earlier.handle.copies_wanted = lambda later=r.handle, before=earlier.handle.copies_wanted: \
                        before() and not later.has_pending()
                # one progress bar at a time: a job started beside another runs without one
                one = dataclasses.replace(cfg, input=entry.source, output=entry.output, work_dir=entry.work_dir,
                                          report=None, bars=cfg.bars and not running)
                r.thread = threading.Thread(target=_transcode, args=(one, r), name=f"file-{number}", daemon=True)
                running.append(r)
                r.thread.start()
                continue
            time.sleep(QUEUE_POLL)
    except KeyboardInterrupt:
        for r in running:
            r.handle.stop("interrupted by the user")
        for r in running:
            assert r.thread is not None
            r.thread.join(STOP_WAIT)
            outcomes[r.number] = r.outcome or Outcome(r.entry, "interrupted", detail="interrupted by the user")
        print_table([outcomes[n] for n in sorted(outcomes)], len(entries))
        log.warning("interrupted: run the same command again to go on (finished files are skipped)")
        raise
    finally:
        if cluster is not None:
            cluster.close()
    done = [outcomes[n] for n in sorted(outcomes)]
    print_table(done, len(entries))
    write_report(cfg.report, done)
    return 1 if any(o.status == "failed" for o in done) else 0


def _transcode(cfg: BossConfig, r: Running) -> None:
    """One file, in its own thread: its outcome, whatever happens."""
    started = time.monotonic()
    try:
        cfg.output.parent.mkdir(parents=True, exist_ok=True)
        summary = transcode(cfg, r.handle)
    except OSError as exc:
        r.outcome = Outcome(r.entry, "failed", time.monotonic() - started, exc.strerror or str(exc))
    except TranscoderError as exc:
        why = str(exc).removeprefix(f"{r.entry.source}: ")     # the table names the file already
        r.outcome = Outcome(r.entry, "interrupted" if r.handle.stopped else "failed", time.monotonic() - started,
                            why)
    except Exception as exc:          # noqa: BLE001 - a bug in one file's job must not stop the queue
        log.exception("%s: internal error", r.entry.source)
        r.outcome = Outcome(r.entry, "failed", time.monotonic() - started, f"internal error: {exc}")
    else:
        out = summary["timeline"]["first_assigned"]
        r.outcome = Outcome(r.entry, "done", summary["seconds"], frames=summary["frames"],
                            first_out=None if out is None else round(started - r.queue_start + out, 3))
    r.outcome.began = round(started - r.queue_start, 3)
    r.outcome.ended = round(time.monotonic() - r.queue_start, 3)


def _told(r: Running, total: int) -> Outcome:
    """The finished file's outcome, said in one line."""
    o = r.outcome or Outcome(r.entry, "failed", detail="ended without a result")
    tag = f"[{r.number}/{total}] {r.entry.source}"
    if o.status == "done":
        log.info("%s: done -> %s (%d frames, %.1fs)", tag, o.entry.output, o.frames, o.seconds)
    else:
        log.error("%s: failed: %s", tag, o.detail)
    return o


def print_table(outcomes: list[Outcome], total: int) -> None:
    width = max((len(str(o.entry.source)) for o in outcomes), default=4)
    log.info("%-*s  %-11s  %8s  %7s  %s", width, "file", "status", "seconds", "frames", "output / reason")
    for o in outcomes:
        log.info("%-*s  %-11s  %8.1f  %7d  %s", width, o.entry.source, o.status, o.seconds, o.frames,
                 o.entry.output if o.status == "done" else o.detail)
    counts = {s: sum(o.status == s for o in outcomes) for s in ("done", "skipped", "failed", "interrupted")}
    log.info("queue: %d done, %d skipped (already there), %d failed, %d not reached%s", counts["done"],
             counts["skipped"], counts["failed"], total - len(outcomes),
             f", {counts['interrupted']} interrupted" if counts["interrupted"] else "")


def write_report(path: Path | None, outcomes: list[Outcome]) -> None:
    if path is None:
        return
    rows: list[dict[str, Any]] = [{"input": str(o.entry.source), "output": str(o.entry.output), "status": o.status,
                                   "seconds": round(o.seconds, 3), "frames": o.frames, "detail": o.detail,
                                   "began": o.began, "first_chunk_out": o.first_out, "ended": o.ended}
                                  for o in outcomes]
    try:
        path.write_text(json.dumps({"files": rows}, indent=2) + "\n", encoding="utf-8")
    except OSError as exc:
        log.warning("could not write the report %s: %s", path, exc.strerror or exc)
