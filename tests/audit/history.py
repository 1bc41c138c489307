"""A small, realistic publication history written into a real SQLite store.

Everything is dated relative to ``now`` so that the same story works for the Flask
test client (a fixed clock) and for a real gunicorn (the wall clock): two roots (the
publisher key rotated in between), four manifests with hosts and pins added, removed
and changed, one publication forced with a reason, a pin note carrying markup.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from pinserver.documents import Manifest, Pin, PinSet, Root
from pinserver.envelope import Envelope
from pinserver.keys import PrivateKey
from pinserver.store.sqlite import DATABASE_FILE, SQLiteStore
from pinserver.trust import (
    ManifestFloor,
    verify_anchor_root,
    verify_publication,
    verify_root_rotation,
)
from tests.factory import (
    fake_pin,
    manifest_document,
    manifest_envelope,
    payload_hash,
    root_document,
    root_envelope,
)

HOSTILE_NOTE = '<script>alert("pwned")</script> & <b>bold</b>'
FORCE_REASON = "emergency: updates.example.com decommissioned, lint override"

A_PRIMARY = fake_pin("api-primary")
A_BACKUP = fake_pin("api-backup")
A_NEW = fake_pin("api-new-key")
U_PRIMARY = fake_pin("updates-primary")
U_BACKUP = fake_pin("updates-backup")
C_PRIMARY = fake_pin("cdn-primary")
C_BACKUP = fake_pin("cdn-backup")


def _pinset(host: str, pins: list[Pin], *, expires: datetime, mode: str = "enforce") -> PinSet:
    return PinSet(
        host=host,
        include_subdomains=False,
        mode=mode,  # type: ignore[arg-type]
        expires=expires,
        pins=tuple(pins),
    )


@dataclass
class History:
    """The story's keys, envelopes and key names, and where the store is."""

    data_dir: Path
    now: datetime
    root_keys: list[PrivateKey] = field(default_factory=lambda: [PrivateKey.generate()])
    alice: PrivateKey = field(default_factory=PrivateKey.generate)
    bob: PrivateKey = field(default_factory=PrivateKey.generate)
    roots: list[bytes] = field(default_factory=list)
    manifests: list[bytes] = field(default_factory=list)

    @property
    def db_path(self) -> Path:
        return self.data_dir / DATABASE_FILE

    def key_names(self) -> dict[str, str]:
        return {
            self.alice.keyid: "alice (publisher)",
            self.bob.keyid: "bob (publisher)",
            self.root_keys[0].keyid: "offline root A",
        }

    def write_key_names(self, path: Path) -> Path:
        path.write_text(json.dumps(self.key_names()), encoding="utf-8")
        return path

    # --- documents --------------------------------------------------------------------

    def _root(self, version: int, publisher: PrivateKey) -> bytes:
        doc: Root = root_document(
            version,
            self.root_keys,
            [publisher],
            issued_at=self.now - timedelta(days=10),
            expires=self.now + timedelta(days=365),
        )
        return root_envelope(doc, self.root_keys)

    def manifest(
        self, version: int, pinsets: list[PinSet], *, signer: PrivateKey, root_version: int
    ) -> bytes:
        doc: Manifest = manifest_document(
            version,
            previous=payload_hash(self.manifests[-1]) if self.manifests else None,
            root_version=root_version,
            pinsets=pinsets,
            issued_at=self.now - timedelta(hours=1),
            expires=self.now + timedelta(days=30),
        )
        return manifest_envelope(doc, [signer])

    # --- the story --------------------------------------------------------------------

    def build(self) -> History:
        """Write the whole story into the SQLite store in ``data_dir``."""
        later = self.now + timedelta(days=200)
        soon = self.now + timedelta(days=5)
        store = SQLiteStore(self.data_dir)
        try:
            self.roots.append(self._root(1, self.alice))
            store.install_first_root(verify_anchor_root(self.roots[0]), now=self.now)
            self._publish(
                store,
                [
                    _pinset(
                        "updates.example.com",
                        [Pin(U_PRIMARY, "primary"), Pin(U_BACKUP, "backup")],
                        expires=later,
                    ),
                    _pinset(
                        "api.example.com",
                        [Pin(A_PRIMARY, "primary", "current leaf key"), Pin(A_BACKUP, "backup")],
                        expires=later,
                    ),
                ],
                signer=self.alice,
            )
            # version 2: api.example.com rotates its primary key; cdn.example.com is added
            # with pins that expire in 5 days (an expiry warning).
            self._publish(
                store,
                [
                    _pinset(
                        "updates.example.com",
                        [Pin(U_PRIMARY, "primary"), Pin(U_BACKUP, "backup")],
                        expires=later,
                    ),
                    _pinset(
                        "api.example.com",
                        [Pin(A_NEW, "primary", HOSTILE_NOTE), Pin(A_BACKUP, "backup")],
                        expires=later,
                        mode="report",
                    ),
                    _pinset(
                        "cdn.example.com",
                        [Pin(C_PRIMARY, "primary"), Pin(C_BACKUP, "backup")],
                        expires=soon,
                    ),
                ],
                signer=self.alice,
            )
            # root 2 moves the publisher role from alice to bob
            rotated = self._root(2, self.bob)
            self.roots.append(rotated)
            store.rotate_root(
                lambda current: verify_root_rotation(
                    _root_of(current.envelope), rotated, reference_time=self.now
                ),
                now=self.now,
                source="127.0.0.1",
            )
            # version 3 (forced): updates.example.com removed
            remaining = [
                _pinset(
                    "api.example.com",
                    [Pin(A_NEW, "primary", HOSTILE_NOTE), Pin(A_BACKUP, "backup")],
                    expires=later,
                    mode="report",
                ),
                _pinset(
                    "cdn.example.com",
                    [Pin(C_PRIMARY, "primary"), Pin(C_BACKUP, "backup")],
                    expires=soon,
                ),
            ]
            self._publish(store, remaining, signer=self.bob, reason=FORCE_REASON)
            # version 4: a renewal, same pins
            self._publish(store, remaining, signer=self.bob)
        finally:
            store.close()
        return self

    def _publish(
        self,
        store: SQLiteStore,
        pinsets: list[PinSet],
        *,
        signer: PrivateKey,
        reason: str | None = None,
    ) -> None:
        raw = self.manifest(
            len(self.manifests) + 1, pinsets, signer=signer, root_version=len(self.roots)
        )
        store.publish_manifest(
            lambda root, latest: verify_publication(
                _root_of(root.envelope),
                raw,
                latest=ManifestFloor(latest.version, latest.payload_sha256) if latest else None,
                reference_time=self.now,
            ),
            now=self.now,
            source="127.0.0.1",
            reason=reason,
        )
        self.manifests.append(raw)

    # --- tampering, as someone with write access to the database file would -----------

    def tamper(self, version: int, **columns: object) -> None:
        """Overwrite columns of a stored manifest row behind the store's back (the
        append-only triggers are dropped first, as an attacker with the file would)."""
        conn = sqlite3.connect(self.db_path)
        try:
            conn.execute("DROP TRIGGER IF EXISTS manifests_append_only_u")
            assignments = ", ".join(f"{name} = ?" for name in columns)
            conn.execute(
                f"UPDATE manifests SET {assignments} WHERE version = ?",  # noqa: S608
                (*columns.values(), version),
            )
            conn.commit()
        finally:
            conn.close()

    def flip_signature_byte(self, version: int) -> None:
        """Flip one bit of the first signature of ``version``'s stored envelope."""
        envelope = Envelope.from_bytes(self.manifests[version - 1])
        first = envelope.signatures[0]
        damaged = bytes([first.sig[0] ^ 0x01]) + first.sig[1:]
        tampered = Envelope(
            envelope.payload_type,
            envelope.payload,
            (type(first)(first.keyid, damaged), *envelope.signatures[1:]),
        )
        self.tamper(version, envelope=tampered.to_bytes())


def _root_of(envelope: bytes) -> Root:
    return Root.from_bytes(Envelope.from_bytes(envelope).payload)
