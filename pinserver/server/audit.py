"""The auditor view: read-only HTML pages over the stored root chain and manifest history.

``/audit`` is the timeline (manifests and root rotations, newest first, paged),
``/audit/manifests/N`` one version with its pin sets, its verification status and the
diff from N-1, ``/audit/hosts/HOST`` one host's pin history (paged too: each page reads
and verifies a fixed number of versions, whatever the size of the store).

Nothing here decides trust by itself: every status comes from the pure core
(``trust.verify_anchor_root`` / ``verify_next_root`` along the stored root chain from
root 1, ``verify_manifest_signatures`` under the root a manifest was published under,
``verify_history_entry`` for the hash-chain link), and every difference from
``pinserver.diff``. A payload whose signatures do not verify is never parsed: the page
says why and links to the raw envelope. A damaged row is shown as damaged, never a 500.

The pages are server-rendered (Jinja autoescaping on: host names and notes are
untrusted), use one stylesheet and no script, and send a strict Content-Security-Policy.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from flask import Blueprint, Flask, Response, current_app, render_template, request

from pinserver.diff import HostEvent, ManifestDiff, diff_manifests, host_history
from pinserver.documents import Manifest, PinSet, Root, format_timestamp, validate_host
from pinserver.envelope import Envelope
from pinserver.errors import PinserverError
from pinserver.store.base import Store, StoredManifest, StoredRoot
from pinserver.trust import (
    ManifestFloor,
    VerifiedManifest,
    VerifiedRoot,
    is_publisher_changed,
    verify_anchor_root,
    verify_history_entry,
    verify_manifest_signatures,
    verify_next_root,
)

logger = logging.getLogger(__name__)

PAGE_SIZE = 20
# Versions one /audit/hosts/HOST page examines (each one is read and verified).
HOST_PAGE_VERSIONS = 200
EXPIRY_WARNING = timedelta(days=14)
KEY_NAMES_SETTING = "PINSERVER_KEY_NAMES"
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; style-src 'self'; img-src 'self'; base-uri 'none';"
    " form-action 'none'; frame-ancestors 'none'"
)
_VERSION_RE = re.compile(r"\A[1-9][0-9]{0,15}\Z")
# What reading or decoding one damaged row can raise: shown on the page, never a 500.
_ROW_ERRORS = (PinserverError, ValueError, TypeError, KeyError)

bp = Blueprint(
    "audit",
    __name__,
    url_prefix="/audit",
    template_folder="templates",
    static_folder="static",
    static_url_path="/static",
)


# --- settings the app provides ----------------------------------------------------------


def _store() -> Store:
    store: Store = current_app.extensions["pinserver"].store
    return store


def _now() -> datetime:
    """The app's clock (tests pass one in as ``PINSERVER_CLOCK``); UTC wall time otherwise."""
    clock: Callable[[], datetime] | None = current_app.config.get("PINSERVER_CLOCK")
    return clock() if clock is not None else datetime.now(UTC)


@dataclass(frozen=True)
class KeyNames:
    """Human names for keyids, from the JSON file ``PINSERVER_KEY_NAMES`` names."""

    names: Mapping[str, str]
    problem: str | None = None


def load_key_names(path: str | None) -> KeyNames:
    """``{"<keyid>": "name", ...}``; a file that cannot be used is reported, not fatal."""
    if not path:
        return KeyNames({})
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        return KeyNames({}, f"cannot read key names from {path}: {e}")
    if not isinstance(raw, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in raw.items()
    ):
        return KeyNames({}, f"{path} must be a JSON object mapping keyids to names")
    return KeyNames({k.lower(): v for k, v in raw.items()})


def _key_names() -> KeyNames:
    cached: KeyNames | None = current_app.extensions.get("pinserver_audit_key_names")
    if cached is None:
        setting = current_app.config.get(KEY_NAMES_SETTING) or os.environ.get(KEY_NAMES_SETTING)
        cached = load_key_names(setting)
        if cached.problem:
            logger.warning("%s", cached.problem)
        current_app.extensions["pinserver_audit_key_names"] = cached
    return cached


# --- checking what the store holds ------------------------------------------------------


def _reason(error: Exception) -> str:
    if isinstance(error, PinserverError):
        return f"{error.message} ({error.code})"
    return f"{error} (unreadable)"


