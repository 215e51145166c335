"""Installs the tracker, boss and worker with console scripts ffdt-tracker, ffdt-boss, ffdt-worker."""
import re
from pathlib import Path

from setuptools import setup

ROOT = Path(__file__).parent
VERSION = re.search(r'__version__ = "([^"]+)"', (ROOT / "common" / "__init__.py").read_text(encoding="utf-8"))[1]

setup(
    name="ffmpeg-distributed-transcoder",
    version=VERSION,
    description="Transcode one video on many machines: a tracker, a boss and workers over TCP",
    long_description=(ROOT / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.9",
    packages=["tracker", "client", "common"],
    package_data={"common": ["PROTOCOL.md"]},
    install_requires=[line.strip() for line in (ROOT / "requirements.txt").read_text().splitlines()
                      if line.strip() and not line.startswith("#")],
    entry_points={"console_scripts": [
        "ffdt-tracker = tracker.tracker:main",
        "ffdt-boss = client.boss:main",
        "ffdt-worker = client.worker:main",
    ]},
    license="MIT",
)
