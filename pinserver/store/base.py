"""The store interface every backend implements.

A store keeps bytes exactly as they were accepted and knows nothing of signatures:
verification is passed in as a callback, which the store runs *inside* its write
transaction (check latest, verify, insert), so that concurrent publishers of the
same version get exactly one success and ``VersionConflictError`` for the rest.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from pinserver.errors import StoreError
from pinserver.trust import VerifiedManifest, VerifiedRoot


class NotInitialisedError(StoreError):
    """The store has no root 1 yet: run ``pinserver init --root ROOT --data DIR``."""

    code = "not_initialised"
    status = 503


@dataclass(frozen=True)
class StoredRoot:
    version: int
    envelope: bytes
    payload_sha256: str
    published_at: datetime


@dataclass(frozen=True)
class StoredManifest:
    version: int
    root_version: int
    payload_sha256: str
    published_at: datetime
    keyids: tuple[str, ...]
    envelope: bytes
    source: str | None = None
    reason: str | None = None


@dataclass(frozen=True)
class StoredReport:
    id: int
    received_at: datetime
    client_address: str
    body: bytes


@dataclass(frozen=True)
class StoreHead:
    """What the hot path compares to decide whether its cached bytes are stale."""

    root_version: int
    manifest_version: int


# Run inside the write transaction: given the current root and the latest manifest
# (None when there is none yet), verify the candidate or raise.
ManifestVerifier = Callable[[StoredRoot, StoredManifest | None], VerifiedManifest]
RootVerifier = Callable[[StoredRoot], VerifiedRoot]


class Store(Protocol):
    def close(self) -> None: ...

    def head(self) -> StoreHead:
        """Latest root and manifest versions (0 when none): one cheap query."""
        ...

    def install_first_root(self, root: VerifiedRoot, *, now: datetime) -> bool:
        """Install root 1. True if installed, False if the same bytes were already there;
        raises ``VersionConflictError`` if a different root 1 is installed."""
        ...

    def latest_root(self) -> StoredRoot | None: ...

    def get_root(self, version: int) -> StoredRoot | None: ...

    def roots(self) -> list[StoredRoot]: ...

    def rotate_root(
        self, verify: RootVerifier, *, now: datetime, source: str | None = None
    ) -> StoredRoot:
        """Append root N+1 if ``verify(current)`` passes, inside the write transaction;
        ``source`` (the publisher's address) is recorded with it."""
        ...

    def latest_manifest(self) -> StoredManifest | None: ...

    def get_manifest(self, version: int) -> StoredManifest | None: ...

    def manifests_after(self, after: int, limit: int) -> list[StoredManifest]: ...

    def publish_manifest(
        self,
        verify: ManifestVerifier,
        *,
        now: datetime,
        source: str | None = None,
        reason: str | None = None,
    ) -> StoredManifest: ...

    def add_report(self, *, client_address: str, body: bytes, now: datetime) -> int: ...

    def reports(self, *, after: int = 0, limit: int = 100) -> list[StoredReport]: ...

    def check_integrity(self) -> None:
        """Raise ``StoreError`` (code ``store_corrupt``) if the store is damaged: the
        backend's own check, contiguous versions, and every stored payload re-hashed."""
        ...
