"""Builders for real signed roots and manifests, shared by every test module.

Nothing here is a mock: documents are built with pinserver's own types and signed
with real Ed25519 keys, exactly as the CLI does.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from pinserver.documents import Manifest, Pin, PinSet, Role, Root
from pinserver.envelope import MANIFEST_TYPE, ROOT_TYPE, Envelope, sign
from pinserver.keys import PrivateKey

NOW = datetime(2026, 12, 3, 12, 0, 0, tzinfo=UTC)


def fake_pin(label: str) -> str:
    """A well-formed pin (base64 of 32 bytes) derived from a label."""
    return base64.b64encode(hashlib.sha256(label.encode()).digest()).decode()


def pinset(
    host: str,
    pins: Sequence[str] = (),
    *,
    backup: Sequence[str] = (),
    mode: str = "enforce",
    include_subdomains: bool = False,
    expires: datetime | None = None,
) -> PinSet:
    primary = list(pins) or [fake_pin(host + "-primary")]
    backups = list(backup) or [fake_pin(host + "-backup")]
    return PinSet(
        host=host,
        include_subdomains=include_subdomains,
        mode=mode,  # type: ignore[arg-type]
        expires=expires or NOW + timedelta(days=365),
        pins=tuple(Pin(p, "primary") for p in primary) + tuple(Pin(b, "backup") for b in backups),
    )


def sign_all(envelope: Envelope, keys: Sequence[PrivateKey]) -> Envelope:
    for key in keys:
        envelope = sign(envelope, key)
    return envelope


def root_document(
    version: int,
    root_keys: Sequence[PrivateKey],
    publisher_keys: Sequence[PrivateKey],
    *,
    root_threshold: int = 1,
    publisher_threshold: int = 1,
    issued_at: datetime = NOW - timedelta(days=1),
    expires: datetime = NOW + timedelta(days=365),
) -> Root:
    keys = {k.keyid: k.public_key for k in (*root_keys, *publisher_keys)}
    return Root(
        version=version,
        issued_at=issued_at,
        expires=expires,
        keys=keys,
        roles={
            "root": Role(tuple(k.keyid for k in root_keys), root_threshold),
            "publisher": Role(tuple(k.keyid for k in publisher_keys), publisher_threshold),
        },
    )


def root_envelope(root: Root, signers: Sequence[PrivateKey]) -> bytes:
    return sign_all(Envelope(ROOT_TYPE, root.to_bytes()), signers).to_bytes()


def manifest_document(
    version: int,
    *,
    previous: str | None = None,
    root_version: int = 1,
    pinsets: Sequence[PinSet] | None = None,
    issued_at: datetime = NOW - timedelta(hours=1),
    not_before: datetime | None = None,
    expires: datetime = NOW + timedelta(days=30),
    poll_interval: int = 3600,
    report_uri: str | None = None,
) -> Manifest:
    return Manifest(
        version=version,
        root_version=root_version,
        issued_at=issued_at,
        not_before=not_before or issued_at,
        expires=expires,
        previous=previous,
        poll_interval=poll_interval,
        report_uri=report_uri,
        pinsets=tuple(pinsets if pinsets is not None else [pinset("updates.example.com")]),
    )


def manifest_envelope(manifest: Manifest, signers: Sequence[PrivateKey]) -> bytes:
    return sign_all(Envelope(MANIFEST_TYPE, manifest.to_bytes()), signers).to_bytes()


def payload_hash(envelope_bytes: bytes) -> str:
    return Envelope.from_bytes(envelope_bytes).payload_sha256


@dataclass
class Deployment:
    """A root chain plus a hash-chained manifest series, with their keys.

    ``publish()`` appends the next manifest; ``rotate_publisher()`` and
    ``rotate_root()`` append the next root, signed by old and new root keys.
    """

    root_keys: list[PrivateKey] = field(default_factory=lambda: [PrivateKey.generate()])
    publisher_keys: list[PrivateKey] = field(default_factory=lambda: [PrivateKey.generate()])
    root_threshold: int = 1
    publisher_threshold: int = 1
    roots: list[bytes] = field(default_factory=list)
    manifests: list[bytes] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.roots:
            self.roots.append(self._make_root(1, self.root_keys))

    def _make_root(self, version: int, signers: Sequence[PrivateKey]) -> bytes:
        doc = root_document(
            version,
            self.root_keys,
            self.publisher_keys,
            root_threshold=self.root_threshold,
            publisher_threshold=self.publisher_threshold,
        )
        return root_envelope(doc, signers)

    @property
    def root_version(self) -> int:
        return len(self.roots)

    @property
    def manifest_version(self) -> int:
        return len(self.manifests)

    def next_manifest(
        self, *, signers: Sequence[PrivateKey] | None = None, **kwargs: object
    ) -> bytes:
        """The next manifest in the chain, without appending it."""
        version = self.manifest_version + 1
        previous = payload_hash(self.manifests[-1]) if self.manifests else None
        doc = manifest_document(
            version,
            previous=previous,
            root_version=self.root_version,
            **kwargs,  # type: ignore[arg-type]
        )
        return manifest_envelope(doc, signers if signers is not None else self.publisher_keys)

    def publish(self, **kwargs: object) -> bytes:
        envelope = self.next_manifest(**kwargs)  # type: ignore[arg-type]
        self.manifests.append(envelope)
        return envelope

    def rotate_publisher(self, new_keys: Sequence[PrivateKey] | None = None) -> bytes:
        self.publisher_keys = list(new_keys) if new_keys else [PrivateKey.generate()]
        root = self._make_root(self.root_version + 1, self.root_keys)
        self.roots.append(root)
        return root

    def rotate_root(self, new_keys: Sequence[PrivateKey] | None = None) -> bytes:
        old = self.root_keys
        self.root_keys = list(new_keys) if new_keys else [PrivateKey.generate()]
        root = self._make_root(self.root_version + 1, [*old, *self.root_keys])
        self.roots.append(root)
        return root
