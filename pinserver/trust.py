"""Root chain walk and manifest acceptance: bytes plus trusted state in, verdicts out.

Pure: no network, no filesystem, no clock. Every time-dependent check takes
``reference_time`` (a UTC-aware datetime) from the caller, so one refresh is
judged at one instant and every rule can be tested on its own. Fetching,
persisting and swapping are the client's and server's business, not handled here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from pinserver.documents import Manifest, Root, format_timestamp
from pinserver.envelope import (
    MANIFEST_TYPE,
    ROOT_TYPE,
    Envelope,
    verify_payload_type,
    verify_threshold,
)
from pinserver.errors import (
    ExpiredError,
    ForkError,
    RollbackError,
    VerificationError,
    VersionConflictError,
)

DEFAULT_SKEW = timedelta(seconds=300)
MAX_ROOT_ROTATIONS = 1024


@dataclass(frozen=True)
class VerifiedRoot:
    """A root whose signatures have been checked, with the exact bytes it came in."""

    root: Root
    envelope: Envelope
    raw: bytes

    @property
    def version(self) -> int:
        return self.root.version


@dataclass(frozen=True)
class VerifiedManifest:
    """A manifest whose publisher signatures met the threshold of ``under_root``."""

    manifest: Manifest
    envelope: Envelope
    raw: bytes
    signed_by: frozenset[str]
    under_root: int

    @property
    def payload_sha256(self) -> str:
        return self.envelope.payload_sha256

    @property
    def version(self) -> int:
        return self.manifest.version


@dataclass(frozen=True)
class ManifestFloor:
    """What a client or server already trusts: the newest version and its payload hash."""

    version: int
    payload_sha256: str


def _check_utc(reference_time: datetime) -> None:
    if reference_time.tzinfo is None:
        raise ValueError("reference_time must be timezone-aware (UTC)")


# --- roots ------------------------------------------------------------------------------


def _root_envelope(data: bytes | Envelope) -> tuple[Envelope, bytes]:
    envelope = data if isinstance(data, Envelope) else Envelope.from_bytes(data)
    verify_payload_type(envelope, ROOT_TYPE)
    return envelope, data if isinstance(data, bytes) else data.to_bytes()


def _verify_own_threshold(envelope: Envelope, root: Root) -> frozenset[str]:
    return verify_threshold(
        envelope,
        keys=root.keys,
        authorised=root.root_role.keyids,
        threshold=root.root_role.threshold,
        role=f"root role of root {root.version}",
    )


def verify_anchor_root(data: bytes | Envelope) -> VerifiedRoot:
    """A root trusted out of band (shipped or installed by an admin): it must still
    meet the threshold of its own root role. Its signatures can only be checked after
    the payload is parsed, which is safe here because the bytes are already trusted."""
    envelope, raw = _root_envelope(data)
    root = Root.from_bytes(envelope.payload)
    _verify_own_threshold(envelope, root)
    return VerifiedRoot(root=root, envelope=envelope, raw=raw)


def verify_next_root(trusted: Root, data: bytes | Envelope) -> VerifiedRoot:
    """Root N+1 given trusted root N: signed by a threshold of N's root role (checked
    before parsing) and of its own, and exactly one version newer."""
    envelope, raw = _root_envelope(data)
    verify_threshold(
        envelope,
        keys=trusted.keys,
        authorised=trusted.root_role.keyids,
        threshold=trusted.root_role.threshold,
        role=f"root role of trusted root {trusted.version}",
    )
    new = Root.from_bytes(envelope.payload)
    if new.version <= trusted.version:
        raise RollbackError(
            f"root version {new.version} is not newer than trusted root {trusted.version}"
        )
    if new.version != trusted.version + 1:
        raise VerificationError(
            f"root version {new.version} skips ahead of {trusted.version}; roots advance"
            " one version at a time",
            code="root_version_gap",
        )
    _verify_own_threshold(envelope, new)
    return VerifiedRoot(root=new, envelope=envelope, raw=raw)


def verify_root_rotation(current: Root, data: bytes, *, reference_time: datetime) -> VerifiedRoot:
    """The server's view of ``POST /v1/roots``: as ``verify_next_root``, but a version
    other than current+1 is a conflict with the store (409), not an attack; and a root
    already expired at ``reference_time`` is refused (422 ``root_expired``): it would
    become the final root of every walk, under which no manifest can be accepted, and
    roots are append-only."""
    try:
        verified = verify_next_root(current, data)
        verify_root_fresh(verified.root, reference_time)
        return verified
    except RollbackError as e:
        raise VersionConflictError(e.message, latest_version=current.version) from e
    except VerificationError as e:
        if e.code == "root_version_gap":
            raise VersionConflictError(e.message, latest_version=current.version) from e
        raise


def verify_root_chain(
    anchor: bytes | Envelope, chain: Sequence[bytes], *, max_rotations: int = MAX_ROOT_ROTATIONS
) -> list[VerifiedRoot]:
    """Verify ``chain`` (roots after the anchor, in order) forward from ``anchor``."""
    roots = [verify_anchor_root(anchor)]
    if len(chain) > max_rotations:
        raise VerificationError(f"more than {max_rotations} root rotations", code="too_many_roots")
    for data in chain:
        roots.append(verify_next_root(roots[-1].root, data))
    return roots


def verify_root_fresh(root: Root, reference_time: datetime) -> None:
    """The final root of a walk must not be expired: an expired root freezes updates."""
    _check_utc(reference_time)
    if reference_time >= root.expires:
        raise ExpiredError(
            f"root {root.version} expired at {format_timestamp(root.expires)}; no new manifest"
            " can be accepted until the root holders sign a new root",
            code="root_expired",
        )


def is_publisher_changed(old: Root, new: Root) -> bool:
    """True when the publisher role's keys or threshold changed: the client then forgets
    its manifest version floor (fast-forward recovery, TUF 5.3.11)."""
    a, b = old.publisher_role, new.publisher_role
    return set(a.keyids) != set(b.keyids) or a.threshold != b.threshold


# --- manifests --------------------------------------------------------------------------


def verify_manifest_signatures(
    root: Root, data: bytes | Envelope | VerifiedManifest
) -> VerifiedManifest:
    """Step 1 of SPEC section 6: payload type and publisher threshold of ``root``, then parse.

    ``data`` may be a manifest already verified under another (or the same) root, e.g.
    before a root walk: its signatures are checked again under ``root``, and only the
    parse of its payload, a pure function of the same bytes, is reused."""
    parsed: Manifest | None = None
    if isinstance(data, VerifiedManifest):
        envelope, raw, parsed = data.envelope, data.raw, data.manifest
    elif isinstance(data, Envelope):
        envelope, raw = data, data.to_bytes()
    else:
        envelope, raw = Envelope.from_bytes(data), data
    verify_payload_type(envelope, MANIFEST_TYPE)
    signed_by = verify_threshold(
        envelope,
        keys=root.keys,
        authorised=root.publisher_role.keyids,
        threshold=root.publisher_role.threshold,
        role=f"publisher role of root {root.version}",
    )
    manifest = parsed if parsed is not None else Manifest.from_bytes(envelope.payload)
    return VerifiedManifest(
        manifest=manifest, envelope=envelope, raw=raw, signed_by=signed_by, under_root=root.version
    )


def verify_window(manifest: Manifest, reference_time: datetime, skew: timedelta) -> None:
    """Step 4: ``not_before <= now + skew`` and ``now < expires``."""
    _check_utc(reference_time)
    if manifest.not_before > reference_time + skew:
        raise ExpiredError(
            f"manifest {manifest.version} is not valid before"
            f" {format_timestamp(manifest.not_before)} (now {format_timestamp(reference_time)})",
            code="not_yet_valid",
        )
    if reference_time >= manifest.expires:
        raise ExpiredError(
            f"manifest {manifest.version} expired at {format_timestamp(manifest.expires)}"
            f" (now {format_timestamp(reference_time)})"
        )


def accept_manifest(
    root: Root,
    data: bytes | Envelope | VerifiedManifest,
    *,
    floor: ManifestFloor | None,
    reference_time: datetime,
    skew: timedelta = DEFAULT_SKEW,
) -> VerifiedManifest:
    """SPEC section 6 steps 1 to 5 for a client whose trusted root (after any walk) is
    ``root`` and whose trusted manifest state is ``floor`` (None: nothing trusted yet,
    or forgotten by fast-forward recovery). Raises on the first failed rule."""
    verified = verify_manifest_signatures(root, data)
    manifest = verified.manifest
    if manifest.root_version > root.version:
        raise VerificationError(
            f"manifest {manifest.version} names root {manifest.root_version}, newer than"
            f" trusted root {root.version}",
            code="unknown_root_version",
        )
    if floor is not None:
        if manifest.version < floor.version:
            raise RollbackError(
                f"manifest version {manifest.version} is older than trusted {floor.version}"
            )
        if manifest.version == floor.version and verified.payload_sha256 != floor.payload_sha256:
            raise RollbackError(
                f"manifest version {manifest.version} has a payload other than the trusted one",
                code="equal_version_mismatch",
            )
    verify_root_fresh(root, reference_time)
    verify_window(manifest, reference_time, skew)
    if (
        floor is not None
        and manifest.version == floor.version + 1
        and manifest.previous != floor.payload_sha256
    ):
        raise ForkError(
            f"manifest {manifest.version} does not chain to trusted manifest {floor.version}:"
            f" previous is {manifest.previous}, trusted payload hash is {floor.payload_sha256}"
        )
    return verified


def verify_publication(
    root: Root,
    data: bytes,
    *,
    latest: ManifestFloor | None,
    reference_time: datetime,
    skew: timedelta = DEFAULT_SKEW,
) -> VerifiedManifest:
    """The server's acceptance of ``POST /v1/manifests``, in the status order of SPEC
    section 7: 400 envelope, 403 signatures, 422 document or window, 409 chain."""
    verified = verify_manifest_signatures(root, data)
    manifest = verified.manifest
    verify_root_fresh(root, reference_time)
    verify_window(manifest, reference_time, skew)
    latest_version = latest.version if latest else 0
    if manifest.root_version != root.version:
        raise VersionConflictError(
            f"manifest names root {manifest.root_version}; the server's current root is"
            f" {root.version}: make the manifest under root {root.version}",
            latest_version=latest_version,
        )
    if manifest.version != latest_version + 1:
        raise VersionConflictError(
            f"manifest version {manifest.version} is not the next version; latest is"
            f" {latest_version}",
            latest_version=latest_version,
        )
    expected_previous = latest.payload_sha256 if latest else None
    if manifest.previous != expected_previous:
        raise VersionConflictError(
            f"previous is {manifest.previous}, but the latest payload hash is {expected_previous}",
            latest_version=latest_version,
        )
    return verified


def verify_history_entry(
    verified: VerifiedManifest, *, version: int, previous: ManifestFloor | None
) -> None:
    """An auditor's check of one published manifest, long after the fact, once its
    signatures have met the publisher threshold of the root it was published under
    (``verify_manifest_signatures``): it is the version it is listed as, names that root,
    and chains to the payload of ``version - 1`` (``previous``; None for version 1).
    No clock: history is expected to have expired."""
    if version > 1 and (previous is None or previous.version != version - 1):
        raise ValueError("previous must be the manifest state of version - 1")
    manifest = verified.manifest
    if manifest.version != version:
        raise VerificationError(
            f"the envelope listed as version {version} holds manifest version {manifest.version}",
            code="version_mismatch",
        )
    if manifest.root_version != verified.under_root:
        raise VerificationError(
            f"manifest {version} names root {manifest.root_version}, but was listed as"
            f" published under root {verified.under_root}",
            code="root_version_mismatch",
        )
    expected_previous = previous.payload_sha256 if previous else None
    if manifest.previous != expected_previous:
        raise ForkError(
            f"manifest {version} does not chain to manifest {version - 1}: previous is"
            f" {manifest.previous}, but the payload hash of {version - 1} is"
            f" {expected_previous}"
        )


def advance_time_floor(
    floor: datetime | None, accepted: Manifest, reference_time: datetime, skew: timedelta
) -> datetime:
    """The newest ``issued_at`` accepted, never beyond ``reference_time``, so that a
    manifest with a wild ``issued_at`` cannot push the floor into the future.

    No skew is added: callers judge with ``effective_time`` (never earlier than the
    floor), so a cap of ``reference_time + skew`` let every re-acceptance of such a
    manifest move the floor another ``skew`` past the real clock until every honest
    manifest looked expired. ``skew`` is kept for the callers' signature only."""
    del skew  # see above: adding it would let the floor ratchet
    candidate = min(accepted.issued_at, reference_time)
    return candidate if floor is None else max(floor, candidate)


