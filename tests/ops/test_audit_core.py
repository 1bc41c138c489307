"""The pure halves of ``history`` and ``monitor``: verify_history and evaluate.

Table-driven: each row takes an honest history (two roots, the publisher rotated in
between, five manifests) and breaks it one way; the report must name the first bad
version and the kind of break, and keep everything before it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

import pytest

from pinserver.audit import verify_history
from pinserver.errors import SignatureError
from pinserver.keys import PrivateKey
from pinserver.monitoring import Thresholds, Unreachable, evaluate
from pinserver.pins import ChainCert, describe_chain
from pinserver.trust import verify_anchor_root
from tests.factory import (
    NOW,
    Deployment,
    fake_pin,
    manifest_document,
    manifest_envelope,
    payload_hash,
    pinset,
    root_document,
    root_envelope,
)
from tests.support.tls_server import Pki


def _history() -> Deployment:
    d = Deployment()
    d.publish(pinsets=[pinset("a.example")])
    d.publish(pinsets=[pinset("a.example"), pinset("b.example")])
    d.rotate_publisher()
    d.publish(pinsets=[pinset("b.example")])
    d.publish(pinsets=[pinset("b.example", [fake_pin("b-new")])])
    d.publish(pinsets=[pinset("b.example", [fake_pin("b-new")])])
    return d


def test_an_honest_history_verifies_and_lists_what_changed() -> None:
    d = _history()
    report = verify_history(d.roots[0], d.roots, d.manifests)
    assert report.ok
    assert report.first_break is None
    assert [r.version for r in report.roots] == [1, 2]
    assert [e.version for e in report.entries] == [1, 2, 3, 4, 5]
    assert [e.root_version for e in report.entries] == [1, 1, 2, 2, 2]
    assert [e.hosts_changed for e in report.entries] == [
        ("a.example",),
        ("b.example",),
        ("a.example",),
        ("b.example",),
        (),
    ]
    assert report.entries[2].signed_by == {d.publisher_keys[0].keyid}
    change = report.entries[3].diff.for_host("b.example")
    assert change is not None
    assert [p.sha256 for p in change.pins_added] == [fake_pin("b-new")]


def _replace(d: Deployment, version: int, **kwargs: object) -> None:
    """Re-sign manifest ``version`` with other content (by the right publisher)."""
    previous = payload_hash(d.manifests[version - 2]) if version > 1 else None
    fields: dict[str, object] = {"previous": previous, "root_version": 2 if version >= 3 else 1}
    fields.update(kwargs)
    doc = manifest_document(int(fields.pop("version", version)), **fields)  # type: ignore[arg-type]
    d.manifests[version - 1] = manifest_envelope(doc, d.publisher_keys)


@dataclass(frozen=True)
class Break:
    name: str
    damage: Callable[[Deployment], None]
    kind: str
    version: int
    code: str


BREAKS = [
    Break(
        "gap: version 4 missing", lambda d: d.manifests.pop(3), "manifest", 4, "version_mismatch"
    ),
    Break(
        "fork: 4 does not chain to 3",
        lambda d: _replace(d, 4, previous="0" * 64),
        "manifest",
        4,
        "fork",
    ),
    Break(
        "signed by a key of no root",
        lambda d: d.manifests.__setitem__(
            3,
            manifest_envelope(
                manifest_document(4, previous=payload_hash(d.manifests[2]), root_version=2),
                [PrivateKey.generate()],
            ),
        ),
        "manifest",
        4,
        "signature_threshold",
    ),
    Break(
        "the old publisher after its rotation",
        lambda d: d.manifests.__setitem__(
            3,
            manifest_envelope(
                manifest_document(4, previous=payload_hash(d.manifests[2]), root_version=1),
                [PrivateKey.generate()],
            ),
        ),
        "manifest",
        4,
        "root_version_backwards",
    ),
    Break(
        "version listed twice",
        lambda d: d.manifests.insert(2, d.manifests[1]),
        "manifest",
        3,
        "version_mismatch",
    ),
    Break(
        "a root 2 not signed by root 1's keys",
        lambda d: d.roots.__setitem__(1, Deployment().rotate_publisher()),
        "root",
        2,
        "signature_threshold",
    ),
    Break(
        "root 1 substituted",
        lambda d: d.roots.__setitem__(0, Deployment().roots[0]),
        "root",
        1,
        "root_substituted",
    ),
    Break("no roots served", lambda d: d.roots.clear(), "root", 1, "root_missing"),
]


@pytest.mark.parametrize("row", BREAKS, ids=[b.name for b in BREAKS])
def test_the_first_break_is_named(row: Break) -> None:
    d = _history()
    anchor = d.roots[0]
    row.damage(d)
    report = verify_history(anchor, d.roots, d.manifests)
    assert not report.ok
    first = report.first_break
    assert first is not None
    assert (first.kind, first.version, first.code) == (row.kind, row.version, row.code)
    if row.kind == "manifest":  # everything before the break is still verified
        assert [e.version for e in report.entries] == list(range(1, row.version))


def test_a_later_anchor_cannot_vouch_for_manifests_before_it() -> None:
    d = _history()
    report = verify_history(d.roots[1], d.roots, d.manifests)
    assert report.first_break is not None
    assert (report.first_break.version, report.first_break.code) == (1, "before_anchor")
    assert "audit from root 1" in report.first_break.message


def test_a_bad_anchor_is_the_auditors_error_not_a_break() -> None:
    d = _history()
    unsigned = root_envelope(root_document(1, d.root_keys, d.publisher_keys), [])
    with pytest.raises(SignatureError, match="threshold"):
        verify_history(unsigned, d.roots, d.manifests)


# --- monitoring -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> list[ChainCert]:
    pki = Pki.create(tmp_path_factory.mktemp("pki"))
    return describe_chain([blob.bytes() for blob in pki.leaf.cert_chain_pems])


def test_evaluate_thresholds_and_exit_codes(chain: list[ChainCert]) -> None:
    d = Deployment()
    intermediate = chain[1].spki_sha256
    good = pinset("localhost", [intermediate], expires=NOW + timedelta(days=200))
    root = verify_anchor_root(d.roots[0]).root
    manifest = manifest_document(1, pinsets=[good], expires=NOW + timedelta(days=30))
    report = evaluate(manifest, root, {"localhost": chain}, NOW)
    assert report.exit_code == 0, [c.message for c in report.checks if c.status != "ok"]
    kinds = [c.kind for c in report.checks]
    assert kinds[:3] == ["root", "manifest", "pinset"]
    assert "live" in kinds
    assert kinds.count("certificate") == len(chain)

    # The manifest 4 days from expiry: a warning (renew should have run); 1 day: failure.
    assert (
        evaluate(
            manifest, root, {"localhost": chain}, manifest.expires - timedelta(days=4)
        ).exit_code
        == 1
    )
    late = evaluate(manifest, root, {"localhost": chain}, manifest.expires - timedelta(days=1))
    assert late.exit_code == 2
    assert "pinserver renew" in next(c.message for c in late.checks if c.kind == "manifest")

    # A certificate 20 days from expiry warns, 10 days fails (defaults 30 / 15).
    leaf_end = chain[0].not_after
    long_manifest = manifest_document(1, pinsets=[good], expires=leaf_end + timedelta(days=60))
    warn = evaluate(long_manifest, root, {"localhost": chain}, leaf_end - timedelta(days=20))
    assert [c.status for c in warn.checks if c.subject.startswith("leaf")] == ["warning"]
    fail = evaluate(long_manifest, root, {"localhost": chain}, leaf_end - timedelta(days=10))
    assert [c.status for c in fail.checks if c.subject.startswith("leaf")] == ["failure"]
    custom = Thresholds(warn=timedelta(days=5), fail=timedelta(days=2))
    assert [
        c.status
        for c in evaluate(
            long_manifest, root, {"localhost": chain}, leaf_end - timedelta(days=20), custom
        ).checks
        if c.subject.startswith("leaf")
    ] == ["ok"]


def test_evaluate_live_mismatch_and_unreachable_hosts(chain: list[ChainCert]) -> None:
    root = verify_anchor_root(Deployment().roots[0]).root
    enforce = pinset("localhost", [fake_pin("other")])
    report_only = pinset("report.example", [fake_pin("other")], mode="report")
    gone = pinset("gone.example")
    manifest = manifest_document(1, pinsets=[enforce, report_only, gone])
    report = evaluate(
        manifest,
        root,
        {"localhost": chain, "report.example": chain, "gone.example": Unreachable("refused")},
        NOW,
    )
    live = {c.host: c for c in report.checks if c.kind == "live"}
    assert live["localhost"].status == "failure"
    assert "refused now" in live["localhost"].message
    assert live["report.example"].status == "warning"
    assert live["gone.example"].status == "failure"
    assert "refused" in live["gone.example"].message
    assert report.exit_code == 2
    with pytest.raises(ValueError, match="failure threshold"):
        Thresholds(warn=timedelta(days=1), fail=timedelta(days=2))
