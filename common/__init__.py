"""Code shared by the tracker, the boss and the workers: wire protocol, ffmpeg, transfers."""
