"""Signed manifests of a chosen size for the benchmarks, built with the test factory.

A pin set here is the common case: one host, one primary and one backup pin
(about 356 bytes encoded). Hosts are ``host{i}.example.com``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

from pinserver.documents import PinSet
from pinserver.envelope import MAX_ENVELOPE_BYTES, Envelope
from pinserver.keys import PrivateKey
from tests.factory import (
    NOW,
    fake_pin,
    manifest_document,
    manifest_envelope,
    payload_hash,
    pinset,
)


def pinsets(count: int, *, salt: str = "") -> list[PinSet]:
    """``count`` two-pin sets; ``salt`` changes the primary pins (a new version's content)."""
    return [pinset(f"host{i}.example.com", [fake_pin(f"bench-{salt}{i}")]) for i in range(count)]


def manifest(
    count: int,
    signers: Sequence[PrivateKey],
    *,
    version: int = 1,
    previous: str | None = None,
    root_version: int = 1,
    salt: str = "",
    expires_days: int = 30,
) -> bytes:
    """A signed manifest envelope with ``count`` two-pin sets."""
    doc = manifest_document(
        version,
        previous=previous,
        root_version=root_version,
        pinsets=pinsets(count, salt=salt),
        expires=NOW + timedelta(days=expires_days),
    )
    return manifest_envelope(doc, signers)


def chain(count: int, versions: int, signers: Sequence[PrivateKey]) -> list[bytes]:
    """``versions`` hash-chained manifests of ``count`` pin sets each (pins vary by version)."""
    out: list[bytes] = []
    for v in range(1, versions + 1):
        previous = payload_hash(out[-1]) if out else None
        out.append(manifest(count, signers, version=v, previous=previous, salt=f"v{v}-"))
    return out


def largest_fitting(signers: Sequence[PrivateKey], *, version: int = 2) -> int:
    """The most two-pin sets whose signed envelope fits the 1 MiB cap (binary search)."""
    previous = "0" * 64 if version > 1 else None

    def fits(n: int) -> bool:
        data = manifest(n, signers, version=version, previous=previous)
        return len(data) <= MAX_ENVELOPE_BYTES

    low, high = 1, 8192
    if fits(high):
        raise RuntimeError(f"{high} pin sets fit the cap; raise the search bound")
    while low < high:
        mid = (low + high + 1) // 2
        if fits(mid):
            low = mid
        else:
            high = mid - 1
    return low


def envelope_size(data: bytes) -> dict[str, int]:
    env = Envelope.from_bytes(data)
    return {"envelope_bytes": len(data), "payload_bytes": len(env.payload)}
