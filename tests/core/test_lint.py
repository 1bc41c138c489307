"""SPEC section 10: every lint rule, with live chains from real trustme certificates."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import pytest

from pinserver.documents import Manifest, Pin, PinSet
from pinserver.envelope import MANIFEST_TYPE, Envelope
from pinserver.lint import Finding, has_errors, lint_envelope, lint_manifest
from tests.core.helpers import LiveChain, key, live_chain, signed
from tests.factory import NOW, fake_pin, manifest_document, pinset, root_document, root_envelope

HOST = "api.example.com"
DAY = timedelta(days=1)
HOUR = timedelta(hours=1)
RESERVE = fake_pin("reserve key held offline")
ROOT = root_document(1, [key("lint-root")], [key("lint-publisher")])  # expires NOW + 365 days

Chains = dict[str, LiveChain]


@pytest.fixture(scope="module")
def chains() -> Chains:
    return {
        "long": live_chain(HOST),  # trustme's default: a very long-lived leaf
        "short": live_chain(HOST, not_before=NOW - 10 * DAY, not_after=NOW + 80 * DAY),  # 90 d
        "other": live_chain(HOST),  # another CA entirely
    }


def pins_of(chain: str, *kinds: str) -> Callable[[Chains], list[str]]:
    return lambda c: [c[chain].pin(kind) for kind in kinds]


@dataclass(frozen=True)
class LintCase:
    name: str
    primary: Callable[[Chains], list[str]]
    expected: list[tuple[str, str | None]]
    backup: Callable[[Chains], list[str]] = lambda c: [RESERVE]
    live: str | None = "long"  # the chain HOST serves now, if any
    mode: str = "enforce"
    pinset_expires: datetime = NOW + 365 * DAY
    manifest: dict[str, object] | None = None

    def build(self, c: Chains) -> Manifest:
        ps = pinset(
            HOST,
            self.primary(c),
            backup=self.backup(c),
            mode=self.mode,
            expires=self.pinset_expires,
        )
        return manifest_document(1, pinsets=[ps], **(self.manifest or {}))  # type: ignore[arg-type]


INTERMEDIATE = pins_of("long", "intermediate")
ONE_DAY_LIFETIME = {"issued_at": NOW - 12 * HOUR, "expires": NOW + 12 * HOUR}

LINT_CASES = [
    LintCase("clean: intermediate plus a reserve key", INTERMEDIATE, []),
    LintCase("clean without a live chain", lambda c: [fake_pin("x")], [], live=None),
    LintCase(
        "expires after the root",
        INTERMEDIATE,
        [("expires_after_root", None)],
        manifest={"expires": NOW + 400 * DAY},
    ),
    LintCase("expires with the root is fine", INTERMEDIATE, [], manifest={"expires": ROOT.expires}),
    LintCase(
        "pin set matches no cert of the live chain",
        pins_of("other", "leaf", "intermediate"),
        [("pin_not_in_live_chain", HOST)],
    ),
    LintCase(
        "a mismatch is an error in report mode too",
        pins_of("other", "leaf"),
        [("pin_not_in_live_chain", HOST)],
        mode="report",
    ),
    LintCase(
        "backup pin in the live chain",
        INTERMEDIATE,
        [("backup_in_live_chain", HOST)],
        backup=pins_of("long", "leaf"),
    ),
    LintCase("pins the root CA", pins_of("long", "root"), [("pins_root_ca", HOST)]),
    LintCase(
        "short-lived leaf pinned alone",
        pins_of("short", "leaf"),
        [("short_lived_leaf_only", HOST)],
        live="short",
    ),
    LintCase("long-lived leaf pinned alone is fine", pins_of("long", "leaf"), []),
    LintCase(
        "short-lived leaf with its intermediate is fine",
        pins_of("short", "leaf", "intermediate"),
        [],
        live="short",
    ),
    LintCase(
        "every pin a CA key of the live chain",
        INTERMEDIATE,
        [("backup_in_live_chain", HOST), ("pins_root_ca", HOST), ("single_ca", HOST)],
        backup=pins_of("long", "root"),
    ),
    LintCase(
        "leaf and intermediate of one chain: no single_ca (the leaf key can move)",
        INTERMEDIATE,
        [("backup_in_live_chain", HOST)],
        backup=pins_of("long", "leaf"),
    ),
    LintCase(
        "pin set expiring in 13 days",
        INTERMEDIATE,
        [("pinset_expiring_soon", HOST)],
        pinset_expires=NOW + 13 * DAY,
    ),
    LintCase(
        "pin set expiring in exactly 14 days is fine",
        INTERMEDIATE,
        [],
        pinset_expires=NOW + 14 * DAY,
    ),
    LintCase(
        "pin set already expired",
        INTERMEDIATE,
        [("pinset_expiring_soon", HOST)],
        pinset_expires=NOW - DAY,
    ),
    LintCase(
        "manifest expiring in 13 days",
        INTERMEDIATE,
        [("manifest_expiring_soon", None)],
        manifest={"expires": NOW + 13 * DAY},
    ),
    LintCase(
        "manifest expiring in exactly 14 days is fine",
        INTERMEDIATE,
        [],
        manifest={"expires": NOW + 14 * DAY},
    ),
    LintCase(
        "poll_interval at a tenth of a one-day lifetime",
        INTERMEDIATE,
        [("manifest_expiring_soon", None)],
        manifest={**ONE_DAY_LIFETIME, "poll_interval": 8640},
    ),
    LintCase(
        "poll_interval over a tenth of a one-day lifetime",
        INTERMEDIATE,
        [("manifest_expiring_soon", None), ("poll_interval_too_long", None)],
        manifest={**ONE_DAY_LIFETIME, "poll_interval": 8641},
    ),
    LintCase(
        "errors come before warnings",
        pins_of("other", "root"),
        [
            ("expires_after_root", None),
            ("pin_not_in_live_chain", HOST),
            ("pinset_expiring_soon", HOST),
        ],
        pinset_expires=NOW + DAY,
        manifest={"expires": NOW + 400 * DAY},
    ),
]

ERROR_CODES = {"expires_after_root", "pin_not_in_live_chain", "backup_pin_required"}


@pytest.mark.parametrize("case", LINT_CASES, ids=lambda c: c.name)
def test_lint_rule(case: LintCase, chains: Chains) -> None:
    manifest = case.build(chains)
    live = {HOST: chains[case.live].describe()} if case.live else None
    findings = lint_manifest(manifest.to_bytes(), root=ROOT, reference_time=NOW, live_chains=live)
    assert [(f.code, f.host) for f in findings] == case.expected, findings
    for f in findings:
        assert f.severity == ("error" if f.code in ERROR_CODES else "warning")
        assert f.message
    assert has_errors(findings) is any(code in ERROR_CODES for code, _ in case.expected)
    # a parsed Manifest gives the same answer as its payload bytes
    assert lint_manifest(manifest, root=ROOT, reference_time=NOW, live_chains=live) == findings


def test_root_rule_needs_a_root(chains: Chains) -> None:
    manifest = manifest_document(1, expires=NOW + 400 * DAY)
    assert lint_manifest(manifest, root=None, reference_time=NOW) == []


def test_live_chain_for_a_subdomain_uses_the_covering_pinset(chains: Chains) -> None:
    parent = pinset("example.com", [chains["other"].pin("leaf")], include_subdomains=True)
    manifest = manifest_document(1, pinsets=[parent])
    findings = lint_manifest(
        manifest, root=ROOT, reference_time=NOW, live_chains={HOST: chains["long"].describe()}
    )
    assert [(f.code, f.host) for f in findings] == [("pin_not_in_live_chain", HOST)]
    assert "example.com" in findings[0].message


def test_live_chain_for_an_unpinned_host_is_a_warning(chains: Chains) -> None:
    findings = lint_manifest(
        manifest_document(1),
        root=ROOT,
        reference_time=NOW,
        live_chains={"unpinned.example.org": chains["long"].describe()},
    )
    assert [(f.severity, f.code) for f in findings] == [("warning", "live_host_not_pinned")]


# --- the backup-pin rule: first, in plain words, for every host ----------------------------


def _raw_manifest(*pinsets_json: dict[str, object], **top: object) -> bytes:
    obj = manifest_document(1, pinsets=[]).to_dict()
    obj["pinsets"] = list(pinsets_json)
    obj.update(top)
    return json.dumps(obj).encode()


def _set_json(host: str, pins: list[tuple[str, str]]) -> dict[str, object]:
    return {
        "host": host,
        "include_subdomains": False,
        "mode": "enforce",
        "expires": "2027-12-03T12:00:00Z",
        "pins": [{"sha256": fake_pin(label), "role": role} for label, role in pins],
    }


GOOD_SET = _set_json("good.example.com", [("g1", "primary"), ("g2", "backup")])
ONE_PIN = _set_json("one.example.com", [("o1", "primary")])
NO_BACKUP = _set_json("nobackup.example.com", [("n1", "primary"), ("n2", "primary")])


def test_backup_rule_is_reported_for_every_host_in_plain_words() -> None:
    findings = lint_manifest(
        _raw_manifest(ONE_PIN, GOOD_SET, NO_BACKUP), root=ROOT, reference_time=NOW
    )
    assert [(f.severity, f.code, f.host) for f in findings] == [
        ("error", "backup_pin_required", "one.example.com"),
        ("error", "backup_pin_required", "nobackup.example.com"),
    ]
    assert "1 pin(s)" in findings[0].message
    assert "backup" in findings[0].message
    assert "none is a backup" in findings[1].message
    assert has_errors(findings)


def test_backup_rule_comes_before_other_format_errors() -> None:
    findings = lint_manifest(_raw_manifest(NO_BACKUP, version=0), root=ROOT, reference_time=NOW)
    assert [(f.code, f.host) for f in findings] == [
        ("backup_pin_required", "nobackup.example.com"),
        ("invalid_document", None),
    ]
    assert "version" in findings[1].message


def test_backup_rule_on_a_manifest_object_built_without_validation() -> None:
    lonely = PinSet(HOST, False, "enforce", NOW + 365 * DAY, (Pin(fake_pin("a"), "primary"),))
    manifest = manifest_document(1, pinsets=[lonely])
    findings = lint_manifest(manifest, root=ROOT, reference_time=NOW)
    assert [(f.code, f.host) for f in findings] == [("backup_pin_required", HOST)]


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        (b"{not json", "invalid_document"),
        (b"[]", "invalid_document"),
        (_raw_manifest(GOOD_SET, poll_interval=30), "invalid_document"),
        (_raw_manifest(GOOD_SET, extra=1), "invalid_document"),
        (
            _raw_manifest(_set_json("big.example.com", [(str(i), "backup") for i in range(33)])),
            "too_many_pins",
        ),
    ],
    ids=["not JSON", "not an object", "poll_interval out of range", "unknown field", "33 pins"],
)
def test_format_errors_are_one_error_finding(payload: bytes, code: str) -> None:
    findings = lint_manifest(payload, root=ROOT, reference_time=NOW)
    assert [(f.severity, f.code) for f in findings] == [("error", code)]


def test_lint_envelope() -> None:
    payload = manifest_document(1, expires=NOW + DAY).to_bytes()
    unsigned = Envelope(MANIFEST_TYPE, payload).to_bytes()
    assert [f.code for f in lint_envelope(unsigned, root=ROOT, reference_time=NOW)] == [
        "manifest_expiring_soon"
    ]
    signed_envelope = signed(payload, [key("lint-publisher")])
    assert lint_envelope(signed_envelope, root=ROOT, reference_time=NOW) == lint_envelope(
        Envelope.from_bytes(signed_envelope), root=ROOT, reference_time=NOW
    )
    root_env = root_envelope(ROOT, [key("lint-root")])
    assert [f.code for f in lint_envelope(root_env, root=ROOT, reference_time=NOW)] == [
        "wrong_payload_type"
    ]
    assert [f.code for f in lint_envelope(b"nope", root=ROOT, reference_time=NOW)] == [
        "invalid_envelope"
    ]


def test_findings_serialise_and_need_aware_time() -> None:
    finding = Finding("warning", "single_ca", "text", HOST)
    assert finding.to_dict() == {
        "severity": "warning",
        "code": "single_ca",
        "message": "text",
        "host": HOST,
    }
    assert not has_errors([finding])
    assert not has_errors([])
    with pytest.raises(ValueError, match="timezone"):
        lint_manifest(manifest_document(1), root=None, reference_time=NOW.replace(tzinfo=None))
