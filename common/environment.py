"""Run with any python3 from a checkout: find the project's virtual environment, or say in one
line what to run. Standard library only: this runs before anything else is importable."""
from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NEEDED = ("progressbar", "scramp", "cryptography")      # requirements.txt, by import name
VENV_PYTHON = ROOT / ".venv" / "bin" / "python3"


def ensure(prog: str) -> None:
    """Return if the packages import here; else re-run this program with the checkout's .venv
    Python when there is one (the same arguments); else exit 2 with one line."""
    missing = [name for name in NEEDED if importlib.util.find_spec(name) is None]
    if not missing:
        return
    inside = Path(sys.prefix).resolve() == VENV_PYTHON.parent.parent.resolve()
    if VENV_PYTHON.exists() and not inside and not os.environ.get("FFDT_REEXEC"):
        os.environ["FFDT_REEXEC"] = "1"        # once: a broken .venv must not loop
        os.execv(str(VENV_PYTHON), [str(VENV_PYTHON), *sys.argv])
    sys.stderr.write(f"{prog}: error: this Python ({sys.executable}) lacks {', '.join(missing)}: run "
                     f"{ROOT / 'scripts' / 'setup-env'} once (it makes {ROOT / '.venv'}, which these programs then use)\n")
    raise SystemExit(2)
