"""The boss's job state on disk, so a crashed or interrupted job resumes where it stopped.

`state.json` in the work directory holds the input's identity, the settings, and each chunk's
manifest (size, SHA-256, frames, start) with the hash of its verified result. It is replaced
atomically (temp file, fsync, rename, fsync of the directory), so a crash at any instant leaves
either the old state or the new one.
"""
from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from client.scheduler import Chunk, ChunkState
from common.transfer import sha256_file

log = logging.getLogger("boss")

STATE_VERSION = 1


@dataclass(frozen=True)
class Identity:
    """What must not change for a job to resume: the input file and every setting."""
    input: str
    size: int
    mtime_ns: int
    settings: dict[str, Any]

    @classmethod
    def of(cls, path: Path, settings: dict[str, Any]) -> Identity:
        st = path.stat()
        return cls(str(path.resolve()), st.st_size, st.st_mtime_ns, settings)

    def to_json(self) -> dict[str, Any]:
        return {"input": self.input, "size": self.size, "mtime_ns": self.mtime_ns, "settings": self.settings}


class JobState:
    def __init__(self, work: Path, identity: Identity) -> None:
        self.work, self.identity = work, identity
        self.path = work / "state.json"
        self._lock = threading.Lock()

    def load(self) -> tuple[list[Chunk], int] | None:
        """The chunks of an earlier run of this same job, with verified results marked done;
        None if there is no usable earlier state."""
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if data.get("version") != STATE_VERSION or data.get("identity") != self.identity.to_json():
            return None
        chunks = []
        for c in data.get("chunks", []):
            source = self.work / "src" / Path(str(c.get("source", ""))).name
            if not source.is_file() or source.stat().st_size != c["size"]:
                return None                 # the split itself is incomplete: redo it
            chunk = Chunk(index=c["index"], source=source, size=c["size"], sha256=c["sha256"], frames=c["frames"],
                          start=c["start"], skip=c.get("skip", 0), whole=c.get("whole", True), span=c.get("span"))
            result = self.work / f"{chunk.name}.out.mkv"
            if c.get("result_sha256") and result.is_file() and sha256_file(result) == c["result_sha256"]:
                chunk.state, chunk.result, chunk.result_sha256 = ChunkState.DONE, result, c["result_sha256"]
                chunk.progress = chunk.frames
            chunks.append(chunk)
        if not chunks:
            return None
        # a damaged source piece would poison the job (pieces cut by frame range are shared: hash once)
        wanted = {c.source: c.sha256 for c in chunks if c.state is not ChunkState.DONE}
        if any(sha256_file(source) != sha for source, sha in wanted.items()):
            return None
        return chunks, int(data.get("expected_frames", sum(c.frames for c in chunks)))

    def save(self, chunks: list[Chunk], expected_frames: int) -> None:
        data = {"version": STATE_VERSION, "identity": self.identity.to_json(), "expected_frames": expected_frames,
                "chunks": [{"index": c.index, "source": c.source.name, "size": c.size, "sha256": c.sha256,
                            "frames": c.frames, "start": c.start, "skip": c.skip, "whole": c.whole, "span": c.span,
                            "result_sha256": c.result_sha256 if c.state is ChunkState.DONE else None}
                           for c in chunks]}
        with self._lock:
            tmp = self.path.with_name("state.json.tmp")
            with tmp.open("w", encoding="utf-8") as f:
                json.dump(data, f, indent=1)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
            fd = os.open(self.work, os.O_RDONLY)
            try:
                os.fsync(fd)                # the rename itself is durable
            finally:
                os.close(fd)
