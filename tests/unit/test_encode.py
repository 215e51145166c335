"""client/encode.py with real ffmpeg: a chunk encoded while its bytes still arrive (Arrival)
makes the same result, byte for byte, as one encoded from the whole file."""
from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from tests.conftest import ffmpeg as run_ffmpeg

from ffdt.client.encode import Arrival, Assignment, encode
from ffdt.common import ffmpeg
from ffdt.common.errors import FFmpegError
from ffdt.common.settings import Settings
from ffdt.common.transfer import part_path, sha256_file

SETTINGS = Settings(vcodec="libx264", preset="veryfast")


@pytest.fixture(scope="module")
def piece(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A chunk as the boss's segment muxer cuts one: 2 s of H.264 in Matroska."""
    path = tmp_path_factory.mktemp("piece") / "piece.mkv"
    run_ffmpeg("-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25:duration=2", "-c:v", "libx264",
               "-preset", "ultrafast", "-g", "25", "-pix_fmt", "yuv420p", "-f", "matroska", str(path))
    return path


def upload(data: bytes, dest: Path, arrival: Arrival, ok: bool = True, pause: float = 0.002,
           on_failure=lambda: None, reader=lambda part: part) -> threading.Thread:
    """Write `data` into dest's part file in small blocks, as recv_file does, then rename it; or
    (ok=False) stop halfway, remove it and call on_failure before ended(False), as the session
    cancels the encode before its feed ends. reader(part): what grew() is given to open."""
    def write() -> None:
        part = part_path(dest)
        with part.open("wb") as f:
            for at in range(0, len(data), 4096):
                f.write(data[at:at + 4096])
                arrival.grew(reader(part), len(data[at:at + 4096]))
                time.sleep(pause)       # the network's pace, slower than the feeder's
                if not ok and at > len(data) // 2:
                    break
        if ok:
            part.replace(dest)
        else:
            part.unlink()
            on_failure()
        arrival.ended(ok)

    writer = threading.Thread(target=write)
    writer.start()
    return writer


def test_an_encode_fed_while_the_bytes_arrive_makes_the_same_result(piece, tmp_path):
    tools = ffmpeg.find_tools()
    whole = Assignment(0, 50, tmp_path / "a.in.mkv", tmp_path / "a.out.mkv")
    whole.input.write_bytes(piece.read_bytes())
    expected = encode(tools, SETTINGS, whole, 1, lambda n: None)

    arrival = Arrival()
    early = Assignment(0, 50, tmp_path / "b.in.mkv", tmp_path / "b.out.mkv")
    dest = tmp_path / "b.upload.mkv"
    writer = upload(piece.read_bytes(), dest, arrival)
    frames: list[int] = []
    got = encode(tools, SETTINGS, early, 1, frames.append, arriving=arrival)
    writer.join()
    assert got == expected and sha256_file(early.output) == expected[1]
    assert dest.read_bytes() == piece.read_bytes(), "the uploaded file was changed or removed"
    assert frames and max(frames) == 50


def test_an_upload_that_fails_ends_the_feed_and_the_cancelled_encode(piece, tmp_path):
    tools = ffmpeg.find_tools()
    arrival = Arrival()
    a = Assignment(0, 50, tmp_path / "c.in.mkv", tmp_path / "c.out.mkv")
    writer = upload(piece.read_bytes(), tmp_path / "c.upload.mkv", arrival, ok=False, pause=0.01,
                    on_failure=a.cancel.set)
    started = time.monotonic()
    try:
        got: object = encode(tools, SETTINGS, a, 1, lambda n: None, arriving=arrival)
    except FFmpegError as exc:          # (killed by the cancel: what the session takes as cancelled)
        got = exc.last_line or str(exc)
    writer.join()
    assert got is None or "cancelled" in str(got), f"an encode of half a chunk gave {got!r}"
    assert time.monotonic() - started < 20


class FailingRead:
    """A path whose file fails to read (EIO) after a few reads: a feed that ends short."""

    def __init__(self, path: Path, reads: int = 3) -> None:
        self.path, self.reads = path, reads

    def open(self, mode: str):
        f = self.path.open(mode)
        real_read, left = f.read, [self.reads]

        def read(n: int = -1) -> bytes:
            left[0] -= 1
            if left[0] < 0:
                raise OSError(5, "Input/output error")
            return real_read(n)

        f.read = read                 # type: ignore[method-assign]
        return f


def test_an_encode_whose_feed_ends_short_is_no_result(piece, tmp_path):
    """ffmpeg takes an early end of its input for the end of the chunk: the encode must fail."""
    tools = ffmpeg.find_tools()
    arrival = Arrival()
    a = Assignment(0, 50, tmp_path / "d.in.mkv", tmp_path / "d.out.mkv")
    writer = upload(piece.read_bytes(), tmp_path / "d.upload.mkv", arrival, reader=FailingRead)
    with pytest.raises(FFmpegError, match="did not all reach the encoder"):
        encode(tools, SETTINGS, a, 1, lambda n: None, arriving=arrival)
    writer.join()
