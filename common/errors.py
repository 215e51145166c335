"""One exception hierarchy. Each CLI's main() turns these into one line on stderr and exit 1."""
from __future__ import annotations


class TranscoderError(Exception):
    """An expected failure, explained to the user in one line."""


class UsageError(TranscoderError):
    """Bad command-line input or input file."""


class ProtocolError(TranscoderError):
    """The peer sent something that breaks the wire protocol."""


class ConnectionClosed(TranscoderError):
    """The peer closed the connection between two frames."""


class PeerUnreachable(TranscoderError):
    """Could not connect to a peer before the deadline."""


class AuthError(TranscoderError):
    """Login or ticket check failed."""


class RequestRejected(TranscoderError):
    """A well-formed request the receiver refuses; answered with an `error` message."""


class TransferError(TranscoderError):
    """A file transfer ended early or its checksum did not match."""


class FFmpegError(TranscoderError):
    """ffmpeg or ffprobe failed; carries the command and the useful tail of stderr."""

    def __init__(self, cmd: list[str], returncode: int | None, detail: str) -> None:
        status = "timeout" if returncode is None else f"exit {returncode}"
        self.cmd, self.returncode, self.detail = cmd, returncode, detail
        super().__init__(f"{cmd[0].rsplit('/', 1)[-1]} failed ({status}): {self.last_line or 'no message'}")

    @property
    def last_line(self) -> str:
        """ffmpeg's own last line, which usually names the cause."""
        lines = self.detail.strip().splitlines()
        return lines[-1] if lines else ""


class ChunkError(TranscoderError):
    """A chunk's result failed verification."""
