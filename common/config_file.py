"""Defaults from a TOML file, so a farm machine's command line stays short: the tracker's
address, the user, the password file, the tracker's fingerprint... (never a password itself).

The file is FFDT_CONFIG_DIR/config.toml (default ~/.config/ffdt/config.toml), or --config FILE.
Top-level keys apply to every program that has the option; a [boss], [worker] or [serve] table
to that program only ([serve]: `ffdt-tracker serve`; not [tracker], which TOML cannot hold beside
the top-level `tracker` address). Keys are the long option names, with '-' or '_'. The command line
wins over the file. An unknown key, a wrong type or a password is a one-line error.

    tracker = "tracker.example:9000"
    tracker-fingerprint = "sha256:3f9c..."
    password-file = "/etc/ffdt/password"

    [worker]
    user = "farm"
    slots = 2
"""
from __future__ import annotations

import argparse
import tomllib
from pathlib import Path
from typing import Any

from ffdt.common import tls
from ffdt.common.errors import UsageError

SECTIONS = ("boss", "worker", "serve")
# the options more than one program has: the top level may set these
SHARED = {"tracker", "user", "password_file", "tracker_fingerprint", "tls_ca", "tls", "plain", "ffmpeg",
          "use_global", "verbose", "quiet"}


def default_path() -> Path:
    return tls.config_dir() / "config.toml"      # beside known_trackers


def config_path(argv: list[str]) -> tuple[Path, bool]:
    """The file to read, and whether the user named it (then it must exist)."""
    for i, arg in enumerate(argv):
        if arg == "--config" and i + 1 < len(argv):
            return Path(argv[i + 1]), True
        if arg.startswith("--config="):
            return Path(arg.split("=", 1)[1]), True
    return default_path(), False


def load(path: Path, required: bool) -> dict[str, Any]:
    if not path.exists():
        if required:
            raise UsageError(f"{path}: no such config file")
        return {}
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read {path}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{path}: not valid TOML ({exc})") from None


def apply(parser: argparse.ArgumentParser, section: str, argv: list[str]) -> None:
    """Set `parser`'s defaults from the config file; an option the file gives is no longer required."""
    path, named = config_path(argv)
    data = load(path, named)
    values = {_dest(k): v for k, v in data.items() if not isinstance(v, dict)}
    for key in values:
        if key not in SHARED:
            raise UsageError(f"{path}: {_hint(key)} at the top level (only shared options: "
                             f"{', '.join(sorted(SHARED))}; put the rest under [{section}])")
    for name, table in data.items():
        if isinstance(table, dict) and name not in SECTIONS:
            raise UsageError(f"{path}: unknown table [{name}] (expected {', '.join(f'[{s}]' for s in SECTIONS)})")
    own = data.get(section, {})
    actions = {a.dest: a for a in parser._actions if a.option_strings and a.dest not in ("help", "version")}
    chosen = {dest: value for dest, value in values.items() if dest in actions}
    for key, value in own.items():
        if _dest(key) not in actions:
            raise UsageError(f"{path}: [{section}] {_hint(_dest(key))}")
        chosen[_dest(key)] = value
    for dest, value in chosen.items():
        action = actions[dest]
        chosen[dest] = _typed(path, action, value)
        action.required = False
    parser.set_defaults(**chosen)


def _dest(key: str) -> str:
    return key.replace("-", "_")


def _hint(key: str) -> str:
    if "password" in key and key != "password_file":
        return f"{key}: no passwords in the config file (password-file names a file that holds one)"
    return f"unknown setting {key.replace('_', '-')!r}"


def _typed(path: Path, action: argparse.Action, value: Any) -> Any:
    name = action.option_strings[-1].lstrip("-")
    if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
        if not isinstance(value, bool):
            raise UsageError(f"{path}: {name} must be true or false")
        return value
    if isinstance(value, (dict, list, bool)):
        raise UsageError(f"{path}: {name} must be a {'number' if action.type in (int, float) else 'string'}")
    kind = action.type or str
    if kind is int and isinstance(value, float):
        raise UsageError(f"{path}: {name} must be a whole number")
    try:
        typed = kind(value) if kind in (int, float, str) or isinstance(value, str) else kind(str(value))
    except (TypeError, ValueError, argparse.ArgumentTypeError) as exc:
        raise UsageError(f"{path}: {name}: {exc}") from None
    if action.choices is not None and typed not in action.choices:
        raise UsageError(f"{path}: {name} must be one of {', '.join(map(str, action.choices))}")
    return typed
