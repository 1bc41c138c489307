"""pinserver.diff: what changed between manifests, and one host's history."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from pinserver.diff import diff_manifests, diff_pinsets, host_history
from pinserver.documents import Pin
from tests.factory import NOW, fake_pin, manifest_document, pinset

A, B, C, D = (fake_pin(x) for x in "abcd")


def test_first_version_adds_every_host() -> None:
    new = manifest_document(1, pinsets=[pinset("a.example"), pinset("b.example")])
    diff = diff_manifests(None, new)
    assert [p.host for p in diff.hosts_added] == ["a.example", "b.example"]
    assert diff.old_version is None
    assert not diff.hosts_removed
    assert not diff.hosts_changed
    assert not diff.is_empty


def test_same_pins_is_empty_but_manifest_fields_are_reported() -> None:
    old = manifest_document(1, pinsets=[pinset("a.example", [A], backup=[B])])
    new = manifest_document(
        2,
        previous="0" * 64,
        pinsets=[pinset("a.example", [A], backup=[B])],
        expires=NOW + timedelta(days=60),
        poll_interval=600,
    )
    diff = diff_manifests(old, new)
    assert diff.is_empty
    assert {(f.name, f.old, f.new) for f in diff.fields_changed} == {
        ("expires", "2027-01-02T12:00:00Z", "2027-02-01T12:00:00Z"),
        ("poll_interval", "3600", "600"),
    }


def test_hosts_added_removed_and_pins_added_removed() -> None:
    old = manifest_document(
        1, pinsets=[pinset("keep.example", [A], backup=[B]), pinset("gone.example")]
    )
    new = manifest_document(
        2,
        previous="0" * 64,
        pinsets=[pinset("keep.example", [C], backup=[B]), pinset("new.example")],
    )
    diff = diff_manifests(old, new)
    assert [p.host for p in diff.hosts_added] == ["new.example"]
    assert [p.host for p in diff.hosts_removed] == ["gone.example"]
    (change,) = diff.hosts_changed
    assert change.host == "keep.example"
    assert [p.sha256 for p in change.pins_added] == [C]
    assert [p.sha256 for p in change.pins_removed] == [A]
    assert change.mode is None
    assert change.expires is None
    assert diff.for_host("keep.example") is change
    assert diff.for_host("new.example") is None


def test_mode_expiry_subdomains_and_pin_role_or_note_changes() -> None:
    old = pinset("a.example", [A], backup=[B])
    new = replace(
        old,
        mode="report",
        include_subdomains=True,
        expires=old.expires + timedelta(days=1),
        pins=(Pin(A, "primary", "moved to HSM"), Pin(B, "primary"), Pin(C, "backup")),
    )
    change = diff_pinsets(old, new)
    assert change.mode == ("enforce", "report")
    assert change.include_subdomains == (False, True)
    assert change.expires == (old.expires, new.expires)
    assert [p.sha256 for p in change.pins_added] == [C]
    assert change.pins_removed == ()
    assert [(c.old, c.new) for c in change.pins_changed] == [
        (Pin(A, "primary"), Pin(A, "primary", "moved to HSM")),
        (Pin(B, "backup"), Pin(B, "primary")),
    ]
    assert not change.is_empty


def test_pin_order_alone_is_not_a_change() -> None:
    old = pinset("a.example", [A, C], backup=[B])
    new = replace(old, pins=tuple(reversed(old.pins)))
    assert diff_pinsets(old, new).is_empty


def test_host_history_records_added_changed_removed_and_readded() -> None:
    versions = [
        manifest_document(1, pinsets=[pinset("a.example", [A], backup=[B])]),
        manifest_document(2, previous="0" * 64, pinsets=[pinset("a.example", [A], backup=[B])]),
        manifest_document(3, previous="0" * 64, pinsets=[pinset("a.example", [C], backup=[B])]),
        manifest_document(4, previous="0" * 64, pinsets=[pinset("other.example")]),
        manifest_document(6, previous="0" * 64, pinsets=[pinset("a.example", [D], backup=[B])]),
    ]
    events = host_history(versions, "a.example")
    assert [(e.version, e.kind) for e in events] == [
        (1, "added"),
        (3, "changed"),
        (4, "removed"),
        (6, "added"),
    ]
    assert events[1].change is not None
    assert [p.sha256 for p in events[1].change.pins_added] == [C]
    # a removal carries the last pin set that was listed
    assert {p.sha256 for p in events[2].pinset.pins} == {C, B}
    assert host_history(versions, "never.example") == []


def test_host_history_needs_ascending_versions() -> None:
    one = manifest_document(1)
    with pytest.raises(ValueError, match="ascending"):
        host_history([one, one], "updates.example.com")