@dataclass(frozen=True)
class RootCheck:
    """One stored root and whether the chain from root 1 reaches it."""

    stored: StoredRoot
    verified: VerifiedRoot | None
    problem: str | None

    @property
    def version(self) -> int:
        return self.stored.version

    @property
    def root(self) -> Root | None:
        return self.verified.root if self.verified else None


def check_root_chain(stored: Sequence[StoredRoot]) -> list[RootCheck]:
    """Walk the stored roots forward from root 1, one version at a time: a root the walk
    cannot reach is reported with the reason, and so is every root after it."""
    checks: list[RootCheck] = []
    trusted: VerifiedRoot | None = None
    broken: int | None = None
    for row in stored:
        if broken is not None:
            checks.append(RootCheck(row, None, f"not reached: root {broken} did not verify"))
            continue
        try:
            verified = (
                verify_anchor_root(row.envelope)
                if trusted is None
                else verify_next_root(trusted.root, row.envelope)
            )
            if verified.version != row.version:
                raise PinserverError(
                    f"the envelope stored as root {row.version} holds root {verified.version}",
                    code="version_mismatch",
                )
            if trusted is None and row.version != 1:
                raise PinserverError(
                    f"the chain starts at root {row.version}; root 1 is missing",
                    code="root_missing",
                )
        except _ROW_ERRORS as e:
            checks.append(RootCheck(row, None, _reason(e)))
            broken = row.version
            continue
        checks.append(RootCheck(row, verified, None))
        trusted = verified
    return checks


@dataclass(frozen=True)
class ManifestCheck:
    """One stored manifest: ``verified`` when its signatures met the publisher threshold
    of its root (its content is authentic and may be shown); ``problem`` is None only
    when every check passed, the hash-chain link included."""

    version: int
    stored: StoredManifest | None
    verified: VerifiedManifest | None
    problem: str | None

    @property
    def ok(self) -> bool:
        return self.problem is None

    @property
    def manifest(self) -> Manifest | None:
        return self.verified.manifest if self.verified else None


def _previous_floor(version: int, previous: StoredManifest | None) -> ManifestFloor | None:
    if version == 1:
        return None
    if previous is None:
        raise PinserverError(
            f"cannot check the hash chain: version {version - 1} is missing from the store"
            " or its row cannot be read",
            code="chain_unchecked",
        )
    try:
        digest = Envelope.from_bytes(previous.envelope).payload_sha256
    except _ROW_ERRORS as e:
        raise PinserverError(
            f"cannot check the hash chain: version {version - 1}'s stored envelope is"
            f" unreadable ({_reason(e)})",
            code="chain_unchecked",
        ) from e
    return ManifestFloor(version - 1, digest)


def check_manifest(
    version: int,
    stored: StoredManifest | None,
    previous: StoredManifest | None,
    roots: Mapping[int, RootCheck],
) -> ManifestCheck:
    """Verify one stored manifest against the checked root chain and its predecessor."""
    if stored is None:
        return ManifestCheck(version, None, None, "this version's row cannot be read")
    root = roots.get(stored.root_version)
    if root is None or root.root is None:
        why = "is not in the store" if root is None else "did not verify"
        return ManifestCheck(
            version, stored, None, f"published under root {stored.root_version}, which {why}"
        )
    try:
        verified = verify_manifest_signatures(root.root, stored.envelope)
    except _ROW_ERRORS as e:
        return ManifestCheck(version, stored, None, _reason(e))
    try:
        verify_history_entry(verified, version=version, previous=_previous_floor(version, previous))
        if verified.payload_sha256 != stored.payload_sha256:
            raise PinserverError(
                f"the store recorded payload hash {stored.payload_sha256}, but the stored"
                f" envelope's payload hashes to {verified.payload_sha256}",
                code="store_corrupt",
            )
    except _ROW_ERRORS as e:
        return ManifestCheck(version, stored, verified, _reason(e))
    return ManifestCheck(version, stored, verified, None)


def _read_range(store: Store, first: int, last: int) -> dict[int, StoredManifest | None]:
    """Versions ``first..last``; when a damaged row makes the batch read fail, each
    version is read on its own so that one bad row marks only itself."""
    if last < first:
        return {}
    try:
        rows = store.manifests_after(first - 1, last - first + 1)
        found: dict[int, StoredManifest | None] = {r.version: r for r in rows}
    except _ROW_ERRORS as e:
        logger.warning("audit: batch read of versions %d..%d failed: %s", first, last, e)
        found = {}
        for version in range(first, last + 1):
            try:
                found[version] = store.get_manifest(version)
            except _ROW_ERRORS:
                found[version] = None
    return {v: found.get(v) for v in range(first, last + 1)}


