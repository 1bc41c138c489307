"""The worked example of docs/protocol.md, rebuilt from keys.example and checked
against the document, so the doc cannot drift from what the code does.

Print the example (to update the doc): /work/venv/bin/python -m tests.core.test_protocol_example
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path

from pinserver.documents import Manifest, Pin, PinSet
from pinserver.envelope import MANIFEST_TYPE, Envelope, pae, sign
from pinserver.keys import load_private_key
from pinserver.trust import TrustedSet

REPO = Path(__file__).resolve().parents[2]
EXAMPLE_KEYS = REPO / "keys.example"
PROTOCOL_MD = REPO / "docs" / "protocol.md"
EXAMPLE_TIME = datetime(2026, 12, 3, 12, 30, 0, tzinfo=UTC)


def example_manifest() -> Manifest:
    return Manifest(
        version=1,
        root_version=1,
        issued_at=datetime(2026, 12, 3, 12, 0, 0, tzinfo=UTC),
        not_before=datetime(2026, 12, 3, 12, 0, 0, tzinfo=UTC),
        expires=datetime(2027, 1, 2, 12, 0, 0, tzinfo=UTC),
        previous=None,
        poll_interval=3600,
        report_uri=None,
        pinsets=(
            PinSet(
                host="updates.example.com",
                include_subdomains=True,
                mode="enforce",
                expires=datetime(2027, 12, 1, 0, 0, 0, tzinfo=UTC),
                pins=(
                    Pin("jQJTbIh0grw0/1TkHSumWb+Fs0Ggogr621gT3PvPKG0=", "primary"),
                    Pin("C5+lpZ7tcVwmwQIMcRtPbsQtWLABXhQzejna0wHFr8M=", "backup", "offline key"),
                ),
            ),
        ),
    )


def example_envelope() -> Envelope:
    """Ed25519 signatures are deterministic: the same key and bytes give the same envelope."""
    publisher = load_private_key(EXAMPLE_KEYS / "DEMO-ONLY-publisher.key", None)
    return sign(Envelope(MANIFEST_TYPE, example_manifest().to_bytes()), publisher)


def example_sections() -> dict[str, str]:
    envelope = example_envelope()
    return {
        "payload": envelope.payload.decode(),
        "envelope": json.dumps(json.loads(envelope.to_bytes()), indent=2),
        "pae": pae(envelope.payload_type, envelope.payload).decode(),
        "payload_sha256": envelope.payload_sha256,
    }


def _doc_block(name: str) -> str:
    text = PROTOCOL_MD.read_text(encoding="utf-8")
    match = re.search(rf"<!-- example:{name} -->\n```[a-z]*\n(.*?)\n```", text, re.DOTALL)
    assert match, f"docs/protocol.md has no example:{name} block"
    return match.group(1)


def test_docs_show_the_envelope_pinserver_makes() -> None:
    for name, value in example_sections().items():
        assert _doc_block(name) == value, name
    envelope = example_envelope()
    text = PROTOCOL_MD.read_text(encoding="utf-8")
    for claim in (
        f"UTF-8; {len(envelope.payload)} bytes",
        f"no trailing newline ({len(pae(envelope.payload_type, envelope.payload))} bytes)",
        f"compact, {len(envelope.to_bytes())} bytes",
    ):
        assert claim in text, claim


def test_example_envelope_is_accepted_under_the_demo_root() -> None:
    anchor = (EXAMPLE_KEYS / "DEMO-ONLY-root-1.json").read_bytes()
    trusted = TrustedSet.from_anchor(anchor, reference_time=EXAMPLE_TIME)
    verified = trusted.update_manifest(example_envelope().to_bytes())
    assert verified.manifest == example_manifest()
    # and the exact envelope text printed in the doc, pretty-printed as it is there
    doc_envelope = _doc_block("envelope").encode()
    fresh = TrustedSet.from_anchor(anchor, reference_time=EXAMPLE_TIME)
    assert fresh.update_manifest(doc_envelope).payload_sha256 == verified.payload_sha256


if __name__ == "__main__":
    for section, body in example_sections().items():
        print(f"<!-- example:{section} -->\n```\n{body}\n```\n")
