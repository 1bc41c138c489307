"""What changed between two pin manifests, and one host's pin history across versions.

Pure: manifests in, typed differences out. The auditor view renders these, and the
``history --diff A B`` command prints them; neither decides anything about trust, so
nothing here verifies a signature: callers pass manifests they have already checked
(or say plainly that they could not).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from pinserver.documents import Manifest, Mode, Pin, PinSet, format_timestamp

HostEventKind = Literal["added", "changed", "removed"]


@dataclass(frozen=True)
class FieldChange:
    """A manifest-level field whose value differs, both sides as display text."""

    name: str
    old: str
    new: str


@dataclass(frozen=True)
class PinChange:
    """The same pin hash in both versions with another role or note."""

    old: Pin
    new: Pin


@dataclass(frozen=True)
class PinSetChange:
    """How one host's pin set differs between two versions that both list it."""

    host: str
    old: PinSet
    new: PinSet
    pins_added: tuple[Pin, ...]
    pins_removed: tuple[Pin, ...]
    pins_changed: tuple[PinChange, ...]
    mode: tuple[Mode, Mode] | None
    expires: tuple[datetime, datetime] | None
    include_subdomains: tuple[bool, bool] | None

    @property
    def is_empty(self) -> bool:
        return not (
            self.pins_added
            or self.pins_removed
            or self.pins_changed
            or self.mode
            or self.expires
            or self.include_subdomains
        )


@dataclass(frozen=True)
class ManifestDiff:
    """Everything that differs from ``old_version`` (None: nothing before) to ``new_version``.

    Hosts are listed in the order the newer (for removals: the older) manifest lists them.
    """

    old_version: int | None
    new_version: int
    hosts_added: tuple[PinSet, ...]
    hosts_removed: tuple[PinSet, ...]
    hosts_changed: tuple[PinSetChange, ...]
    fields_changed: tuple[FieldChange, ...]

    @property
    def is_empty(self) -> bool:
        """True when the pins clients enforce are unchanged (manifest fields aside)."""
        return not (self.hosts_added or self.hosts_removed or self.hosts_changed)

    def for_host(self, host: str) -> PinSetChange | None:
        return next((c for c in self.hosts_changed if c.host == host), None)


def diff_pinsets(old: PinSet, new: PinSet) -> PinSetChange:
    """Pins are matched by hash: a hash in one set only is added or removed; a hash in
    both with another role or note is a changed pin. Order within a set is not a change."""
    old_pins = {p.sha256: p for p in old.pins}
    new_pins = {p.sha256: p for p in new.pins}
    return PinSetChange(
        host=new.host,
        old=old,
        new=new,
        pins_added=tuple(p for p in new.pins if p.sha256 not in old_pins),
        pins_removed=tuple(p for p in old.pins if p.sha256 not in new_pins),
        pins_changed=tuple(
            PinChange(old=old_pins[p.sha256], new=p)
            for p in new.pins
            if p.sha256 in old_pins and old_pins[p.sha256] != p
        ),
        mode=(old.mode, new.mode) if old.mode != new.mode else None,
        expires=(old.expires, new.expires) if old.expires != new.expires else None,
        include_subdomains=(
            (old.include_subdomains, new.include_subdomains)
            if old.include_subdomains != new.include_subdomains
            else None
        ),
    )


def _text(value: object) -> str:
    if value is None:
        return "none"
    if isinstance(value, datetime):
        return format_timestamp(value)
    return str(value)


_COMPARED_FIELDS = ("root_version", "not_before", "expires", "poll_interval", "report_uri")


def diff_manifests(old: Manifest | None, new: Manifest) -> ManifestDiff:
    """The difference from ``old`` to ``new``; with ``old`` None every host is added."""
    if old is None:
        return ManifestDiff(
            old_version=None,
            new_version=new.version,
            hosts_added=new.pinsets,
            hosts_removed=(),
            hosts_changed=(),
            fields_changed=(),
        )
    changes = []
    added = []
    for pinset in new.pinsets:
        before = old.pinset(pinset.host)
        if before is None:
            added.append(pinset)
            continue
        change = diff_pinsets(before, pinset)
        if not change.is_empty:
            changes.append(change)
    fields = tuple(
        FieldChange(name, _text(getattr(old, name)), _text(getattr(new, name)))
        for name in _COMPARED_FIELDS
        if getattr(old, name) != getattr(new, name)
    )
    return ManifestDiff(
        old_version=old.version,
        new_version=new.version,
        hosts_added=tuple(added),
        hosts_removed=tuple(p for p in old.pinsets if new.pinset(p.host) is None),
        hosts_changed=tuple(changes),
        fields_changed=fields,
    )


@dataclass(frozen=True)
class HostEvent:
    """A version at which one host's pin set appeared, changed or was removed.

    ``pinset`` is the set as of ``version`` (the last one listed, for a removal);
    ``change`` is set for ``changed`` events only.
    """

    version: int
    kind: HostEventKind
    pinset: PinSet
    change: PinSetChange | None = None


def host_history(manifests: Iterable[Manifest], host: str) -> list[HostEvent]:
    """The versions at which ``host``'s pin set appeared, changed or disappeared, oldest
    first. ``manifests`` must be in ascending version order; a missing version (one the
    caller could not read) is skipped, and the next one is compared with the last read."""
    events: list[HostEvent] = []
    current: PinSet | None = None
    last_version: int | None = None
    for manifest in manifests:
        if last_version is not None and manifest.version <= last_version:
            raise ValueError("manifests must be in ascending version order")
        last_version = manifest.version
        pinset = manifest.pinset(host)
        if pinset is None:
            if current is not None:
                events.append(HostEvent(manifest.version, "removed", current))
        elif current is None:
            events.append(HostEvent(manifest.version, "added", pinset))
        else:
            change = diff_pinsets(current, pinset)
            if not change.is_empty:
                events.append(HostEvent(manifest.version, "changed", pinset, change))
        current = pinset
    return events