def _roots(store: Store) -> list[RootCheck]:
    """The stored roots, checked; a root row that cannot be read breaks the chain there."""
    try:
        return check_root_chain(store.roots())
    except _ROW_ERRORS as e:
        logger.warning("audit: reading the roots failed: %s", e)
    readable: list[StoredRoot] = []
    for version in range(1, store.head().root_version + 1):
        try:
            row = store.get_root(version)
        except _ROW_ERRORS:
            row = None
        if row is None:
            break
        readable.append(row)
    return check_root_chain(readable)


def _check_range(
    store: Store, first: int, last: int, roots: Mapping[int, RootCheck]
) -> list[ManifestCheck]:
    """Checks for versions ``first..last`` (ascending), reading ``first - 1`` for the link."""
    rows = _read_range(store, max(1, first - 1), last)
    return [check_manifest(v, rows[v], rows.get(v - 1), roots) for v in range(first, last + 1)]


# --- presentation helpers ---------------------------------------------------------------


@dataclass(frozen=True)
class Expiry:
    """A deadline as the pages show it: when, and whether it is past or close."""

    at: datetime
    now: datetime

    @property
    def text(self) -> str:
        return format_timestamp(self.at)

    @property
    def expired(self) -> bool:
        return self.at <= self.now

    @property
    def soon(self) -> bool:
        return not self.expired and self.at - self.now <= EXPIRY_WARNING

    @property
    def relative(self) -> str:
        delta = self.at - self.now
        if delta <= timedelta(0):
            return f"expired {_span(-delta)} ago"
        return f"in {_span(delta)}"


