"""Keeps common/PROTOCOL.md in step with the code: every message type and audit event is documented."""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
if str(ROOT) not in sys.path:       # tests/unit/conftest.py does this too; be safe when run alone
    sys.path.insert(0, str(ROOT))

from ffdt.common.protocol import PROTOCOL_VERSION, Msg  # noqa: E402
from ffdt.common.audit_events import PEER_EVENTS, Event  # noqa: E402

SPEC = ROOT / "common" / "PROTOCOL.md"


def spec_text() -> str:
    return SPEC.read_text(encoding="utf-8")


def test_every_message_type_is_documented() -> None:
    spec = spec_text()
    missing = [m.value for m in Msg if f"`{m.value}`" not in spec]
    assert not missing, f"PROTOCOL.md lacks message types: {missing}"


def test_every_event_name_is_documented() -> None:
    spec = spec_text()
    missing = sorted(e.value for e in PEER_EVENTS if f"`{e.value}`" not in spec)
    assert not missing, f"PROTOCOL.md lacks event names: {missing}"


def test_every_audit_event_is_in_the_readme() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    missing = sorted(e.value for e in Event if f"`{e.value}`" not in readme)
    assert not missing, f"README.md's audit table lacks: {missing}"


def test_spec_names_the_protocol_version() -> None:
    assert spec_text().startswith(f"# ffdt wire protocol, version {PROTOCOL_VERSION}\n")
