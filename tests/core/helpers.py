"""Shared builders for the core tests: deterministic keys, real trustme chains, and a
snapshot of trusted state to prove that rejected input changes nothing."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pytest
import trustme

from pinserver.envelope import MANIFEST_TYPE, ROOT_TYPE, Envelope
from pinserver.errors import PinserverError
from pinserver.keys import PrivateKey
from pinserver.pins import ChainCert, describe_chain
from pinserver.trust import TrustedSet
from tests.factory import sign_all


def key(label: str) -> PrivateKey:
    """A deterministic Ed25519 key: the same label gives the same key in every run."""
    return PrivateKey(hashlib.sha256(label.encode()).digest())


def signed(
    payload: bytes, signers: list[PrivateKey], *, payload_type: str = MANIFEST_TYPE
) -> bytes:
    """An envelope around exactly ``payload`` (not re-encoded), signed by ``signers``."""
    return sign_all(Envelope(payload_type, payload), signers).to_bytes()


def signed_root(payload: bytes, signers: list[PrivateKey]) -> bytes:
    return signed(payload, signers, payload_type=ROOT_TYPE)


def dumps(obj: Any) -> bytes:
    return json.dumps(obj).encode()


def noncanonical_b64(text: str) -> str:
    """The same bytes with the unused low bit of the last character set: decoders that
    ignore those bits accept it, a strict decoder must not."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    stripped = text.rstrip("=")
    assert stripped != text, "needs padded input (unused bits exist only then)"
    flipped = alphabet[alphabet.index(stripped[-1]) ^ 1]
    result = stripped[:-1] + flipped + text[len(stripped) :]
    assert base64.b64decode(result) == base64.b64decode(text)
    return result


def snapshot(trusted: TrustedSet) -> tuple[object, ...]:
    """Everything a rejected update must leave untouched."""
    return (
        tuple(r.raw for r in trusted.roots),
        trusted.floor,
        trusted.manifest.raw if trusted.manifest else None,
        trusted.floor_reset,
    )


def assert_rejected(
    action: Callable[[], object],
    error: type[PinserverError],
    code: str,
    *,
    trusted: TrustedSet | None = None,
) -> PinserverError:
    """``action`` raises exactly ``error`` (not a subclass) with ``code``; state unchanged."""
    before = snapshot(trusted) if trusted is not None else None
    with pytest.raises(PinserverError) as info:
        action()
    assert type(info.value) is error, f"{type(info.value).__name__}: {info.value}"
    assert info.value.code == code, info.value
    if trusted is not None:
        assert snapshot(trusted) == before
    return info.value


@dataclass
class LiveChain:
    """A real three-level chain made by trustme: root CA, intermediate CA, leaf."""

    root: trustme.CA
    intermediate: trustme.CA
    leaf: trustme.LeafCert

    @property
    def pems(self) -> list[bytes]:
        """Leaf first, as a server sends it, plus the root."""
        return [b.bytes() for b in self.leaf.cert_chain_pems] + [self.root.cert_pem.bytes()]

    def describe(self) -> list[ChainCert]:
        return describe_chain(self.pems)

    def pin(self, kind: str) -> str:
        return next(c.spki_sha256 for c in self.describe() if c.kind == kind)


def live_chain(
    host: str = "api.example.com",
    *,
    not_before: datetime | None = None,
    not_after: datetime | None = None,
    key_type: trustme.KeyType = trustme.KeyType.ECDSA,
) -> LiveChain:
    root = trustme.CA(key_type=key_type)
    intermediate = root.create_child_ca(key_type=key_type)
    leaf = intermediate.issue_cert(
        host, not_before=not_before, not_after=not_after, key_type=key_type
    )
    return LiveChain(root, intermediate, leaf)
