"""Code shared by the tracker, the boss and the workers: wire protocol, ffmpeg, transfers."""

__version__ = "0.1.0"   # setup.py reads it from here
