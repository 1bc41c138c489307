"""Cost curve of accepting a manifest: verify and durable swap, against the bare work.

For manifests of 10, 1,000 and the most two-pin sets that fit the 1 MiB envelope cap
(10,000 do not: the cap refuses them, and this script shows the refusal), it times

* ours: ``trust.accept_manifest`` (strict envelope and payload parsing, the publisher
  threshold, rollback, window and chain checks) plus the client's own persist step
  (``pinserver.client.state``: under the state lock, the state file written to a temp
  file, fsynced, renamed over the old one, directory fsynced);
* bare: the least any client must do with the same bytes: ``json.loads`` of the
  envelope and of the base64-decoded payload, one Ed25519 verify with PyNaCl,
  SHA-256 of the payload, and the same durable write of the envelope bytes;

interleaved, several runs, and reports medians and the median per-run ratio.

    python -m bench.verify_cost [--runs 7] [--sizes 10,1000,max]
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nacl.signing import VerifyKey

from bench import _documents
from bench._common import calibrate, interleave, temp_dir, time_per_call, write_results
from pinserver.client.state import StateDir, StoredState
from pinserver.documents import Manifest, Root
from pinserver.envelope import MANIFEST_TYPE, Envelope, pae, verify_threshold
from pinserver.errors import TooLargeError
from pinserver.keys import PrivateKey
from pinserver.trust import ManifestFloor, accept_manifest, verify_anchor_root
from tests.factory import NOW, payload_hash, root_document, root_envelope

REFUSED_SIZE = 10_000


def durable_write(path: Path, data: bytes) -> None:
    """Temp file in the same directory, fsync, rename over, fsync the directory."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _client_swap(state_dir: Path) -> Callable[[bytes], None]:
    """The client's own persist step: under the state lock, encode the state file
    (manifest, ETag, time floor, checksum) and write it durably (``StateDir.write``)."""
    directory = StateDir(state_dir)

    def swap(data: bytes) -> None:
        with directory.lock():
            directory.write(
                StoredState(
                    manifest=data,
                    etags={"http://127.0.0.1:8080": '"bench-etag"'},
                    time_floor=NOW,
                )
            )

    return swap


def measure_size(
    count: int,
    root: Root,
    publisher: PrivateKey,
    work_dir: Path,
    *,
    runs: int,
    target_seconds: float = 0.3,
) -> dict[str, Any]:
    """Interleaved ours/bare timings for one manifest size."""
    first = _documents.manifest(count, [publisher], version=1)
    data = _documents.manifest(
        count, [publisher], version=2, previous=payload_hash(first), salt="v2-"
    )
    floor = ManifestFloor(1, payload_hash(first))
    public = root.keys[publisher.keyid]
    verify_key = VerifyKey(public.raw)
    state_dir = work_dir / f"state-{count}"
    state_dir.mkdir()
    swap = _client_swap(state_dir)
    bare_target = state_dir / "bare.json"

    def ours() -> None:
        accept_manifest(root, data, floor=floor, reference_time=NOW)
        swap(data)

    def bare() -> None:
        outer = json.loads(data)
        payload = base64.b64decode(outer["payload"])
        json.loads(payload)
        sig = outer["signatures"][0]
        verify_key.verify(pae(MANIFEST_TYPE, payload), base64.b64decode(sig["sig"]))
        hashlib.sha256(payload).hexdigest()
        durable_write(bare_target, data)

    # Where ours spends its time (no fsync): the parts, each timed alone.
    envelope = Envelope.from_bytes(data)

    def part_envelope() -> None:
        Envelope.from_bytes(data)

    def part_signature() -> None:
        verify_threshold(
            envelope,
            keys=root.keys,
            authorised=root.publisher_role.keyids,
            threshold=1,
            role="publisher",
        )

    def part_payload() -> None:
        Manifest.from_bytes(envelope.payload)

    def part_swap() -> None:
        swap(data)

    variants: dict[str, Callable[[], None]] = {"ours": ours, "bare": bare}
    numbers = {name: calibrate(fn, target_seconds=target_seconds) for name, fn in variants.items()}
    paired = interleave(
        {
            name: (lambda fn=fn, n=numbers[name]: time_per_call(fn, number=n))
            for name, fn in variants.items()
        },
        runs=runs,
    )
    parts = {
        name: min(time_per_call(fn, number=max(1, numbers["ours"])) for _ in range(3))
        for name, fn in {
            "envelope_decode": part_envelope,
            "signature_verify": part_signature,
            "payload_parse_strict": part_payload,
            "durable_swap": part_swap,
        }.items()
    }
    return {
        "pinsets": count,
        **_documents.envelope_size(data),
        "ours_ms": round(paired.median("ours") * 1000, 3),
        "bare_ms": round(paired.median("bare") * 1000, 3),
        "ratio": round(paired.ratio("ours", "bare"), 2),
        "runs": {k: [round(x * 1000, 3) for x in v] for k, v in paired.samples.items()},
        "calls_per_run": numbers,
        "ours_parts_ms": {k: round(v * 1000, 3) for k, v in parts.items()},
    }


def refused(publisher: PrivateKey, root: Root) -> dict[str, Any]:
    """What the cap does with 10,000 pin sets: the envelope is refused before any parsing."""
    data = _documents.manifest(REFUSED_SIZE, [publisher], version=2, previous="0" * 64)
    start = time.perf_counter()
    try:
        accept_manifest(root, data, floor=None, reference_time=NOW)
    except TooLargeError as e:
        return {
            "pinsets": REFUSED_SIZE,
            "envelope_bytes": len(data),
            "error": type(e).__name__,
            "code": e.code,
            "status": e.status,
            "message": e.message,
            "refused_in_ms": round((time.perf_counter() - start) * 1000, 3),
        }
    raise RuntimeError(f"{REFUSED_SIZE} pin sets were not refused by the 1 MiB cap")


def run(
    sizes: list[str], *, runs: int, work_dir: Path, target_seconds: float = 0.3
) -> dict[str, Any]:
    root_key, publisher = PrivateKey.generate(), PrivateKey.generate()
    root = verify_anchor_root(
        root_envelope(root_document(1, [root_key], [publisher]), [root_key])
    ).root
    largest = _documents.largest_fitting([publisher]) if "max" in sizes else None
    counts = [largest if s == "max" else int(s) for s in sizes]
    results = [
        measure_size(c, root, publisher, work_dir, runs=runs, target_seconds=target_seconds)
        for c in counts
        if c
    ]
    for row in results:
        print(
            f"{row['pinsets']:>6} pin sets ({row['envelope_bytes']:>8} B): ours"
            f" {row['ours_ms']:8.3f} ms  bare {row['bare_ms']:8.3f} ms  ratio {row['ratio']:.2f}x"
            f"  parts {row['ours_parts_ms']}"
        )
    return {
        "largest_fitting_pinsets": largest,
        "sizes": results,
        "refused": refused(publisher, root) if "max" in sizes else None,
        "target": "ours within 3x of bare",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--sizes", default="10,1000,max")
    args = parser.parse_args()
    with temp_dir("bench-verify-") as work:
        results = run(args.sizes.split(","), runs=args.runs, work_dir=work)
    write_results("verify_cost", {"runs": args.runs, **results})


if __name__ == "__main__":
    main()
