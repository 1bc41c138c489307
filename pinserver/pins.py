"""SPKI hashing, host matching and chain-against-pin-set matching. Pure.

A pin is the base64 SHA-256 of a certificate's DER SubjectPublicKeyInfo, the
same value as ``openssl x509 -pubkey | openssl pkey -pubin -outform der |
openssl dgst -sha256 -binary | base64`` (HPKP's pin-sha256).
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from pinserver.documents import PinSet

CertificateLike = x509.Certificate | bytes


def spki_sha256_of_key(public_key: PublicKeyTypes) -> str:
    der = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(hashlib.sha256(der).digest()).decode("ascii")


def _as_certificate(cert: CertificateLike) -> x509.Certificate:
    if isinstance(cert, x509.Certificate):
        return cert
    if cert.lstrip().startswith(b"-----BEGIN"):
        return x509.load_pem_x509_certificate(cert)
    return x509.load_der_x509_certificate(cert)


def spki_sha256(cert: CertificateLike) -> str:
    """The pin-sha256 of a certificate (object, PEM bytes or DER bytes)."""
    return spki_sha256_of_key(_as_certificate(cert).public_key())


def load_pem_chain(data: bytes) -> list[x509.Certificate]:
    """Every certificate in a PEM bundle, in file order."""
    return x509.load_pem_x509_certificates(data)


@dataclass(frozen=True)
class ChainCert:
    """What pinning needs to know about one certificate of a chain."""

    position: int
    subject: str
    issuer: str
    not_before: datetime
    not_after: datetime
    spki_sha256: str
    key_type: str
    is_ca: bool
    is_self_signed: bool

    @property
    def lifetime_days(self) -> float:
        return (self.not_after - self.not_before).total_seconds() / 86400

    @property
    def kind(self) -> str:
        """``leaf``, ``intermediate`` or ``root``."""
        if self.position == 0 and not self.is_ca:
            return "leaf"
        if self.is_self_signed:
            return "root"
        return "intermediate" if self.is_ca else "leaf"


def _key_type(public_key: PublicKeyTypes) -> str:
    """``RSA-2048``, ``EC-256``, ``Ed25519``...: by isinstance, not by class name, which
    differs between cryptography's backends and releases."""
    kinds: tuple[tuple[type[Any], str], ...] = (
        (rsa.RSAPublicKey, "RSA"),
        (ec.EllipticCurvePublicKey, "EC"),
        (dsa.DSAPublicKey, "DSA"),
        (ed25519.Ed25519PublicKey, "Ed25519"),
        (ed448.Ed448PublicKey, "Ed448"),
    )
    name = next((n for cls, n in kinds if isinstance(public_key, cls)), None)
    if name is None:
        name = type(public_key).__name__.removeprefix("_").replace("PublicKey", "")
    size = getattr(public_key, "key_size", None)
    return f"{name}-{size}" if size else name


def describe_chain(certs: Sequence[CertificateLike]) -> list[ChainCert]:
    """Describe each certificate of a chain (leaf first)."""
    out = []
    for position, raw in enumerate(certs):
        cert = _as_certificate(raw)
        try:
            basic = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
            is_ca = basic.ca
        except x509.ExtensionNotFound:
            is_ca = False
        out.append(
            ChainCert(
                position=position,
                subject=cert.subject.rfc4514_string(),
                issuer=cert.issuer.rfc4514_string(),
                not_before=cert.not_valid_before_utc,
                not_after=cert.not_valid_after_utc,
                spki_sha256=spki_sha256(cert),
                key_type=_key_type(cert.public_key()),
                is_ca=is_ca,
                is_self_signed=cert.subject == cert.issuer,
            )
        )
    return out


def host_matches(pinset: PinSet, host: str) -> bool:
    """Exact host, or a subdomain of it when ``include_subdomains`` is set."""
    host = host.lower().rstrip(".")
    if host == pinset.host:
        return True
    return pinset.include_subdomains and host.endswith("." + pinset.host)


def find_pinset(pinsets: Iterable[PinSet], host: str) -> PinSet | None:
    """The most specific pin set that covers ``host`` (exact match beats a parent's
    include_subdomains), or None when the host is not pinned."""
    best: PinSet | None = None
    for pinset in pinsets:
        if host_matches(pinset, host) and (best is None or len(pinset.host) > len(best.host)):
            best = pinset
    return best


def is_pinset_active(pinset: PinSet, reference_time: datetime) -> bool:
    """A pin set past its ``expires`` is no longer enforced (Android NSC semantics)."""
    return reference_time < pinset.expires


def matching_pins(pinset: PinSet, chain_hashes: Iterable[str]) -> frozenset[str]:
    """The chain's SPKI hashes that the pin set lists (any position counts)."""
    return pinset.hashes & frozenset(chain_hashes)


def is_chain_pinned(pinset: PinSet, chain_hashes: Iterable[str]) -> bool:
    """True iff at least one SPKI hash of the *verified* chain is in the pin set."""
    return bool(matching_pins(pinset, chain_hashes))