def effective_time(now: datetime, floor: datetime | None) -> datetime:
    """A local clock earlier than the floor is treated as the floor (no clock rollback)."""
    _check_utc(now)
    return now if floor is None or now >= floor else floor


@dataclass
class TrustedSet:
    """A client's trusted roots and manifest for one refresh judged at ``reference_time``.

    Built from the shipped anchor root; ``update_root`` walks forward one version at a
    time; ``update_manifest`` applies the acceptance rules. Nothing here does I/O: the
    caller fetches bytes and persists state after a successful update.
    """

    roots: list[VerifiedRoot]
    reference_time: datetime
    skew: timedelta = DEFAULT_SKEW
    floor: ManifestFloor | None = None
    manifest: VerifiedManifest | None = None
    max_root_rotations: int = MAX_ROOT_ROTATIONS
    floor_reset: bool = False
    _rotations: int = field(default=0, repr=False)

    @classmethod
    def from_anchor(
        cls,
        anchor: bytes,
        *,
        reference_time: datetime,
        skew: timedelta = DEFAULT_SKEW,
        max_root_rotations: int = MAX_ROOT_ROTATIONS,
    ) -> TrustedSet:
        _check_utc(reference_time)
        return cls(
            roots=[verify_anchor_root(anchor)],
            reference_time=reference_time,
            skew=skew,
            max_root_rotations=max_root_rotations,
        )

    @property
    def root(self) -> Root:
        return self.roots[-1].root

    def update_root(self, data: bytes) -> VerifiedRoot:
        """Accept root N+1; a publisher role change forgets the manifest floor."""
        if self._rotations >= self.max_root_rotations:
            raise VerificationError(
                f"more than {self.max_root_rotations} root rotations in one refresh",
                code="too_many_roots",
            )
        new = verify_next_root(self.root, data)
        if is_publisher_changed(self.root, new.root):
            self.floor = None
            self.floor_reset = True
        self.roots.append(new)
        self._rotations += 1
        return new

    def update_manifest(self, data: bytes | VerifiedManifest) -> VerifiedManifest:
        verified = accept_manifest(
            self.root, data, floor=self.floor, reference_time=self.reference_time, skew=self.skew
        )
        self.manifest = verified
        self.floor = ManifestFloor(verified.version, verified.payload_sha256)
        return verified
