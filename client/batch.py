"""Many files, one farm: the queue stage above the job (client/job.py), one file after another
(not named queue.py: a script's own folder comes first on sys.path, before the standard library).

`ffdt-boss IN1 IN2 DIR ... -o OUTDIR/` transcodes each input into OUTDIR, a folder's files with
their sub-folders mirrored. A file that fails is reported and the queue goes on; an output that
exists is a finished file (the boss renames an output into place only once it passed its
checks), so running the same command again resumes the queue: finished files are skipped, and
an interrupted one resumes from its work directory.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

from common.errors import TranscoderError, UsageError

if TYPE_CHECKING:
    from client.boss import BossConfig

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
    status: str                 # done, skipped, failed
    seconds: float = 0.0
    detail: str = ""
    frames: int = 0


def is_queue(inputs: list[Path], output: Path | None) -> bool:
    """Queue mode: several inputs, a folder among them, or an output that is a folder."""
    return len(inputs) > 1 or any(p.is_dir() for p in inputs) or (
        output is not None and (output.is_dir() or str(output).endswith("/")))


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


def run_queue(cfg: BossConfig, entries: list[Entry]) -> int:
    """Each entry as a job of its own with the same settings; 0 if every file is done or was
    already, 1 if any failed."""
    from client.job import transcode          # the job stage; imported here so `plan` stays light
    from client.local import LocalCluster
    outcomes: list[Outcome] = []
    cluster = None
    if cfg.local:         # one set of local workers for the whole queue, not one per file
        log.info("starting a local tracker and %d worker%s", cfg.local, "s" if cfg.local > 1 else "")
        cluster = LocalCluster(cfg.local, cfg.ffmpeg_args)
        cfg = dataclasses.replace(cfg, local=0, tracker=cluster.addr, user=cluster.boss_user,
                                  password=cluster.password)
    log.info("queue: %d file%s -> %s", len(entries), "s" if len(entries) > 1 else "", cfg.output)
    try:
        for n, entry in enumerate(entries, 1):
            tag = f"[{n}/{len(entries)}] {entry.source}"
            if entry.output.exists() and not cfg.overwrite:
                outcomes.append(Outcome(entry, "skipped", detail="exists (-y to transcode it again)"))
                log.info("%s: %s exists, skipped", tag, entry.output)
                continue
            started = time.monotonic()
            try:
                entry.output.parent.mkdir(parents=True, exist_ok=True)
                one = dataclasses.replace(cfg, input=entry.source, output=entry.output, work_dir=entry.work_dir,
                                          report=None)
                summary = transcode(one)
            except OSError as exc:
                outcomes.append(Outcome(entry, "failed", time.monotonic() - started, exc.strerror or str(exc)))
            except TranscoderError as exc:
                why = str(exc).removeprefix(f"{entry.source}: ")     # the table names the file already
                outcomes.append(Outcome(entry, "failed", time.monotonic() - started, why))
            else:
                outcomes.append(Outcome(entry, "done", summary["seconds"], frames=summary["frames"]))
            last = outcomes[-1]
            if last.status == "done":
                log.info("%s: done -> %s (%d frames, %.1fs)", tag, entry.output, last.frames, last.seconds)
            else:
                log.error("%s: failed: %s", tag, last.detail)
    except KeyboardInterrupt:
        print_table(outcomes, len(entries))
        log.warning("interrupted: run the same command again to go on (finished files are skipped)")
        raise
    finally:
        if cluster is not None:
            cluster.close()
    print_table(outcomes, len(entries))
    write_report(cfg.report, outcomes)
    return 1 if any(o.status == "failed" for o in outcomes) else 0


def print_table(outcomes: list[Outcome], total: int) -> None:
    width = max((len(str(o.entry.source)) for o in outcomes), default=4)
    log.info("%-*s  %-7s  %8s  %7s  %s", width, "file", "status", "seconds", "frames", "output / reason")
    for o in outcomes:
        log.info("%-*s  %-7s  %8.1f  %7d  %s", width, o.entry.source, o.status, o.seconds, o.frames,
                 o.entry.output if o.status == "done" else o.detail)
    counts = {s: sum(o.status == s for o in outcomes) for s in ("done", "skipped", "failed")}
    log.info("queue: %d done, %d skipped (already there), %d failed, %d not reached", counts["done"],
             counts["skipped"], counts["failed"], total - len(outcomes))


def write_report(path: Path | None, outcomes: list[Outcome]) -> None:
    if path is None:
        return
    rows: list[dict[str, Any]] = [{"input": str(o.entry.source), "output": str(o.entry.output), "status": o.status,
                                   "seconds": round(o.seconds, 3), "frames": o.frames, "detail": o.detail}
                                  for o in outcomes]
    try:
        path.write_text(json.dumps({"files": rows}, indent=2) + "\n", encoding="utf-8")
    except OSError as exc:
        log.warning("could not write the report %s: %s", path, exc.strerror or exc)
