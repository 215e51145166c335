"""The re-encode check: a random share of chunks is encoded a second time by another worker alike
(the same ffmpeg build, and the same encoder threads, with the job's one set of settings), and the
two results must be the same bytes. x264 and x265 are deterministic for a given build, settings
and thread count, and workers write their Matroska without a random segment UID or a date
(`-fflags +bitexact`), so honest results of one chunk have one SHA-256. A mismatch goes to a
third such worker: the result that differs from the other two was a lie, and its worker is
dropped from the job and reported to the tracker.

This catches what the comparison with the source cannot: a result that is well-formed and close
to the source's picture but not what the job's settings make (worse quality, a watermark kept
faint, frames subtly changed past the ones compared). It costs the share drawn of the encode
again, and a chunk drawn is done only once two results agree.
"""
from __future__ import annotations

import logging
import random
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ffdt.client.link import WorkerLink
from ffdt.client.scheduler import Chunk, ChunkState, Scheduler
from ffdt.common.audit_events import Event
from ffdt.common.config import MAX_REASON

log = logging.getLogger("boss")

SETTLE_AT = 2        # matching results that settle a chunk


@dataclass
class _Held:
    link: WorkerLink
    path: Path
    sha256: str


class Rechecks:
    """Which chunks get a second encode, and what their results say. accept() is called with
    each result that passed the checks (checks.py), from the checks' pool threads."""

    def __init__(self, fraction: float, scheduler: Scheduler, links: Callable[[], list[WorkerLink]], work: Path,
                 report: Callable[..., None], cancel: Callable[[int, set[str]], None]) -> None:
        self.fraction = fraction
        self.scheduler, self.links, self.work, self.report, self.cancel = scheduler, links, work, report, cancel
        self.agreed = 0                   # chunks two workers' encodes agreed on
        self._held: dict[int, list[_Held]] = {}
        self._lock = threading.Lock()
        self._random = random.SystemRandom()

    def accept(self, link: WorkerLink, chunk: Chunk, tmp: Path, sha256: str, left: int, workers: int
               ) -> tuple[WorkerLink, Path, str] | None:
        """A checked result: the result to count for the chunk (whose worker, its file, its
        SHA-256), or None while the chunk waits for another worker's encode. `left`: chunks not
        done besides this one; `workers`: the job's live workers (no draw in the last round,
        where the second encode would sit between the last result and the output)."""
        with self._lock:
            held = self._held.get(chunk.index)
            if chunk.state is ChunkState.DONE:        # a straggler copy, second: dropped as ever
                return link, tmp, sha256
            if held is None:
                alike = self._alike(link, set())
                if not (alike and left >= workers and self._random.random() < self.fraction):
                    return link, tmp, sha256
                self._hold(chunk, link, tmp, sha256, alike, [])
                log.debug("%s from %s: kept until another worker's encode matches it", chunk.name, link.offer.name)
                return None
            if link.encoder != held[0].link.encoder:     # not comparable (a worker not alike took it)
                tmp.unlink(missing_ok=True)
                return self._settle(chunk, held, held[0])
            same = [h for h in held if h.sha256 == sha256]
            if same:
                self.agreed += 1
                for h in held:
                    if h.sha256 != sha256:
                        self._liar(chunk, h, len(same) + 1)
                return self._settle(chunk, held, _Held(link, tmp, sha256))
            tried = {h.link.offer.name for h in held} | {link.offer.name}
            alike = self._alike(link, tried)
            if len(held) + 1 > SETTLE_AT or not alike:
                log.warning("%s: %d workers' encodes differ and no other worker alike is left to settle it; "
                            "keeping the first", chunk.name, len(held) + 1)
                tmp.unlink(missing_ok=True)
                return self._settle(chunk, held, held[0])
            log.debug("%s from %s differs from %s's: a third encode settles it", chunk.name, link.offer.name,
                      held[0].link.offer.name)
            self._hold(chunk, link, tmp, sha256, alike, held)
            return None

    def settle_stalled(self) -> list[tuple[Chunk, WorkerLink, Path, str]]:
        """Chunks kept for a second encode that no live worker alike can make any more (lost,
        dropped): their first result counts. Returns (chunk, worker, file, SHA-256) to record."""
        stalled = []
        with self._lock:
            for index, held in list(self._held.items()):
                chunk = self.scheduler.chunks[index]
                alive = {l.offer.name for l in self.links() if l.is_alive() and not l.lied}
                if chunk.state is ChunkState.PENDING and not (chunk.only or set()) & alive:
                    log.debug("%s: no other worker alike left for its second encode; its first result counts",
                              chunk.name)
                    stalled.append((chunk, *self._settle(chunk, held, held[0])))
        return stalled

    def _alike(self, link: WorkerLink, tried: set[str]) -> set[str]:
        """The live workers whose encodes must equal `link`'s, besides it and those in `tried`."""
        if link.encoder is None:
            return set()
        return {l.offer.name for l in self.links() if l is not link and l.is_alive() and not l.lied
                and l.encoder == link.encoder and l.offer.name not in tried}

    def _hold(self, chunk: Chunk, link: WorkerLink, tmp: Path, sha256: str, alike: set[str],
              held: list[_Held]) -> None:
        kept = self.work / f"{chunk.name}.kept-{len(held)}.mkv"
        tmp.replace(kept)
        self._held[chunk.index] = [*held, _Held(link, kept, sha256)]
        self.cancel(chunk.index, self.scheduler.hold(chunk, link.offer.name, alike))

    def _settle(self, chunk: Chunk, held: list[_Held], chosen: _Held) -> tuple[WorkerLink, Path, str]:
        del self._held[chunk.index]
        chunk.only = None
        for h in held:
            if h is not chosen:
                h.path.unlink(missing_ok=True)
        return chosen.link, chosen.path, chosen.sha256

    def _liar(self, chunk: Chunk, h: _Held, matching: int) -> None:
        why = (f"its encode of {chunk.name} differs from {matching} other workers' with the same ffmpeg build, "
               f"settings and threads")
        self.report(Event.CHUNK_FAILED, chunk=chunk.index, worker=h.link.offer.name, detail=why[:MAX_REASON])
        h.link.drop(why)
