"""--version on every program: its name, our version and the wire protocol's, exit 0."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ffdt.common import __version__
from ffdt.common.protocol import PROTOCOL_VERSION

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("script, prog", [("client/boss.py", "ffdt-boss"), ("client/worker.py", "ffdt-worker"),
                                          ("tracker/tracker.py", "ffdt-tracker")])
def test_version(script: str, prog: str) -> None:
    done = subprocess.run([sys.executable, str(ROOT / script), "--version"], capture_output=True, text=True,
                          timeout=60, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"{prog} {__version__} (protocol {PROTOCOL_VERSION})"
