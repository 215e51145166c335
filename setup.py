"""A thin shim: the package is described in pyproject.toml (PEP 621). This adds what it cannot
say: the version, read from common/__init__.py (the one place it is written), and a build's
scratch (build/, *.egg-info) kept outside the checkout."""
import atexit
import re
import shutil
import tempfile
from pathlib import Path

from setuptools import setup

ROOT = Path(__file__).resolve().parent
VERSION = re.search(r'__version__ = "([^"]+)"', (ROOT / "common" / "__init__.py").read_text(encoding="utf-8"))[1]
scratch = tempfile.mkdtemp(prefix="ffdt-build-")
atexit.register(shutil.rmtree, scratch, True)      # the build has read it by the time this process ends
setup(version=VERSION, options={"build": {"build_base": scratch}, "egg_info": {"egg_base": scratch}})
