"""Publish a long manifest history into a SQLite store, for the history, publish and
memory benchmarks.

Every version goes through the server's own acceptance: ``verify_publication`` (the
rule behind ``POST /v1/manifests``) runs inside ``SQLiteStore.publish_manifest``'s
write transaction, one committed transaction per version, exactly as a publication
over HTTP stores it. Versions are small (two two-pin sets whose pins change every
version); ``--latest-pinsets`` makes the last one large (the memory benchmark wants
the largest manifest the 1 MiB cap admits). One publisher key signs everything; its
PEM and the root are written next to the store so that later scripts can continue
the chain.

    python -m bench.make_store DIR --versions 100000 [--latest-pinsets 2947]

Publishing is timed at checkpoints, which gives publish latency (signing excluded)
against the number of versions already stored.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from bench import _documents
from bench._common import median, write_results
from pinserver.documents import Root
from pinserver.envelope import MAX_ENVELOPE_BYTES
from pinserver.keys import PrivateKey
from pinserver.store.base import StoredManifest, StoredRoot
from pinserver.store.sqlite import SQLiteStore
from pinserver.trust import ManifestFloor, verify_anchor_root, verify_publication
from tests.factory import NOW, root_document, root_envelope

ROOT_FILE = "root-1.json"
PUBLISHER_FILE = "publisher.pem"
SMALL_PINSETS = 2
CHECKPOINT_SAMPLES = 20


def _verifier(root: Root, data: bytes) -> Callable[[StoredRoot, StoredManifest | None], Any]:
    def verify(_current: StoredRoot, latest: StoredManifest | None) -> Any:
        floor = ManifestFloor(latest.version, latest.payload_sha256) if latest else None
        return verify_publication(root, data, latest=floor, reference_time=NOW)

    return verify


class Publisher:
    """Continues the chain of a store made by this script (or starts a new one)."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.store = SQLiteStore(data_dir)
        root_path, key_path = data_dir / ROOT_FILE, data_dir / PUBLISHER_FILE
        if root_path.exists():
            self.key = PrivateKey.from_pem(key_path.read_bytes(), None)
            root_bytes = root_path.read_bytes()
        else:
            root_key, self.key = PrivateKey.generate(), PrivateKey.generate()
            root_bytes = root_envelope(root_document(1, [root_key], [self.key]), [root_key])
            self.store.install_first_root(verify_anchor_root(root_bytes), now=NOW)
            root_path.write_bytes(root_bytes)
            key_path.write_bytes(self.key.to_pem(None))
        self.root_bytes = root_bytes
        self.root = verify_anchor_root(root_bytes).root
        latest = self.store.latest_manifest()
        self.version = latest.version if latest else 0
        self.previous = latest.payload_sha256 if latest else None

    def sign_next(self, pinsets: int = SMALL_PINSETS) -> bytes:
        """The next manifest, signed (not timed as publishing)."""
        return _documents.manifest(
            pinsets,
            [self.key],
            version=self.version + 1,
            previous=self.previous,
            salt=f"v{self.version + 1}-",
            expires_days=365,
        )

    def publish(self, data: bytes) -> float:
        """Store one signed manifest through the server's acceptance; seconds taken."""
        start = time.perf_counter()
        stored = self.store.publish_manifest(
            _verifier(self.root, data), now=NOW + timedelta(seconds=self.version)
        )
        elapsed = time.perf_counter() - start
        self.version, self.previous = stored.version, stored.payload_sha256
        return elapsed

    def close(self) -> None:
        self.store.close()


def fill(
    data_dir: Path,
    versions: int,
    *,
    latest_pinsets: int | None = None,
    checkpoints: tuple[int, ...] = (),
    progress: bool = True,
) -> dict[str, Any]:
    """Publish until the store holds ``versions`` manifests. Once the store holds at
    least a checkpoint's number of versions, the next publishes are timed (their
    median is keyed by the number of versions stored before them)."""
    publisher = Publisher(data_dir)
    timings: dict[int, float] = {}
    pending = sorted(c for c in checkpoints if c > publisher.version)
    passed = [c for c in checkpoints if c <= publisher.version]
    if passed:  # the store already holds more: time the next publishes instead
        pending.insert(0, max(passed))
    start = time.perf_counter()
    try:
        target = versions - (1 if latest_pinsets else 0)
        while publisher.version < target:
            stored = publisher.version
            if pending and stored >= pending[0]:
                pending.pop(0)
                samples = []
                for _ in range(min(CHECKPOINT_SAMPLES, target - stored)):
                    samples.append(publisher.publish(publisher.sign_next()))
                timings[stored] = median(samples)
                continue
            publisher.publish(publisher.sign_next())
            if progress and publisher.version % 10_000 == 0:
                print(f"  {publisher.version} versions ({time.perf_counter() - start:.0f} s)")
        if latest_pinsets and publisher.version < versions:
            big = publisher.sign_next(latest_pinsets)
            if len(big) > MAX_ENVELOPE_BYTES:
                raise ValueError(f"{latest_pinsets} pin sets do not fit the 1 MiB cap")
            publisher.publish(big)
        return {
            "versions": publisher.version,
            "seconds": round(time.perf_counter() - start, 1),
            "publish_ms_at_stored_versions": {
                str(k): round(v * 1000, 3) for k, v in sorted(timings.items())
            },
            "latest_payload_sha256": publisher.previous,
        }
    finally:
        publisher.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("--versions", type=int, required=True)
    parser.add_argument("--latest-pinsets", type=int, default=None)
    args = parser.parse_args()
    checkpoints = tuple(
        n for n in (0, 100, 1_000, 10_000, 50_000, 100_000 - 100) if n < args.versions
    )
    result = fill(
        args.data_dir, args.versions, latest_pinsets=args.latest_pinsets, checkpoints=checkpoints
    )
    print(result)
    write_results(f"make_store_{args.versions}", result)


if __name__ == "__main__":
    main()
