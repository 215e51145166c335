"""What the boss shows on a terminal: its bar, with a line per worker under it (the chunk it is
on, how far, its fps) that the last redraw clears, and an ETA at the cluster's rate."""
from __future__ import annotations

import os
import pty
import re
import subprocess
import sys

import pytest

from tests.conftest import ROOT, env

pytestmark = pytest.mark.integration

WORKER_LINE = re.compile(r"\n  local-worker@127\.0\.0\.1:\d+ +(chunk \d{5} +\d+% +[\d.]+ fps|waiting for a chunk) +\d+ done")


def run_on_a_terminal(*args: str, timeout: float = 240) -> tuple[int, str]:
    """Run the boss with stderr on a pseudo-terminal 120 columns wide; (exit status, what the
    terminal got)."""
    master, slave = pty.openpty()
    os.set_blocking(master, True)
    proc = subprocess.Popen([sys.executable, str(ROOT / "client/boss.py"), *args], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=slave, env=env(COLUMNS="120"))
    os.close(slave)
    got = bytearray()
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:                  # EIO: the boss closed its end
            break
        if not data:
            break
        got += data
    os.close(master)
    return proc.wait(timeout=timeout), got.decode(errors="replace").replace("\r\n", "\n")


def test_the_bar_has_a_line_per_worker_that_the_end_clears(clips, tmp_path):
    code, screen = run_on_a_terminal(str(clips["mid20.mp4"]), "-o", str(tmp_path / "out.mkv"), "--local", "2",
                                     "--preset", "veryfast", "--chunk-seconds", "3")
    assert code == 0, screen[-2000:]
    lines = WORKER_LINE.findall(screen)
    assert any(line.startswith("chunk") for line in lines), screen[-3000:]
    # two workers: every redraw that shows worker lines shows both, then goes back up to the bar
    assert "\x1b[2A" in screen
    # the last redraw of the bar (100 %) clears what was under it, and nothing is drawn there after
    final = screen.rindex("100%")
    assert screen.rindex("\r\x1b[J", 0, final) > screen.rindex("\x1b[2A", 0, final)
    assert not WORKER_LINE.search(screen[final:])
    assert re.search(r"fps ETA \d+:\d\d", screen)
    assert re.search(r"all \d+ chunks in; finishing the output", screen[final:])   # what the last seconds are for
    assert "wrote " in screen[final:]
