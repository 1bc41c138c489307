"""A python-tuf repository equivalent to a pinserver deployment, for the client comparison.

Four top-level roles, one Ed25519 key each (root, timestamp, snapshot, targets), with
consistent snapshots, and the pinserver manifest envelope as the one target
``manifest.json``. Metadata is written compact (no indentation), which is the
smallest form python-tuf serves: the comparison is on bytes, so the peer gets its
best case. Publishing version N writes targets, snapshot and the target file first
and replaces ``timestamp.json`` last, as a TUF repository must.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from securesystemslib.signer import CryptoSigner
from tuf.api.metadata import (
    Metadata,
    MetaFile,
    Root,
    Snapshot,
    TargetFile,
    Targets,
    Timestamp,
)
from tuf.api.serialization.json import JSONSerializer

TARGET_NAME = "manifest.json"
_COMPACT = JSONSerializer(compact=True)


def _write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


@dataclass
class TufRepository:
    """Signed TUF metadata for a series of manifest versions, written under ``base``."""

    base: Path
    expires: datetime = field(default_factory=lambda: datetime.now(UTC) + timedelta(days=30))
    signers: dict[str, CryptoSigner] = field(default_factory=dict)
    root_bytes: bytes = b""

    def __post_init__(self) -> None:
        for role in (Root.type, Timestamp.type, Snapshot.type, Targets.type):
            self.signers[role] = CryptoSigner.generate_ed25519()
        root = Root(expires=self.expires, consistent_snapshot=True)
        for role, signer in self.signers.items():
            root.add_key(signer.public_key, role)
        self.root_bytes = self._sign(root)
        self.metadata_dir.mkdir(parents=True, exist_ok=True)
        self.targets_dir.mkdir(parents=True, exist_ok=True)
        _write(self.metadata_dir / "1.root.json", self.root_bytes)

    @property
    def metadata_dir(self) -> Path:
        return self.base / "metadata"

    @property
    def targets_dir(self) -> Path:
        return self.base / "targets"

    def _sign(self, signed: Root | Timestamp | Snapshot | Targets) -> bytes:
        md = Metadata(signed)
        md.sign(self.signers[signed.type])
        return md.to_bytes(_COMPACT)

    def signed_version(self, version: int, manifest: bytes) -> dict[str, bytes]:
        """Every file that publishing ``manifest`` as version ``version`` writes."""
        targets = Targets(version=version, expires=self.expires)
        targets.targets[TARGET_NAME] = TargetFile.from_data(TARGET_NAME, manifest, ["sha256"])
        snapshot = Snapshot(version=version, expires=self.expires)
        snapshot.meta["targets.json"] = MetaFile(version=version)
        timestamp = Timestamp(version=version, expires=self.expires)
        timestamp.snapshot_meta = MetaFile(version=version)
        digest = hashlib.sha256(manifest).hexdigest()
        return {
            f"targets/{digest}.{TARGET_NAME}": manifest,
            f"metadata/{version}.targets.json": self._sign(targets),
            f"metadata/{version}.snapshot.json": self._sign(snapshot),
            "metadata/timestamp.json": self._sign(timestamp),
        }

    def publish(self, files: dict[str, bytes]) -> None:
        """Write a version prepared by :meth:`signed_version`; timestamp.json goes last."""
        for name, data in files.items():
            if name != "metadata/timestamp.json":
                _write(self.base / name, data)
        _write(self.base / "metadata/timestamp.json", files["metadata/timestamp.json"])