def _span(delta: timedelta) -> str:
    if delta >= timedelta(days=2):
        return f"{delta.days} days"
    hours = int(delta.total_seconds() // 3600)
    if hours >= 2:
        return f"{hours} hours"
    return f"{int(delta.total_seconds() // 60)} minutes"


@dataclass
class KeyLabeller:
    """Keyids as people read them: a configured name, else a prefix; roles from roots."""

    names: Mapping[str, str]
    roles: dict[str, set[str]] = field(default_factory=dict)

    @classmethod
    def from_roots(cls, names: Mapping[str, str], roots: Sequence[RootCheck]) -> KeyLabeller:
        labeller = cls(names)
        for check in roots:
            if check.root is None:
                continue
            for role_name, role in check.root.roles.items():
                for keyid in role.keyids:
                    labeller.roles.setdefault(keyid, set()).add(role_name)
        return labeller

    def label(self, keyid: str) -> dict[str, str]:
        return {
            "keyid": keyid,
            "name": self.names.get(keyid, ""),
            "short": keyid[:12],
            "roles": ", ".join(sorted(self.roles.get(keyid, ()))),
        }


def _html_error(status: int, title: str, message: str) -> tuple[str, int]:
    return render_template("audit_error.html", title=title, message=message), status


def _parse_version(text: str) -> int | None:
    return int(text) if _VERSION_RE.match(text) else None


@dataclass(frozen=True)
class TimelineEntry:
    kind: str  # "manifest" or "root"
    manifest: ManifestCheck | None = None
    root: RootCheck | None = None
    publisher_changed: bool = False


def _timeline(
    checks: Sequence[ManifestCheck],
    roots: Sequence[RootCheck],
    *,
    newest_page: bool,
    below_root_version: int,
) -> list[TimelineEntry]:
    """Manifests newest first, each root rotation placed just before (older than) the
    first manifest published under it; roots with no manifest yet top the newest page.
    ``below_root_version`` is the root of the manifest just older than this page."""

    def root_version_of(check: ManifestCheck) -> int:
        return check.stored.root_version if check.stored else 0

    by_version = {r.version: r for r in roots}
    entries: list[TimelineEntry] = []
    placed: set[int] = set()

    def add_roots(low: int, high: int) -> None:
        for version in range(high, low, -1):
            if version in by_version and version not in placed:
                placed.add(version)
                entries.append(_root_entry(by_version, version))

    ordered = sorted(checks, key=lambda c: c.version, reverse=True)
    if newest_page:
        top = max((root_version_of(c) for c in ordered), default=below_root_version)
        add_roots(top, max(by_version, default=0))
    for i, check in enumerate(ordered):
        entries.append(TimelineEntry("manifest", manifest=check))
        older = ordered[i + 1] if i + 1 < len(ordered) else None
        older_root = root_version_of(older) if older else below_root_version
        add_roots(older_root, root_version_of(check))
    return entries


def _root_entry(by_version: Mapping[int, RootCheck], version: int) -> TimelineEntry:
    check = by_version[version]
    before = by_version.get(version - 1)
    changed = bool(
        check.root and before and before.root and is_publisher_changed(before.root, check.root)
    )
    return TimelineEntry("root", root=check, publisher_changed=changed)


def _expiry_alerts(
    latest: ManifestCheck | None, current_root: RootCheck | None, now: datetime
) -> list[dict[str, Any]]:
    """What expires within the warning window (or already has): the current root, the
    latest manifest and its pin sets. Older versions are history, not alerts."""
    alerts: list[dict[str, Any]] = []
    if current_root and current_root.root:
        expiry = Expiry(current_root.root.expires, now)
        if expiry.expired or expiry.soon:
            alerts.append({"what": f"root {current_root.version}", "expiry": expiry})
    manifest = latest.manifest if latest else None
    if manifest is not None:
        expiry = Expiry(manifest.expires, now)
        if expiry.expired or expiry.soon:
            alerts.append({"what": f"manifest {manifest.version}", "expiry": expiry})
        for pinset in manifest.pinsets:
            expiry = Expiry(pinset.expires, now)
            if expiry.expired or expiry.soon:
                alerts.append(
                    {"what": f"pin set {pinset.host}", "expiry": expiry, "host": pinset.host}
                )
    return alerts


# --- views ------------------------------------------------------------------------------


@bp.after_request
def _security_headers(response: Response) -> Response:
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["X-Frame-Options"] = "DENY"
    if request.endpoint != "audit.static":
        response.headers["Cache-Control"] = "no-store"
    return response


@bp.app_template_filter("ts")
def _ts_filter(moment: datetime | None) -> str:
    return format_timestamp(moment) if moment else ""


@bp.get("/")
@bp.get("")
def timeline() -> Any:
    """The timeline: ``?before=N`` shows the page of versions below N."""
    store = _store()
    head = store.head()
    latest = head.manifest_version
    before_arg = request.args.get("before")
    if before_arg is None:
        top = latest
    else:
        before = _parse_version(before_arg)
        if before is None:
            return _html_error(400, "Bad page", "before must be a version number (1 or more)")
        top = min(before - 1, latest)
    bottom = max(1, top - PAGE_SIZE + 1)
    roots = _roots(store)
    roots_by_version = {r.version: r for r in roots}
    checks = _check_range(store, bottom, top, roots_by_version) if top >= 1 else []
    below_root_version = 0
    if bottom > 1:
        below = _read_range(store, bottom - 1, bottom - 1)[bottom - 1]
        below_root_version = below.root_version if below else 0
    entries = _timeline(
        checks, roots, newest_page=top == latest, below_root_version=below_root_version
    )
    now = _now()
    latest_check = checks[-1] if checks and top == latest else None
    if latest_check is None and latest >= 1:
        latest_check = _check_range(store, latest, latest, roots_by_version)[0]
    key_names = _key_names()
    return render_template(
        "audit_timeline.html",
        entries=entries,
        latest=latest,
        root_count=len(roots),
        alerts=_expiry_alerts(latest_check, roots[-1] if roots else None, now),
        newer=top + PAGE_SIZE + 1 if top < latest else None,
        newest=top < latest,
        older=bottom if bottom > 1 else None,
        first_shown=bottom,
        last_shown=top,
        keys=KeyLabeller.from_roots(key_names.names, roots),
        key_names_problem=key_names.problem,
        now=now,
    )


@bp.get("/manifests/<version_text>")
def manifest_page(version_text: str) -> Any:
    """One version: status, pin sets and the diff from the version before."""
    version = _parse_version(version_text)
    if version is None:
        return _html_error(404, "No such version", "versions are whole numbers from 1")
    store = _store()
    latest = store.head().manifest_version
    if version > latest:
        return _html_error(
            404, "No such version", f"version {version} is not published (latest is {latest})"
        )
    roots = _roots(store)
    roots_by_version = {r.version: r for r in roots}
    checks = _check_range(store, max(1, version - 1), version, roots_by_version)
    check = checks[-1]
    previous = checks[0] if version > 1 else None
    diff: ManifestDiff | None = None
    diff_problem: str | None = None
    if check.manifest is None:
        diff_problem = "this version did not verify, so its content is not shown"
    elif previous is None:
        diff = diff_manifests(None, check.manifest)
    elif previous.manifest is None:
        diff_problem = (
            f"version {version - 1} did not verify ({previous.problem}), so there is"
            " nothing trusted to compare with"
        )
    else:
        diff = diff_manifests(previous.manifest, check.manifest)
    now = _now()
    key_names = _key_names()
    return render_template(
        "audit_manifest.html",
        check=check,
        manifest=check.manifest,
        previous=previous,
        diff=diff,
        diff_problem=diff_problem,
        latest=latest,
        root=roots_by_version.get(check.stored.root_version) if check.stored else None,
        keys=KeyLabeller.from_roots(key_names.names, roots),
        key_names_problem=key_names.problem,
        expiry=lambda moment: Expiry(moment, now),
        raw_url=f"/v1/manifests/{version}.json",
        now=now,
    )


@dataclass(frozen=True)
class HostWindow:
    """One page of a host's history: versions ``first..last`` checked, plus the version
    just below them as the base the first change is measured against."""

    first: int
    last: int
    events: list[HostEvent]  # oldest first, all within first..last
    skipped: list[ManifestCheck]  # in the window (or its base) and not verified
    pinset: PinSet | None  # the host's pin set in the newest verified version shown
    any_verified: bool


def host_window(
    store: Store, roots: Mapping[int, RootCheck], host: str, *, first: int, last: int
) -> HostWindow:
    """``host``'s events in versions ``first..last``: reads and verifies those versions
    and the one below (``last - first + 3`` rows with its hash-chain link), never more,
    so a page costs the same whatever the size of the store."""
    checks = _check_range(store, max(1, first - 1), last, roots) if last >= 1 else []
    verified = [c.manifest for c in checks if c.manifest is not None]
    events = [e for e in host_history(verified, host) if e.version >= first]
    newest = next((c.manifest for c in reversed(checks) if c.version >= first and c.manifest), None)
    return HostWindow(
        first=first,
        last=last,
        events=events,
        skipped=[c for c in checks if c.manifest is None],
        pinset=newest.pinset(host) if newest else None,
        any_verified=newest is not None,
    )


@bp.get("/hosts/<host>")
def host_page(host: str) -> Any:
    """One host's pin set history, newest first, ``HOST_PAGE_VERSIONS`` versions a page
    (``?before=N``: the page of versions below N). A page never scans the whole history:
    this URL is public, and a long history must not make it expensive."""
    try:
        validate_host(host, field="host")
    except PinserverError as e:
        return _html_error(404, "No such host", e.message)
    store = _store()
    latest = store.head().manifest_version
    before_arg = request.args.get("before")
    if before_arg is None:
        top = latest
    else:
        before = _parse_version(before_arg)
        if before is None:
            return _html_error(400, "Bad page", "before must be a version number (1 or more)")
        top = min(before - 1, latest)
    bottom = max(1, top - HOST_PAGE_VERSIONS + 1)
    roots = {r.version: r for r in _roots(store)}
    window = host_window(store, roots, host, first=bottom, last=top)
    now = _now()
    return render_template(
        "audit_host.html",
        host=host,
        window=window,
        events=list(reversed(window.events)),
        latest=latest,
        is_newest=top == latest,
        newer=top + HOST_PAGE_VERSIONS + 1 if top < latest else None,
        older=bottom if bottom > 1 else None,
        expiry=lambda moment: Expiry(moment, now),
        now=now,
    )


def register_audit(app: Flask) -> None:
    """Add the auditor view to ``app`` (the store must be in ``app.extensions``)."""
    app.register_blueprint(bp)


__all__ = [
    "CONTENT_SECURITY_POLICY",
    "HOST_PAGE_VERSIONS",
    "PAGE_SIZE",
    "HostWindow",
    "ManifestCheck",
    "RootCheck",
    "bp",
    "check_manifest",
    "check_root_chain",
    "host_window",
    "load_key_names",
    "register_audit",
]
