"""Offline verification of a server's whole publication history. Pure: bytes in, report out.

An auditor downloads every root and every manifest a server has published and checks,
with nothing but a root they trust (``anchor_root``), that:

* the roots form one chain, walked forward from the anchor one version at a time
  (SPEC section 4), and the server's copy of the anchor's version is the anchor;
* each manifest meets the publisher threshold of the root it names, and that root is
  one the walk reached;
* versions run 1, 2, 3... with no gap and no repeat (position ``i`` holds version
  ``i + 1``), ``root_version`` never goes backwards, and each ``previous`` is the
  SHA-256 of the payload before it: the hash chain of SPEC section 5.

No clock: history is expected to contain expired manifests. Verification stops at the
first break in each chain (a later link cannot be judged once one is broken), and the
report names it. Manifests published under a root older than the anchor cannot be
verified from it (signatures chain forward only); audit from root 1 to cover them.

Used by ``pinserver history`` and by the history benchmark.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from pinserver.diff import ManifestDiff, diff_manifests
from pinserver.documents import Manifest
from pinserver.envelope import Envelope
from pinserver.errors import PinserverError, SignatureError, VerificationError
from pinserver.trust import (
    ManifestFloor,
    VerifiedManifest,
    VerifiedRoot,
    verify_anchor_root,
    verify_history_entry,
    verify_manifest_signatures,
    verify_next_root,
)

BreakKind = Literal["root", "manifest"]


@dataclass(frozen=True)
class HistoryBreak:
    """The first version at which a chain does not verify, and why."""

    kind: BreakKind
    version: int
    code: str
    message: str

    def to_dict(self) -> dict[str, object]:
        return {
            "kind": self.kind,
            "version": self.version,
            "code": self.code,
            "message": self.message,
        }


@dataclass(frozen=True)
class HistoryEntry:
    """One verified manifest and what it changed since the version before it."""

    verified: VerifiedManifest
    diff: ManifestDiff

    @property
    def version(self) -> int:
        return self.verified.version

    @property
    def manifest(self) -> Manifest:
        return self.verified.manifest

    @property
    def root_version(self) -> int:
        return self.verified.under_root

    @property
    def issued_at(self) -> datetime:
        return self.verified.manifest.issued_at

    @property
    def signed_by(self) -> frozenset[str]:
        return self.verified.signed_by

    @property
    def payload_sha256(self) -> str:
        return self.verified.payload_sha256

    @property
    def hosts_changed(self) -> tuple[str, ...]:
        """Hosts added, removed or changed by this version, in manifest order."""
        return (
            tuple(p.host for p in self.diff.hosts_added)
            + tuple(c.host for c in self.diff.hosts_changed)
            + tuple(p.host for p in self.diff.hosts_removed)
        )


@dataclass(frozen=True)
class HistoryReport:
    """What :func:`verify_history` found.

    ``roots`` are the verified roots from the anchor on; ``entries`` the verified
    manifests from version 1 up to (not including) the first bad one. ``breaks`` holds
    at most one root break and one manifest break, root first.
    """

    anchor_version: int
    roots: tuple[VerifiedRoot, ...]
    entries: tuple[HistoryEntry, ...]
    breaks: tuple[HistoryBreak, ...]
    roots_total: int
    manifests_total: int

    @property
    def ok(self) -> bool:
        return not self.breaks

    @property
    def first_break(self) -> HistoryBreak | None:
        """The break to name first: the root chain's, else the manifest chain's."""
        return self.breaks[0] if self.breaks else None

    def entry(self, version: int) -> HistoryEntry | None:
        """The verified entry for ``version``, if verification reached it."""
        if 1 <= version <= len(self.entries):
            return self.entries[version - 1]
        return None


def _describe(error: PinserverError) -> tuple[str, str]:
    return error.code, error.message


def _walk_roots(
    anchor: VerifiedRoot, roots: Sequence[bytes]
) -> tuple[list[VerifiedRoot], HistoryBreak | None]:
    k = anchor.version
    if len(roots) < k:
        return [], HistoryBreak(
            "root",
            k,
            "root_missing",
            f"the server serves {len(roots)} root(s), but the trusted root is version {k}",
        )
    try:
        served = Envelope.from_bytes(roots[k - 1])
    except PinserverError as e:
        code, message = _describe(e)
        return [], HistoryBreak("root", k, code, f"the server's root {k} is unreadable: {message}")
    if served.payload_sha256 != anchor.envelope.payload_sha256:
        return [], HistoryBreak(
            "root",
            k,
            "root_substituted",
            f"the server's root {k} is not the trusted root {k} (payload sha256"
            f" {served.payload_sha256}, trusted {anchor.envelope.payload_sha256})",
        )
    walked = [anchor]
    for version in range(k + 1, len(roots) + 1):
        try:
            walked.append(verify_next_root(walked[-1].root, roots[version - 1]))
        except PinserverError as e:
            code, message = _describe(e)
            return walked, HistoryBreak("root", version, code, f"root {version}: {message}")
    return walked, None


def _peek_root_version(raw: bytes) -> int | None:
    """The root version an unverified manifest claims, for an error message only."""
    try:
        return Manifest.from_bytes(Envelope.from_bytes(raw).payload).root_version
    except PinserverError:
        return None


def _unverifiable(
    version: int,
    raw: bytes,
    *,
    error: PinserverError,
    anchor_version: int,
    last_root: int,
    previous_root: int,
) -> HistoryBreak:
    claimed = _peek_root_version(raw)
    if claimed is not None and claimed < anchor_version:
        return HistoryBreak(
            "manifest",
            version,
            "before_anchor",
            f"manifest {version} was published under root {claimed}, older than the trusted"
            f" root {anchor_version}: signatures chain forward only, so audit from root 1",
        )
    if claimed is not None and claimed < previous_root:
        return HistoryBreak(
            "manifest",
            version,
            "root_version_backwards",
            f"manifest {version} names root {claimed}, older than root {previous_root} named"
            f" by manifest {version - 1}",
        )
    if claimed is not None and claimed > last_root:
        return HistoryBreak(
            "manifest",
            version,
            "unknown_root_version",
            f"manifest {version} names root {claimed}, but the verified root chain ends at"
            f" root {last_root}",
        )
    code, message = _describe(error)
    return HistoryBreak("manifest", version, code, f"manifest {version}: {message}")


def _verify_one(
    raw: bytes, candidates: Sequence[VerifiedRoot]
) -> tuple[VerifiedManifest | None, PinserverError | None]:
    """Signatures under the root the manifest names. Which root that is can only be
    trusted once a signature check has passed, so the candidates (the verified roots
    from the previous manifest's root on) are tried in turn; when publisher keys are
    shared between roots, the manifest is then checked under the root it names."""
    first_error: PinserverError | None = None
    by_version = {r.version: r for r in candidates}
    for candidate in candidates:
        try:
            verified = verify_manifest_signatures(candidate.root, raw)
        except SignatureError as e:
            first_error = first_error or e
            continue
        except PinserverError as e:
            return None, e  # not a key question: the envelope itself is bad
        named = by_version.get(verified.manifest.root_version)
        if named is not None and named.version != candidate.version:
            try:
                verified = verify_manifest_signatures(named.root, raw)
            except PinserverError as e:
                return None, e
        return verified, None
    return None, first_error or VerificationError("no verified root to check it under")


def verify_history(
    anchor_root: bytes, roots: Sequence[bytes], manifests: Sequence[bytes]
) -> HistoryReport:
    """Verify a server's whole history offline.

    Args:
        anchor_root: a root envelope the auditor trusts (root 1 to audit everything).
            It must meet its own root threshold; a bad anchor raises, as it is the
            auditor's own input and not the server's.
        roots: every root envelope the server serves, ``roots[i]`` being version ``i+1``.
        manifests: every manifest envelope, ``manifests[i]`` being version ``i+1``.

    Returns:
        A :class:`HistoryReport`; ``report.ok`` when both chains verify end to end.
    """
    anchor = verify_anchor_root(anchor_root)
    walked, root_break = _walk_roots(anchor, roots)
    entries: list[HistoryEntry] = []
    manifest_break: HistoryBreak | None = None
    floor: ManifestFloor | None = None
    previous: Manifest | None = None
    previous_root = anchor.version
    for version, raw in enumerate(manifests, start=1):
        candidates = [r for r in walked if r.version >= previous_root]
        verified, error = _verify_one(raw, candidates)
        if verified is None:
            manifest_break = _unverifiable(
                version,
                raw,
                error=error or VerificationError("unverifiable"),
                anchor_version=anchor.version,
                last_root=walked[-1].version if walked else 0,
                previous_root=previous_root,
            )
            break
        try:
            verify_history_entry(verified, version=version, previous=floor)
        except PinserverError as e:
            code, message = _describe(e)
            manifest_break = HistoryBreak("manifest", version, code, message)
            break
        entries.append(HistoryEntry(verified, diff_manifests(previous, verified.manifest)))
        floor = ManifestFloor(version, verified.payload_sha256)
        previous = verified.manifest
        previous_root = verified.under_root
    breaks = tuple(b for b in (root_break, manifest_break) if b is not None)
    return HistoryReport(
        anchor_version=anchor.version,
        roots=tuple(walked),
        entries=tuple(entries),
        breaks=breaks,
        roots_total=len(roots),
        manifests_total=len(manifests),
    )
