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
again. A chunk drawn is done once two results agree, or, when no worker alike is left to make
another (lost, dropped, three failed tries, or three results that all differ), with its first
result that is not a liar's. The chunks a liar's results were counted for are encoded again.
Only for encoders marked deterministic (x264, x265): the boss refuses it for the others.
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
                 report: Callable[..., None], cancel: Callable[[int, set[str]], None],
                 redone: Callable[[list[Chunk]], None] = lambda chunks: None) -> None:
        self.fraction = fraction
        self.scheduler, self.links, self.work, self.report, self.cancel = scheduler, links, work, report, cancel
        self.redone = redone              # chunks counted before a liar was found out: encoded again
        self.agreed = 0                   # chunks two workers' encodes agreed on
        self._unpaired: set[str] = set()  # workers told to have no peer to be compared with
        self._held: dict[int, list[_Held]] = {}
        # held by the job from accept()'s decision until the result is recorded (Scheduler.done):
        # else a liar found out in another thread meanwhile would miss that chunk in redo()
        self.lock = threading.RLock()
        self._random = random.SystemRandom()

    def accept(self, link: WorkerLink, chunk: Chunk, tmp: Path, sha256: str, left: int, workers: int
               ) -> tuple[WorkerLink, Path, str] | None:
        """A checked result: the result to count for the chunk (whose worker, its file, its
        SHA-256), or None while the chunk waits for another worker's encode (or the result is
        a dropped liar's). `left`: chunks not done besides this one; `workers`: the job's live
        workers (no draw in the last round, where the second encode would sit between the last
        result and the output)."""
        with self.lock:
            if link.lied:                             # fetched before it was found out
                tmp.unlink(missing_ok=True)
                return None
            held = self._held.get(chunk.index)
            if chunk.state is ChunkState.DONE:        # a straggler copy, second: dropped as ever
                return link, tmp, sha256
            if held is None:
                alike = self._alike(link, set())
                if self.fraction and not alike and link.offer.name not in self._unpaired:
                    self._unpaired.add(link.offer.name)
                    log.warning("%s has no other worker alike in this job (%s): its chunks are not encoded "
                                "again", link.offer.name, "it does not say what it runs" if link.encoder is None
                                else "the same ffmpeg build, threads and CPU kind")
                if not (alike and left >= workers and self._random.random() < self.fraction):
                    return link, tmp, sha256
                if not self._hold(chunk, link, tmp, sha256, alike, []):
                    return link, tmp, sha256          # counted meanwhile: a duplicate
                log.debug("%s from %s: kept until another worker's encode matches it", chunk.name, link.offer.name)
                return None
            if link.encoder != held[0].link.encoder:     # not comparable: a copy started before the hold
                tmp.unlink(missing_ok=True)
                return None
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
                return self._settle_first(chunk, held)
            log.debug("%s from %s differs from %s's: a third encode settles it", chunk.name, link.offer.name,
                      held[0].link.offer.name)
            if not self._hold(chunk, link, tmp, sha256, alike, held):
                return link, tmp, sha256
            return None

    def settle_stalled(self) -> list[tuple[Chunk, WorkerLink, Path, str]]:
        """Chunks kept for a second encode that no live worker alike can make any more (lost,
        dropped, out of tries): their first result counts. Returns (chunk, worker, file, SHA-256)
        to record."""
        stalled: list[tuple[Chunk, WorkerLink, Path, str]] = []
        if not self._held:                 # (called twice a second by the job's main loop)
            return stalled
        with self.lock:
            alive = {l.offer.name for l in self.links() if l.is_alive() and not l.lied}
            for index, held in list(self._held.items()):
                chunk = self.scheduler.chunks[index]
                if chunk.state is ChunkState.PENDING and not (chunk.only or set()) & alive:
                    log.debug("%s: no other worker alike left for its second encode; its first result counts",
                              chunk.name)
                    settled = self._settle_first(chunk, held)
                    if settled is not None:
                        stalled.append((chunk, *settled))
        return stalled

    def _alike(self, link: WorkerLink, tried: set[str]) -> set[str]:
        """The live workers whose encodes must equal `link`'s, besides it and those in `tried`."""
        if link.encoder is None:
            return set()
        # by name: a worker that reconnected is a new link, and must not check its own result
        return {l.offer.name for l in self.links() if l.offer.name != link.offer.name and l.is_alive()
                and not l.lied and l.encoder == link.encoder and l.offer.name not in tried}

    def _hold(self, chunk: Chunk, link: WorkerLink, tmp: Path, sha256: str, alike: set[str],
              held: list[_Held]) -> bool:
        """Keep this result aside and queue the chunk for `alike`; False if it is done already."""
        others = self.scheduler.hold(chunk, link.offer.name, alike)
        if others is None:
            return False
        kept = self.work / f"{chunk.name}.kept-{len(held)}.mkv"
        tmp.replace(kept)
        self._held[chunk.index] = [*held, _Held(link, kept, sha256)]
        self.cancel(chunk.index, others)
        return True

    def _settle_first(self, chunk: Chunk, held: list[_Held]) -> tuple[WorkerLink, Path, str] | None:
        """Count the first kept result that is not a liar's; None (the chunk encoded afresh) if
        all of them are."""
        honest = [h for h in held if not h.link.lied]
        if honest:
            return self._settle(chunk, held, honest[0])
        self._forget(chunk, held)
        return None

    def _settle(self, chunk: Chunk, held: list[_Held], chosen: _Held) -> tuple[WorkerLink, Path, str]:
        self._forget(chunk, held, keep=chosen)
        return chosen.link, chosen.path, chosen.sha256

    def _forget(self, chunk: Chunk, held: list[_Held], keep: _Held | None = None) -> None:
        del self._held[chunk.index]
        self.scheduler.open_to_all(chunk)    # (a chunk no result is kept for goes to anyone, from scratch)
        for h in held:
            if h is not keep:
                h.path.unlink(missing_ok=True)

    def _liar(self, chunk: Chunk, h: _Held, matching: int) -> None:
        """`h`'s worker lied: dropped and reported; every chunk its result counts for is encoded
        again, and what it has kept aside for other chunks no longer counts."""
        name = h.link.offer.name
        why = f"its encode of {chunk.name} differs from {matching} other workers' with the same ffmpeg build, " \
              f"settings and threads"
        self.report(Event.CHUNK_FAILED, chunk=chunk.index, worker=name, detail=why[:MAX_REASON])
        h.link.drop(why)
        for index, kept in list(self._held.items()):
            if index != chunk.index and any(k.link is h.link for k in kept):
                rest = [k for k in kept if k.link is not h.link]
                for k in kept:
                    if k.link is h.link:
                        k.path.unlink(missing_ok=True)
                if rest:
                    self._held[index] = rest
                else:
                    del self._held[index]
                    self.scheduler.open_to_all(self.scheduler.chunks[index])
        redone = self.scheduler.redo(name)
        for c in redone:
            (self.work / f"{c.name}.out.mkv").unlink(missing_ok=True)
        if redone:
            log.warning("%d chunk(s) %s encoded go back to the queue", len(redone), name)
            self.redone(redone)
