"""DSSE v1 envelopes: PAE, strict decoding, signing and threshold verification.

The payload is carried as exact bytes. Nothing here parses the payload: callers
parse it only after :func:`verify_threshold` has passed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from enum import StrEnum

from pinserver._strictjson import dumps_canonical, loads_object
from pinserver.errors import EnvelopeError, FormatError, SignatureError, TooLargeError
from pinserver.keys import PrivateKey, PublicKey, b64decode_strict, b64encode

ROOT_TYPE = "application/vnd.pinserver.root+json"
MANIFEST_TYPE = "application/vnd.pinserver.manifest+json"
PAYLOAD_TYPES = (ROOT_TYPE, MANIFEST_TYPE)
MAX_ENVELOPE_BYTES = 1 << 20
MAX_SIGNATURES = 64


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE pre-authentication encoding: what is actually signed."""
    type_bytes = payload_type.encode("utf-8")
    return b"DSSEv1 %d %b %d %b" % (len(type_bytes), type_bytes, len(payload), payload)


@dataclass(frozen=True)
class Signature:
    keyid: str
    sig: bytes


@dataclass(frozen=True)
class Envelope:
    """A DSSE envelope. ``payload`` is the exact signed bytes."""

    payload_type: str
    payload: bytes
    signatures: tuple[Signature, ...] = ()

    @property
    def payload_sha256(self) -> str:
        return hashlib.sha256(self.payload).hexdigest()

    @property
    def keyids(self) -> tuple[str, ...]:
        return tuple(s.keyid for s in self.signatures)

    @classmethod
    def from_bytes(cls, data: bytes) -> Envelope:
        """Decode an untrusted envelope; every failure is an ``EnvelopeError`` (HTTP 400)."""
        if len(data) > MAX_ENVELOPE_BYTES:
            raise TooLargeError(f"envelope is {len(data)} bytes; the cap is {MAX_ENVELOPE_BYTES}")
        try:
            obj = loads_object(data, what="envelope")
        except FormatError as e:
            raise EnvelopeError(e.message) from e
        if set(obj) != {"payloadType", "payload", "signatures"}:
            extra = sorted(set(obj) - {"payloadType", "payload", "signatures"})
            missing = sorted({"payloadType", "payload", "signatures"} - set(obj))
            raise EnvelopeError(
                f"envelope fields must be payloadType, payload, signatures"
                f" (missing {missing}, unknown {_few(extra)})"
            )
        payload_type = obj["payloadType"]
        if not isinstance(payload_type, str):
            raise EnvelopeError("must be a string", field="payloadType")
        if not isinstance(obj["payload"], str):
            raise EnvelopeError("must be a base64 string", field="payload")
        try:
            payload = b64decode_strict(obj["payload"], field="payload")
        except FormatError as e:
            raise EnvelopeError(e.message) from e
        raw_sigs = obj["signatures"]
        if not isinstance(raw_sigs, list):
            raise EnvelopeError("must be a list", field="signatures")
        if len(raw_sigs) > MAX_SIGNATURES:
            raise EnvelopeError(f"more than {MAX_SIGNATURES} signatures", field="signatures")
        signatures = []
        for i, raw in enumerate(raw_sigs):
            where = f"signatures[{i}]"
            if not isinstance(raw, dict) or set(raw) != {"keyid", "sig"}:
                raise EnvelopeError("must be an object with exactly keyid and sig", field=where)
            if not isinstance(raw["keyid"], str) or not isinstance(raw["sig"], str):
                raise EnvelopeError("keyid and sig must be strings", field=where)
            try:
                sig = b64decode_strict(raw["sig"], field=f"{where}.sig")
            except FormatError as e:
                raise EnvelopeError(e.message) from e
            signatures.append(Signature(keyid=raw["keyid"], sig=sig))
        return cls(payload_type=payload_type, payload=payload, signatures=tuple(signatures))

    def to_dict(self) -> dict[str, object]:
        return {
            "payloadType": self.payload_type,
            "payload": b64encode(self.payload),
            "signatures": [{"keyid": s.keyid, "sig": b64encode(s.sig)} for s in self.signatures],
        }

    def to_bytes(self) -> bytes:
        return dumps_canonical(self.to_dict())

    def with_signature(self, signature: Signature) -> Envelope:
        """A copy with ``signature`` added; a second signature by the same key is refused."""
        if signature.keyid in self.keyids:
            raise ValueError(f"the envelope is already signed by {signature.keyid}")
        return replace(self, signatures=(*self.signatures, signature))


def _few(names: list[str], *, count: int = 5, chars: int = 40) -> str:
    """Some of an untrusted list of names for an error message: an error must not echo
    a megabyte of the attacker's input back (HTTP body, logs)."""
    shown = [repr(n if len(n) <= chars else n[:chars] + "...") for n in names[:count]]
    more = f" and {len(names) - count} more" if len(names) > count else ""
    return f"[{', '.join(shown)}]{more}"


def sign(envelope: Envelope, key: PrivateKey) -> Envelope:
    """Append ``key``'s signature over PAE(type, payload)."""
    sig = key.sign(pae(envelope.payload_type, envelope.payload))
    return envelope.with_signature(Signature(keyid=key.keyid, sig=sig))


class SignatureStatus(StrEnum):
    VALID = "valid"
    INVALID = "invalid"
    UNAUTHORISED = "unauthorised"
    DUPLICATE = "duplicate"


def check_signatures(
    envelope: Envelope, *, keys: Mapping[str, PublicKey], authorised: Iterable[str]
) -> list[tuple[str, SignatureStatus]]:
    """Each signature's fate, in envelope order: what ``verify`` explains to a human.

    A keyid counts at most once; keyids outside ``authorised`` and signatures that
    fail are ignored (never an error by themselves).
    """
    allowed = set(authorised)
    message = pae(envelope.payload_type, envelope.payload)
    counted: set[str] = set()
    result = []
    for s in envelope.signatures:
        if s.keyid not in allowed or s.keyid not in keys:
            status = SignatureStatus.UNAUTHORISED
        elif s.keyid in counted:
            status = SignatureStatus.DUPLICATE
        elif keys[s.keyid].is_valid_signature(message, s.sig):
            status = SignatureStatus.VALID
            counted.add(s.keyid)
        else:
            status = SignatureStatus.INVALID
        result.append((s.keyid, status))
    return result


def verify_threshold(
    envelope: Envelope,
    *,
    keys: Mapping[str, PublicKey],
    authorised: Iterable[str],
    threshold: int,
    role: str,
) -> frozenset[str]:
    """Raise ``SignatureError`` unless ``threshold`` distinct authorised keys signed.

    Returns the keyids that counted.
    """
    if threshold < 1:
        raise ValueError("threshold must be at least 1")
    statuses = check_signatures(envelope, keys=keys, authorised=authorised)
    valid = frozenset(k for k, st in statuses if st is SignatureStatus.VALID)
    if len(valid) < threshold:
        raise SignatureError(
            f"{role} threshold not met: {len(valid)} valid signature(s) of {threshold} required"
        )
    return valid


def verify_payload_type(envelope: Envelope, expected: str) -> None:
    if envelope.payload_type != expected:
        raise EnvelopeError(
            f"payloadType is {envelope.payload_type!r}, expected {expected!r}",
            code="wrong_payload_type",
        )
