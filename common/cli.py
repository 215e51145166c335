"""What the three command lines share: logging, passwords, the error-to-exit-code mapping."""
from __future__ import annotations

import argparse
import difflib
import getpass
import logging
import os
import sys
from pathlib import Path
from typing import Callable

from ffdt.common import __version__, config_file, tls
from ffdt.common.protocol import PROTOCOL_VERSION
from ffdt.common.errors import TranscoderError, UsageError

PASSWORD_HELP = ("password: the FFDT_PASSWORD environment variable, else --password-file, else a prompt "
                 "(never on the command line)")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """--help that shows a default only where it says something: not for options that are off
    or unset (their help says what happens then), nor twice when the help names it already."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or not action.option_strings or action.default in (None, False, argparse.SUPPRESS):
            return text
        return super()._get_help_string(action) or text


class ArgumentParser(argparse.ArgumentParser):
    """A usage error in two lines (what is wrong, where to look), not the whole usage."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}{self._suggestion(message)}\n"
                     f"Try '{self.prog} --help' for the options.\n")

    def _suggestion(self, message: str) -> str:
        """' (did you mean --crf?)' for a mistyped option."""
        if not message.startswith("unrecognized arguments:"):
            return ""
        known = [o for a in self._actions for o in a.option_strings if o.startswith("--")]
        for word in message.split(":", 1)[1].split():
            if word.startswith("--"):
                close = difflib.get_close_matches(word.split("=", 1)[0], known, n=1, cutoff=0.7)
                if close:
                    return f" (did you mean {close[0]}?)"
        return ""

    def parse_with_config(self, argv: list[str] | None, section: str,
                          command: argparse.ArgumentParser | None = None) -> argparse.Namespace:
        """parse_args() with the config file's defaults (common/config_file.py) under it; those
        of `command`'s options, if given (a subcommand's parser), else this parser's."""
        argv = sys.argv[1:] if argv is None else argv
        try:
            config_file.apply(command or self, section, argv)
        except UsageError as exc:
            self.exit(2, f"{self.prog}: error: {exc}\n")
        return self.parse_args(argv)


def add_config_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, metavar="FILE",
                   help=f"defaults from this TOML file instead of {config_file.default_path()} "
                        "(the command line wins; see README, Config file)")


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is now, so progress bars that wrap stderr keep logs above them."""

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value: object) -> None:
        pass


def setup_logging(prog: str, verbose: bool = False, quiet: bool = False) -> None:
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    handler = _StderrHandler()
    # -v: each line with the milliseconds since the start, to read a run's timeline from its log
    handler.setFormatter(logging.Formatter(f"{prog}: " + ("%(relativeCreated)6.0fms " if verbose else "") +
                                           "%(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def add_common_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging (ffmpeg commands, messages)")
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__} (protocol {PROTOCOL_VERSION})")


def add_ffmpeg_options(p: argparse.ArgumentParser, quiet_help: str) -> None:
    p.add_argument("--ffmpeg", help="ffmpeg binary to use (ffprobe beside it)")
    p.add_argument("--use-global", "-use_global", action="store_true",
                   help="use ffmpeg from PATH even if client/ffmpeg/ has a build")
    p.add_argument("--quiet", action="store_true", help=quiet_help)


def add_tls_client_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tracker-fingerprint", metavar="FP",
                   help="the tracker's key, as it prints it at start (sha256:...); without it the key is "
                   "trusted on first use and remembered in ~/.config/ffdt/known_trackers")
    p.add_argument("--tls-ca", type=Path, metavar="FILE",
                   help="verify the tracker's certificate against these CA certificates (PEM) instead of "
                   "pinning its key")
    p.add_argument("--tls", action="store_true",
                   help="verify the tracker's certificate against the system's CAs instead of pinning its key")
    p.add_argument("--plain", action="store_true",
                   help="no TLS: plain TCP to the tracker (and for a boss, to workers); only on a network you trust")


def client_tls(args: argparse.Namespace) -> tls.ClientTls:
    """The TLS a client uses toward the tracker, from add_tls_client_options()'s options."""
    if args.plain:
        if args.tls or args.tls_ca or args.tracker_fingerprint:
            raise UsageError("--plain goes with no TLS option")
        return tls.ClientTls(None)
    if args.tls or args.tls_ca:
        return tls.ClientTls(tls.client_context(args.tls_ca))
    pin = (args.tracker_fingerprint or "").strip().lower() or None
    if pin is not None and not tls.FINGERPRINT.match(pin):
        raise UsageError("--tracker-fingerprint: expected sha256: and 64 hex digits, as the tracker prints it")
    return tls.ClientTls(tls.pinning_context(), pin, None if pin else tls.KnownTrackers())


def add_password_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--password-file", type=Path, metavar="FILE",
                   help="read the password from the first line of FILE")


def read_password(password_file: Path | None, *, confirm: bool = False) -> str:
    """FFDT_PASSWORD, else --password-file, else an interactive prompt; never argv."""
    password = os.environ.get("FFDT_PASSWORD")
    if password is None and password_file is not None:
        try:
            password = password_file.read_text(encoding="utf-8").splitlines()[0]
        except (OSError, IndexError, UnicodeDecodeError) as exc:
            raise UsageError(f"cannot read a password from {password_file}: {exc}") from None
    if password is None:
        if not sys.stdin.isatty():
            raise UsageError("no password: set FFDT_PASSWORD or use --password-file")
        password = getpass.getpass("password: ")
        if confirm and getpass.getpass("again: ") != password:
            raise UsageError("the passwords do not match")
    if not password:
        raise UsageError("empty password")
    return password


def run_main(prog: str, body: Callable[[], int]) -> int:
    """The one broad handler of a program: expected errors are one line and exit 1, Ctrl-C 130."""
    try:
        return body()
    except BrokenPipeError:
        # the reader went away (`tracker.py logs | head`): what it wanted it has; quiet exit, and
        # stdout pointed at /dev/null so the interpreter's final flush does not complain either
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except TranscoderError as exc:
        logging.getLogger(prog).error("error: %s", exc)
        return 1
    except KeyboardInterrupt:
        logging.getLogger(prog).warning("interrupted")
        return 130


