"""PinClient: fetch, verify through the pure trust core, persist durably, then swap.

This module owns the I/O of a refresh (which URL, which mirror, what to write and
when); every acceptance rule is applied by :mod:`pinserver.trust`. The in-memory
state is one immutable snapshot, replaced by a single assignment after the new
state is on disk, so readers (``pins_for``, pinned sessions) never see half of it.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import requests

from pinserver.client.fetcher import (
    DEFAULT_TIMEOUT,
    Fetcher,
    FetchResponse,
    _RequestsFetcher,
)
from pinserver.client.reports import Reporter
from pinserver.client.session import PinChecker, pinned_session
from pinserver.client.state import StateDir, StateFileError, StoredState, decode_state
from pinserver.documents import Manifest, PinSet, format_timestamp
from pinserver.envelope import MAX_ENVELOPE_BYTES
from pinserver.errors import (
    FetchError,
    PinserverError,
    SignatureError,
    StoreError,
    VerificationError,
)
from pinserver.pins import find_pinset, is_pinset_active
from pinserver.trust import (
    DEFAULT_SKEW,
    MAX_ROOT_ROTATIONS,
    ManifestFloor,
    TrustedSet,
    VerifiedManifest,
    VerifiedRoot,
    advance_time_floor,
    effective_time,
    verify_anchor_root,
    verify_manifest_signatures,
    verify_root_chain,
)

logger = logging.getLogger(__name__)

OnExpiry = Literal["ca-only", "fail-closed"]
MANIFEST_PATH = "/v1/manifest.json"
ROOT_PATH = "/v1/roots/{version}.json"


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class _Snapshot:
    """Everything the client trusts, verified from the shipped anchor."""

    roots: tuple[VerifiedRoot, ...]
    manifest: VerifiedManifest | None = None
    etags: dict[str, str] = field(default_factory=dict)
    time_floor: datetime | None = None

    @property
    def root_version(self) -> int:
        return self.roots[-1].version

    @property
    def manifest_version(self) -> int | None:
        return self.manifest.version if self.manifest else None

    @property
    def floor(self) -> ManifestFloor | None:
        if self.manifest is None:
            return None
        return ManifestFloor(self.manifest.version, self.manifest.payload_sha256)

    def to_stored(self) -> StoredState:
        return StoredState(
            roots=tuple((r.version, r.raw) for r in self.roots[1:]),
            manifest=self.manifest.raw if self.manifest else None,
            etags=dict(self.etags),
            time_floor=self.time_floor,
        )


@dataclass(frozen=True)
class RefreshResult:
    """What one refresh did. ``updated`` is True when a new manifest or root was
    accepted and persisted; ``not_modified`` when the mirror answered 304."""

    updated: bool
    root_version: int
    manifest_version: int | None
    previous_root_version: int
    previous_manifest_version: int | None
    not_modified: bool
    mirror: str
    changed_hosts: tuple[str, ...] = ()
    manifest_expires: datetime | None = None
    manifest_expired: bool = False
    enforcing: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "updated": self.updated,
            "root_version": self.root_version,
            "manifest_version": self.manifest_version,
            "previous_root_version": self.previous_root_version,
            "previous_manifest_version": self.previous_manifest_version,
            "not_modified": self.not_modified,
            "mirror": self.mirror,
            "changed_hosts": list(self.changed_hosts),
            "manifest_expires": (
                format_timestamp(self.manifest_expires) if self.manifest_expires else None
            ),
            "manifest_expired": self.manifest_expired,
            "enforcing": self.enforcing,
        }


def _bounded_floor(floor: datetime | None, held: VerifiedManifest | None) -> datetime | None:
    """The time floor, never past the held manifest's ``issued_at``.

    The floor is the newest ``issued_at`` accepted (capped at the clock), so with a
    publisher whose clock runs forward it never exceeds the held manifest's. A higher
    floor in the state file is one planted by whoever can write the directory (the
    checksum is no signature): ten years ahead, it would make every manifest look
    expired for good. Without a manifest there is no floor."""
    if floor is None or held is None:
        return None
    return min(floor.replace(microsecond=0), held.manifest.issued_at)


def _changed_hosts(old: Manifest | None, new: Manifest) -> tuple[str, ...]:
    before = {p.host: p for p in old.pinsets} if old else {}
    after = {p.host: p for p in new.pinsets}
    return tuple(sorted(h for h in before.keys() | after.keys() if before.get(h) != after.get(h)))


class PinClient:
    """Keeps a verified pin manifest fresh and enforces it on TLS connections.

    Example::

        client = PinClient("https://pins.example.com", trusted_root="root-1.json",
                           state_dir="/var/lib/app/pins")
        client.refresh()                     # one conditional GET; raises on rejection
        session = client.session()           # requests.Session enforcing the pins
        session.get("https://api.example.com/v1/things")

    Args:
        base_url: the pinserver (or a mirror) base URL, or a sequence of mirrors
            tried in order on network failures. Plain http is fine: signatures,
            not the transport, carry the trust.
        trusted_root: the root envelope the application ships (path or bytes):
            the only trust anchor.
        state_dir: where verified state is kept across restarts (created if absent).
        skew: allowed clock skew for ``not_before`` (seconds or timedelta).
        on_expiry: ``"ca-only"`` stops enforcing pins once the last good manifest
            has expired; ``"fail-closed"`` keeps enforcing them.
        clock: returns the current UTC time; injectable for tests.
        fetcher: the network layer; default is requests with the caps below.
        timeout: seconds a whole download may take, body included.
        max_root_rotations: bound of the root walk in one refresh.

    The constructor does no network I/O; it loads and re-verifies any saved state.
    """

    def __init__(
        self,
        base_url: str | Sequence[str],
        trusted_root: str | Path | bytes,
        state_dir: str | Path,
        *,
        skew: float | timedelta = DEFAULT_SKEW,
        on_expiry: OnExpiry = "ca-only",
        clock: Callable[[], datetime] = _utcnow,
        fetcher: Fetcher | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        max_root_rotations: int = MAX_ROOT_ROTATIONS,
    ) -> None:
        mirrors = [base_url] if isinstance(base_url, str) else list(base_url)
        if not mirrors or not all(isinstance(m, str) and m for m in mirrors):
            raise ValueError("base_url must be a URL or a non-empty sequence of URLs")
        if on_expiry not in ("ca-only", "fail-closed"):
            raise ValueError("on_expiry must be 'ca-only' or 'fail-closed'")
        self.mirrors: tuple[str, ...] = tuple(m.rstrip("/") for m in mirrors)
        self.skew = skew if isinstance(skew, timedelta) else timedelta(seconds=skew)
        self.on_expiry: OnExpiry = on_expiry
        self.max_root_rotations = max_root_rotations
        self._clock = clock
        self._fetcher = fetcher if fetcher is not None else _RequestsFetcher(timeout=timeout)
        anchor_bytes = (
            trusted_root if isinstance(trusted_root, bytes) else Path(trusted_root).read_bytes()
        )
        self._anchor = verify_anchor_root(anchor_bytes)
        self._state_dir = StateDir(state_dir)
        self._refresh_lock = threading.Lock()
        self._reporter = Reporter(clock=clock)
        self.load_problem: str | None = None
        """Why the saved state was discarded at the last load (None: it loaded fine)."""
        self._state_digest: bytes | None = None
        """SHA-256 of the state file bytes that ``_snapshot`` was verified from or
        written as; only read and set with the state lock held (or in __init__)."""
        snapshot = self._load_saved()
        self._snapshot = snapshot if snapshot is not None else _Snapshot(roots=(self._anchor,))

    # --- reading --------------------------------------------------------------------

    @property
    def root_version(self) -> int:
        return self._snapshot.root_version

    @property
    def manifest_version(self) -> int | None:
        return self._snapshot.manifest_version

    @property
    def manifest(self) -> Manifest | None:
        """The last good manifest (possibly expired), or None before the first refresh."""
        snapshot = self._snapshot
        return snapshot.manifest.manifest if snapshot.manifest else None

    def now(self) -> datetime:
        """The client's notion of now: the clock, never earlier than the time floor."""
        return effective_time(self._clock(), self._snapshot.time_floor)

    def is_manifest_expired(self) -> bool:
        manifest = self.manifest
        return manifest is not None and self.now() >= manifest.expires

    def is_enforcing(self) -> bool:
        """True when pins are in force: a manifest is held and the expiry policy
        does not switch it off."""
        manifest = self.manifest
        if manifest is None:
            return False
        return self.on_expiry == "fail-closed" or self.now() < manifest.expires

    def pins_for(self, host: str) -> PinSet | None:
        """The pin set in force for ``host`` (include_subdomains honoured; the most
        specific wins), or None: not pinned, pin set expired, no manifest, or the
        manifest expired under ``on_expiry="ca-only"``. None means plain CA validation.

        Case and a trailing dot are ignored. An internationalised name must be given
        as its IDNA A-label (``xn--...``, what requests puts on the wire and manifests
        hold): a U-label raises ``ValueError`` instead of quietly matching nothing."""
        if not host.isascii():
            raise ValueError(
                f"{host!r}: pass the IDNA A-label (xn--...) of an internationalised name"
            )
        snapshot = self._snapshot
        if snapshot.manifest is None:
            return None
        manifest = snapshot.manifest.manifest
        now = effective_time(self._clock(), snapshot.time_floor)
        if self.on_expiry == "ca-only" and now >= manifest.expires:
            return None
        pinset = find_pinset(manifest.pinsets, host.lower().rstrip("."))
        if pinset is None or not is_pinset_active(pinset, now):
            return None
        return pinset

    def session(self) -> requests.Session:
        """A requests.Session that checks every new HTTPS connection against the pins
        current at connect time, before any request byte is sent."""
        return pinned_session(PinChecker(self.pins_for, self._report_mismatch))

    def flush_reports(self, timeout: float = 10.0) -> None:
        """Wait for pin reports still being sent (e.g. before the process exits)."""
        self._reporter.flush(timeout)

    def close(self) -> None:
        self._fetcher.close()

    def __enter__(self) -> PinClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _report_mismatch(
        self, host: str, port: int, observed: tuple[str, ...], pinset: PinSet
    ) -> None:
        manifest = self.manifest
        if manifest is None or manifest.report_uri is None or not observed:
            return  # nothing to report without a verified chain
        self._reporter.submit(
            manifest.report_uri,
            host=host,
            port=port,
            observed=observed,
            manifest_version=manifest.version,
            mode=pinset.mode,
        )

    # --- loading --------------------------------------------------------------------

    def _load_saved(self) -> _Snapshot | None:
        """Re-verify the saved state from the shipped anchor; None (and
        ``load_problem`` set) when there is none or it does not verify.

        When the file holds exactly the bytes this client last verified or wrote
        (same SHA-256), the snapshot in memory is what verifying them again would
        give, and is returned as it is: verification depends only on those bytes and
        the shipped anchor. Any other bytes, whoever wrote them, are verified in full."""
        self.load_problem = None
        try:
            raw = self._state_dir.read()
            if raw is None:
                return None
            digest = hashlib.sha256(raw).digest()
            if digest == self._state_digest:
                return self._snapshot
            snapshot = self._verify_stored(raw)
            self._state_digest = digest
            return snapshot
        except (OSError, StateFileError, PinserverError) as e:
            self.load_problem = f"{type(e).__name__}: {e}"
            logger.error(
                "state in %s failed verification (%s); starting again from the shipped"
                " trusted root",
                self._state_dir.path,
                self.load_problem,
            )
            return None

    def _verify_stored(self, raw: bytes) -> _Snapshot:
        stored = decode_state(raw)
        # Roots at or below the anchor's version are superseded by a newer shipped root.
        chain = [data for version, data in stored.roots if version > self._anchor.version]
        roots = verify_root_chain(self._anchor.raw, chain, max_rotations=len(chain))
        for (version, _), verified in zip(
            [r for r in stored.roots if r[0] > self._anchor.version], roots[1:], strict=True
        ):
            if version != verified.version:
                raise StateFileError(f"root listed as {version} is root {verified.version}")
        manifest = None
        if stored.manifest is not None:
            manifest = verify_manifest_signatures(roots[-1].root, stored.manifest)
            if manifest.manifest.root_version > roots[-1].version:
                raise StateFileError("stored manifest names a root newer than the stored chain")
        return _Snapshot(
            roots=tuple(roots),
            manifest=manifest,
            etags=dict(stored.etags) if manifest else {},
            time_floor=_bounded_floor(stored.time_floor, manifest),
        )

    # --- refreshing -----------------------------------------------------------------

    def refresh(self) -> RefreshResult:
        """One poll: a conditional GET of the manifest (roots only when needed),
        verified, persisted durably, then swapped in.

        Raises:
            FetchError: every mirror failed (network, status, size or time cap);
                the last good pins stay in force.
            StoreError: the state directory could not be locked, read or written;
                nothing was swapped in memory.
            VerificationError: a mirror served a document that was rejected
                (``SignatureError``, ``RollbackError``, ``ForkError``,
                ``ExpiredError``, ``FormatError``...): an attack signal. The stored
                state is unchanged and no other mirror is tried.
        """
        with self._refresh_lock:
            try:
                with self._state_dir.lock():
                    # Another process sharing state_dir may have moved on: start from disk.
                    saved = self._load_saved()
                    if saved is not None:
                        self._snapshot = saved
                    return self._refresh_locked(self._snapshot)
            except OSError as e:  # the fetcher wraps its own OSErrors as FetchError
                raise StoreError(
                    f"state directory {self._state_dir.path}: {e}; the pins in memory"
                    " stay in force but could not be saved"
                ) from e

    def _warn_if_expired(self, manifest: Manifest | None, now: datetime) -> None:
        """SPEC 6: once the last good manifest has expired, a warning every poll."""
        if manifest is not None and now >= manifest.expires:
            logger.warning(
                "manifest %s expired at %s and no newer one was accepted; %s",
                manifest.version,
                format_timestamp(manifest.expires),
                "pins are NOT enforced (on_expiry=ca-only)"
                if self.on_expiry == "ca-only"
                else "its pins stay enforced (on_expiry=fail-closed)",
            )

    def _refresh_locked(self, old: _Snapshot) -> RefreshResult:
        now = effective_time(self._clock(), old.time_floor)
        try:
            mirror_index, response = self._fetch_manifest(old)
        except FetchError:
            self._warn_if_expired(old.manifest.manifest if old.manifest else None, now)
            raise
        if old.manifest is not None and now >= old.manifest.manifest.expires:
            mirror_index, response = self._fresher_elsewhere(old, mirror_index, response)
        mirror = self.mirrors[mirror_index]

        def result(
            snapshot: _Snapshot, *, updated: bool, changed: tuple[str, ...] = ()
        ) -> RefreshResult:
            manifest = snapshot.manifest.manifest if snapshot.manifest else None
            expired = manifest is not None and now >= manifest.expires
            self._warn_if_expired(manifest, now)
            return RefreshResult(
                updated=updated,
                root_version=snapshot.root_version,
                manifest_version=snapshot.manifest_version,
                previous_root_version=old.root_version,
                previous_manifest_version=old.manifest_version,
                not_modified=response.not_modified,
                mirror=mirror,
                changed_hosts=changed,
                manifest_expires=manifest.expires if manifest else None,
                manifest_expired=expired,
                enforcing=manifest is not None and (self.on_expiry == "fail-closed" or not expired),
            )

        if response.not_modified:
            return result(old, updated=False)
        if old.manifest is not None and response.body == old.manifest.raw:
            # The same manifest served again (ETag lost or changed): nothing new.
            if response.etag and old.etags.get(mirror) != response.etag:
                self._persist(old, {**old.etags, mirror: response.etag})
            return result(self._snapshot, updated=False)

        try:
            trusted = self._verify(old, response.body, mirror_index, now)
        except VerificationError as e:
            logger.error(
                "REJECTED a document from %s (%s: %s). This is an attack signal or a"
                " broken publication; other mirrors are not tried, the stored state is"
                " unchanged and the pins of manifest %s stay in force.",
                mirror,
                e.code,
                e.message,
                old.manifest_version,
            )
            self._warn_if_expired(old.manifest.manifest if old.manifest else None, now)
            raise
        except FetchError:  # during a root walk
            self._warn_if_expired(old.manifest.manifest if old.manifest else None, now)
            raise
        verified = trusted.manifest
        if verified is None:  # update_manifest sets it or raises
            raise RuntimeError("trusted set holds no manifest after update_manifest")
        same_payload = (
            old.manifest is not None and verified.payload_sha256 == old.manifest.payload_sha256
        )
        # The same payload again: keep the envelope already held (its bytes are what
        # the stored ETags describe) unless the trusted root moved, because the held
        # envelope's signatures need not meet the new root's publisher role, and the
        # state must reload.
        root_moved = len(trusted.roots) != len(old.roots)
        keep = (
            old.manifest
            if same_payload and old.manifest is not None and not root_moved
            else verified
        )
        new_floor = advance_time_floor(old.time_floor, verified.manifest, now, self.skew)
        etags = {mirror: response.etag} if response.etag else {}
        if same_payload:
            etags = {**old.etags, **etags}
        new = _Snapshot(
            roots=tuple(trusted.roots), manifest=keep, etags=etags, time_floor=new_floor
        )
        self._persist(new, etags)
        updated = not same_payload or new.root_version != old.root_version
        changed = (
            ()
            if same_payload
            else _changed_hosts(old.manifest.manifest if old.manifest else None, verified.manifest)
        )
        if updated:
            logger.info(
                "accepted manifest %s under root %s from %s (was manifest %s, root %s)",
                new.manifest_version,
                new.root_version,
                mirror,
                old.manifest_version,
                old.root_version,
            )
        return result(new, updated=updated, changed=changed)

    def _persist(self, snapshot: _Snapshot, etags: dict[str, str]) -> None:
        """Write durably, then swap: the order SPEC section 6 rule 6 requires."""
        final = _Snapshot(
            roots=snapshot.roots,
            manifest=snapshot.manifest,
            etags=etags,
            # Whole seconds and bounded as a load bounds it: memory holds what a reload
            # of the file would give.
            time_floor=_bounded_floor(snapshot.time_floor, snapshot.manifest),
        )
        written = self._state_dir.write(final.to_stored())
        self._state_digest = hashlib.sha256(written).digest()
        self._snapshot = final

    def _verify(self, old: _Snapshot, body: bytes, mirror_index: int, now: datetime) -> TrustedSet:
        """Apply SPEC section 6 through the trust core, walking roots when needed."""
        trusted = TrustedSet(
            roots=list(old.roots),
            reference_time=now,
            skew=self.skew,
            floor=old.floor,
            max_root_rotations=self.max_root_rotations,
        )
        candidate: bytes | VerifiedManifest = body
        try:
            candidate = verify_manifest_signatures(trusted.root, body)
        except SignatureError:
            # Perhaps signed under a newer root: walk forward as far as the chain goes.
            self._walk_roots(trusted, mirror_index, until=None)
        else:
            named = candidate.manifest.root_version
            if named > trusted.root.version:
                self._walk_roots(trusted, mirror_index, until=named)
        # The payload is parsed once: the acceptance rules reuse the parse above and
        # check the signatures again under the (possibly newer) trusted root.
        trusted.update_manifest(candidate)
        return trusted

    def _walk_roots(self, trusted: TrustedSet, mirror_index: int, *, until: int | None) -> None:
        """Fetch root N+1, N+2, ... one at a time (to ``until``, or to the first 404)."""
        while until is None or trusted.root.version < until:
            path = ROOT_PATH.format(version=trusted.root.version + 1)
            try:
                _, response = self._fetch(path, etag=None, first=mirror_index, walk=True)
            except FetchError as e:
                if e.http_status == 404:
                    return
                raise
            trusted.update_root(response.body)
            logger.info("walked to root %s", trusted.root.version)

    def _fresher_elsewhere(
        self, old: _Snapshot, index: int, response: FetchResponse
    ) -> tuple[int, FetchResponse]:
        """The held manifest has expired and mirror ``index`` offers nothing newer (304
        or the same bytes): ask the other mirrors, in order, before settling for that.
        Otherwise one stale mirror listed first would keep the pins lapsed (ca-only)
        for as long as it liked while another mirror holds a fresh manifest. What
        another mirror delivers is verified like any answer."""

        def nothing_new(answer: FetchResponse) -> bool:
            return answer.not_modified or (
                old.manifest is not None and answer.body == old.manifest.raw
            )

        if not nothing_new(response):
            return index, response
        count = len(self.mirrors)
        for other in [*range(index + 1, count), *range(index)]:
            mirror = self.mirrors[other]
            try:
                candidate = self._fetcher.fetch(
                    mirror + MANIFEST_PATH,
                    etag=old.etags.get(mirror),
                    max_bytes=MAX_ENVELOPE_BYTES,
                )
            except FetchError as e:
                logger.warning("mirror %s failed (%s)", mirror, e.message)
                continue
            if not nothing_new(candidate):
                logger.warning(
                    "mirror %s offers nothing newer than the expired manifest %s; using"
                    " %s, which does",
                    self.mirrors[index],
                    old.manifest_version,
                    mirror,
                )
                return other, candidate
        return index, response

    def _fetch_manifest(self, old: _Snapshot) -> tuple[int, FetchResponse]:
        return self._fetch(MANIFEST_PATH, etag=old.etags, first=0)

    def _fetch(
        self, path: str, *, etag: dict[str, str] | None, first: int, walk: bool = False
    ) -> tuple[int, FetchResponse]:
        """GET ``path`` from the mirrors in order starting at ``first``.

        Any fetch failure (connection, TLS, timeout, HTTP status, size cap) moves on
        to the next mirror: it is about delivery, and whatever another mirror
        delivers is verified all the same. In a root walk a 404 is the answer "no
        newer root" and ends the walk. A document that fails verification is never
        retried elsewhere (the caller raises it)."""
        order = [*range(first, len(self.mirrors)), *range(first)]
        failures: list[str] = []
        last: FetchError | None = None
        for index in order:
            mirror = self.mirrors[index]
            try:
                response = self._fetcher.fetch(
                    mirror + path,
                    etag=etag.get(mirror) if etag else None,
                    max_bytes=MAX_ENVELOPE_BYTES,
                )
            except FetchError as e:
                if walk and e.http_status == 404:
                    raise
                logger.warning("mirror %s failed (%s); trying the next one", mirror, e.message)
                failures.append(e.message)
                last = e
                continue
            return index, response
        if last is None:
            raise ValueError("no mirrors configured")
        if len(failures) == 1:
            raise last
        raise FetchError(
            f"every mirror failed: {'; '.join(failures)}",
            http_status=last.http_status,
            code=last.code,
        ) from last
