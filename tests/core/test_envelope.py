"""SPEC section 3: DSSE envelopes, signature counting, size cap, type confusion, and
that nothing parses a payload before its signatures are checked."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from pinserver.documents import Root
from pinserver.envelope import (
    MANIFEST_TYPE,
    MAX_ENVELOPE_BYTES,
    ROOT_TYPE,
    Envelope,
    Signature,
    SignatureStatus,
    check_signatures,
    pae,
    sign,
)
from pinserver.errors import (
    EnvelopeError,
    FormatError,
    SignatureError,
    TooLargeError,
)
from pinserver.keys import PrivateKey
from pinserver.trust import (
    TrustedSet,
    accept_manifest,
    verify_anchor_root,
    verify_manifest_signatures,
    verify_next_root,
)
from tests.core.helpers import assert_rejected, key, noncanonical_b64, signed, signed_root
from tests.factory import NOW, manifest_document, root_document, root_envelope

ROOT_KEY = key("root-a")
PUBLISHERS = [key("publisher-a"), key("publisher-b"), key("publisher-c")]
OUTSIDER = key("outsider")


def two_of_three_root() -> Root:
    """Publisher role 2-of-3: the k-of-n case with k=2."""
    return root_document(1, [ROOT_KEY], PUBLISHERS, publisher_threshold=2)


def trusted_set() -> TrustedSet:
    return TrustedSet.from_anchor(
        root_envelope(two_of_three_root(), [ROOT_KEY]), reference_time=NOW
    )


MANIFEST_PAYLOAD = manifest_document(1).to_bytes()
OTHER_PAYLOAD = manifest_document(1, poll_interval=600).to_bytes()


def good_sig(signer: PrivateKey, payload: bytes = MANIFEST_PAYLOAD) -> Signature:
    return Signature(signer.keyid, signer.sign(pae(MANIFEST_TYPE, payload)))


@dataclass(frozen=True)
class SigCase:
    name: str
    signatures: Callable[[], list[Signature]]
    accepted: bool


SIG_CASES = [
    SigCase("two of three", lambda: [good_sig(PUBLISHERS[0]), good_sig(PUBLISHERS[1])], True),
    SigCase("all three", lambda: [good_sig(k) for k in PUBLISHERS], True),
    SigCase("below threshold", lambda: [good_sig(PUBLISHERS[0])], False),
    SigCase("no signatures", list, False),
    SigCase(
        "forged signature bytes",
        lambda: [good_sig(PUBLISHERS[0]), Signature(PUBLISHERS[1].keyid, bytes(64))],
        False,
    ),
    SigCase(
        "signature over another payload",
        lambda: [good_sig(PUBLISHERS[0]), good_sig(PUBLISHERS[1], OTHER_PAYLOAD)],
        False,
    ),
    SigCase(
        "signature over the root payload type",
        lambda: [
            good_sig(PUBLISHERS[0]),
            Signature(PUBLISHERS[1].keyid, PUBLISHERS[1].sign(pae(ROOT_TYPE, MANIFEST_PAYLOAD))),
        ],
        False,
    ),
    SigCase(
        "keyid of one key, signature of another",
        lambda: [
            good_sig(PUBLISHERS[0]),
            Signature(PUBLISHERS[1].keyid, good_sig(PUBLISHERS[2]).sig),
        ],
        False,
    ),
    SigCase(
        "unauthorised outsider key",
        lambda: [good_sig(PUBLISHERS[0]), good_sig(OUTSIDER)],
        False,
    ),
    SigCase(
        "root key is not a publisher",
        lambda: [good_sig(PUBLISHERS[0]), good_sig(ROOT_KEY)],
        False,
    ),
    SigCase(
        "duplicate signature by one key counts once",
        lambda: [good_sig(PUBLISHERS[0]), good_sig(PUBLISHERS[0])],
        False,
    ),
    SigCase(
        "short signature",
        lambda: [good_sig(PUBLISHERS[0]), Signature(PUBLISHERS[1].keyid, b"\x01" * 10)],
        False,
    ),
    SigCase(
        "unknown keyids are ignored",
        lambda: [
            Signature("not-a-keyid", b"junk"),
            good_sig(PUBLISHERS[0]),
            Signature("ab" * 32, bytes(64)),
            good_sig(OUTSIDER),
            good_sig(PUBLISHERS[1]),
        ],
        True,
    ),
    SigCase(
        "failed signatures are ignored when enough others verify",
        lambda: [
            Signature(PUBLISHERS[0].keyid, bytes(64)),
            good_sig(PUBLISHERS[1]),
            good_sig(PUBLISHERS[2]),
        ],
        True,
    ),
]


@pytest.mark.parametrize("case", SIG_CASES, ids=lambda c: c.name)
def test_publisher_threshold(case: SigCase) -> None:
    envelope = Envelope(MANIFEST_TYPE, MANIFEST_PAYLOAD, tuple(case.signatures())).to_bytes()
    trusted = trusted_set()
    if case.accepted:
        verified = trusted.update_manifest(envelope)
        assert verified.signed_by <= {k.keyid for k in PUBLISHERS}
        assert len(verified.signed_by) >= 2
        assert trusted.floor is not None
        assert trusted.floor.version == 1
    else:
        error = assert_rejected(
            lambda: trusted.update_manifest(envelope),
            SignatureError,
            "signature_threshold",
            trusted=trusted,
        )
        assert error.status == 403


def test_check_signatures_explains_each_signature() -> None:
    envelope = Envelope(
        MANIFEST_TYPE,
        MANIFEST_PAYLOAD,
        (
            good_sig(PUBLISHERS[0]),
            good_sig(PUBLISHERS[0]),
            good_sig(OUTSIDER),
            Signature(PUBLISHERS[1].keyid, bytes(64)),
        ),
    )
    root = two_of_three_root()
    statuses = check_signatures(envelope, keys=root.keys, authorised=root.publisher_role.keyids)
    assert [s for _, s in statuses] == [
        SignatureStatus.VALID,
        SignatureStatus.DUPLICATE,
        SignatureStatus.UNAUTHORISED,
        SignatureStatus.INVALID,
    ]


def test_with_signature_refuses_a_second_signature_by_one_key() -> None:
    envelope = sign(Envelope(MANIFEST_TYPE, MANIFEST_PAYLOAD), PUBLISHERS[0])
    with pytest.raises(ValueError, match="already signed"):
        sign(envelope, PUBLISHERS[0])


# --- the payload is never parsed before a signature check --------------------------------

GARBAGE = b"\xff\xfe this is not JSON {{{"


@pytest.mark.parametrize("payload", [GARBAGE, b"[]", b'{"type": "manifest"}', b""])
def test_unsigned_garbage_manifest_is_a_signature_error(payload: bytes) -> None:
    trusted = trusted_set()
    envelope = Envelope(MANIFEST_TYPE, payload).to_bytes()
    assert_rejected(
        lambda: trusted.update_manifest(envelope),
        SignatureError,
        "signature_threshold",
        trusted=trusted,
    )
    outsider_signed = signed(payload, [OUTSIDER, OUTSIDER.__class__(bytes(32))])
    assert_rejected(
        lambda: trusted.update_manifest(outsider_signed),
        SignatureError,
        "signature_threshold",
        trusted=trusted,
    )


def test_signed_garbage_manifest_is_then_a_format_error() -> None:
    """The same garbage with a valid threshold gets past the signatures and only then
    fails to parse: proof that the order is signatures first."""
    trusted = trusted_set()
    envelope = signed(GARBAGE, PUBLISHERS[:2])
    error = assert_rejected(
        lambda: trusted.update_manifest(envelope),
        FormatError,
        "invalid_document",
        trusted=trusted,
    )
    assert error.status == 422


def test_unsigned_garbage_root_is_a_signature_error() -> None:
    trusted = trusted_set()
    assert_rejected(
        lambda: trusted.update_root(Envelope(ROOT_TYPE, GARBAGE).to_bytes()),
        SignatureError,
        "signature_threshold",
        trusted=trusted,
    )
    assert_rejected(
        lambda: trusted.update_root(signed_root(GARBAGE, [ROOT_KEY])),
        FormatError,
        "invalid_document",
        trusted=trusted,
    )


# --- payload type confusion ------------------------------------------------------------


def test_root_envelope_posted_as_manifest_is_refused_by_type() -> None:
    trusted = trusted_set()
    root2 = root_envelope(root_document(2, [ROOT_KEY], PUBLISHERS), [ROOT_KEY])
    error = assert_rejected(
        lambda: trusted.update_manifest(root2),
        EnvelopeError,
        "wrong_payload_type",
        trusted=trusted,
    )
    assert error.status == 400


def test_manifest_envelope_offered_as_root_is_refused_by_type() -> None:
    trusted = trusted_set()
    manifest = signed(MANIFEST_PAYLOAD, PUBLISHERS[:2])
    assert_rejected(
        lambda: trusted.update_root(manifest),
        EnvelopeError,
        "wrong_payload_type",
        trusted=trusted,
    )
    with pytest.raises(EnvelopeError):
        verify_anchor_root(manifest)


def test_root_payload_relabelled_as_manifest_fails_the_schema() -> None:
    """A root payload carried under the manifest type, even with a publisher threshold,
    is not a manifest: the manifest schema refuses it."""
    trusted = trusted_set()
    root_payload = root_document(2, [ROOT_KEY], PUBLISHERS).to_bytes()
    envelope = signed(root_payload, PUBLISHERS[:2])
    error = assert_rejected(
        lambda: trusted.update_manifest(envelope),
        FormatError,
        "invalid_document",
        trusted=trusted,
    )
    assert error.field == "document"
    assert "missing field" in error.message


def test_manifest_shaped_payload_typed_root_fails_on_its_type_field() -> None:
    trusted = trusted_set()
    obj = manifest_document(1).to_dict()
    obj["type"] = "root"
    envelope = signed(json.dumps(obj).encode(), PUBLISHERS[:2])
    error = assert_rejected(
        lambda: trusted.update_manifest(envelope),
        FormatError,
        "invalid_document",
        trusted=trusted,
    )
    assert error.field == "type"


def test_manifest_payload_relabelled_as_root_fails_to_parse() -> None:
    trusted = trusted_set()
    envelope = signed_root(MANIFEST_PAYLOAD, [ROOT_KEY])
    assert_rejected(
        lambda: trusted.update_root(envelope), FormatError, "invalid_document", trusted=trusted
    )


def test_relabelling_the_payload_type_breaks_the_signature() -> None:
    """PAE covers the type: a manifest signature does not verify under the root type."""
    root = two_of_three_root()
    good = sign(sign(Envelope(MANIFEST_TYPE, MANIFEST_PAYLOAD), PUBLISHERS[0]), PUBLISHERS[1])
    verify_manifest_signatures(root, good)
    relabelled = Envelope(ROOT_TYPE, good.payload, good.signatures)
    with pytest.raises(SignatureError):
        verify_next_root(root, relabelled)


# --- envelope shape and size ------------------------------------------------------------

VALID_ENVELOPE = json.loads(signed(MANIFEST_PAYLOAD, PUBLISHERS[:2]))


def mutated(change: Callable[[dict[str, object]], object]) -> bytes:
    obj = json.loads(json.dumps(VALID_ENVELOPE))
    change(obj)
    return json.dumps(obj).encode()


def _set(obj: dict[str, object], key: str, value: object) -> None:
    obj[key] = value


def _sig0(obj: dict[str, object]) -> dict[str, object]:
    sigs = obj["signatures"]
    assert isinstance(sigs, list)
    first = sigs[0]
    assert isinstance(first, dict)
    return first


@dataclass(frozen=True)
class EnvelopeCase:
    name: str
    data: Callable[[], bytes]


ENVELOPE_CASES = [
    EnvelopeCase("not JSON", lambda: b"{payloadType"),
    EnvelopeCase("top-level array", lambda: b"[]"),
    EnvelopeCase("top-level string", lambda: b'"envelope"'),
    EnvelopeCase("invalid UTF-8", lambda: b'{"payloadType": "\xff"}'),
    EnvelopeCase("byte order mark", lambda: b"\xef\xbb\xbf" + json.dumps(VALID_ENVELOPE).encode()),
    EnvelopeCase(
        "duplicate key",
        lambda: b'{"payloadType": "a", "payloadType": "b", "payload": "", "signatures": []}',
    ),
    EnvelopeCase("missing signatures", lambda: mutated(lambda o: o.pop("signatures"))),
    EnvelopeCase("unknown field", lambda: mutated(lambda o: _set(o, "extra", 1))),
    EnvelopeCase("payloadType not a string", lambda: mutated(lambda o: _set(o, "payloadType", 1))),
    EnvelopeCase("payload not base64", lambda: mutated(lambda o: _set(o, "payload", "a!b"))),
    EnvelopeCase(
        "payload base64 without padding",
        lambda: mutated(lambda o: _set(o, "payload", "YWI")),
    ),
    EnvelopeCase("payload url-safe base64", lambda: mutated(lambda o: _set(o, "payload", "-_-_"))),
    EnvelopeCase(
        "payload non-canonical base64",
        lambda: mutated(lambda o: _set(o, "payload", noncanonical_b64("YWI="))),
    ),
    EnvelopeCase("payload with newline", lambda: mutated(lambda o: _set(o, "payload", "YW\nI="))),
    EnvelopeCase("signatures not a list", lambda: mutated(lambda o: _set(o, "signatures", {}))),
    EnvelopeCase("signature missing sig", lambda: mutated(lambda o: _sig0(o).pop("sig"))),
    EnvelopeCase(
        "signature unknown field", lambda: mutated(lambda o: _set(_sig0(o), "cert", None))
    ),
    EnvelopeCase("keyid not a string", lambda: mutated(lambda o: _set(_sig0(o), "keyid", 7))),
    EnvelopeCase("sig not base64", lambda: mutated(lambda o: _set(_sig0(o), "sig", "%%%%"))),
    EnvelopeCase(
        "sig non-canonical base64",
        lambda: mutated(lambda o: _set(_sig0(o), "sig", noncanonical_b64(str(_sig0(o)["sig"])))),
    ),
    EnvelopeCase(
        "too many signatures",
        lambda: mutated(lambda o: _set(o, "signatures", [_sig0(o)] * 65)),
    ),
]


@pytest.mark.parametrize("case", ENVELOPE_CASES, ids=lambda c: c.name)
def test_malformed_envelope_is_a_400_envelope_error(case: EnvelopeCase) -> None:
    trusted = trusted_set()
    data = case.data()
    error = assert_rejected(
        lambda: trusted.update_manifest(data), EnvelopeError, "invalid_envelope", trusted=trusted
    )
    assert error.status == 400


def test_size_cap_is_exactly_one_mebibyte() -> None:
    good = signed(MANIFEST_PAYLOAD, PUBLISHERS[:2])
    # JSON allows trailing whitespace: pad the same envelope to exactly the cap.
    at_cap = good + b" " * (MAX_ENVELOPE_BYTES - len(good))
    root = two_of_three_root()
    assert accept_manifest(root, at_cap, floor=None, reference_time=NOW).version == 1
    trusted = trusted_set()
    error = assert_rejected(
        lambda: trusted.update_manifest(at_cap + b" "),
        TooLargeError,
        "too_large",
        trusted=trusted,
    )
    assert error.status == 413


def test_oversized_root_is_refused_before_anything_else() -> None:
    trusted = trusted_set()
    huge = b'{"payloadType": "' + b"x" * MAX_ENVELOPE_BYTES + b'"}'
    assert_rejected(lambda: trusted.update_root(huge), TooLargeError, "too_large", trusted=trusted)
    with pytest.raises(TooLargeError):
        verify_anchor_root(huge)


# --- interoperability: independent DSSE code against pinserver ---------------------------


def independent_pae(payload_type: bytes, payload: bytes) -> bytes:
    """DSSE v1 PAE written from the spec, sharing no code with pinserver.envelope."""
    return b" ".join(
        [
            b"DSSEv1",
            str(len(payload_type)).encode(),
            payload_type,
            str(len(payload)).encode(),
            payload,
        ]
    )


def test_pae_matches_the_dsse_spec_example() -> None:
    """The example of the DSSE protocol document."""
    expected = b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    assert pae("http://example.com/HelloWorld", b"hello world") == expected
    assert independent_pae(b"http://example.com/HelloWorld", b"hello world") == expected


def _raw_public(key: ed25519.Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def _independent_envelope(
    payload_type: str, payload: bytes, signers: list[ed25519.Ed25519PrivateKey]
) -> bytes:
    message = independent_pae(payload_type.encode(), payload)
    return json.dumps(
        {
            "payloadType": payload_type,
            "payload": base64.b64encode(payload).decode(),
            "signatures": [
                {
                    "keyid": hashlib.sha256(_raw_public(k)).hexdigest(),
                    "sig": base64.b64encode(k.sign(message)).decode(),
                }
                for k in signers
            ],
        },
        indent=2,
    ).encode()


def test_pinserver_verifies_envelopes_made_with_cryptography() -> None:
    """Root and manifest written by hand and signed with cryptography's Ed25519 API."""
    root_key = ed25519.Ed25519PrivateKey.generate()
    publisher_key = ed25519.Ed25519PrivateKey.generate()
    root_id = hashlib.sha256(_raw_public(root_key)).hexdigest()
    publisher_id = hashlib.sha256(_raw_public(publisher_key)).hexdigest()
    root_payload = json.dumps(
        {
            "type": "root",
            "spec_version": 1,
            "version": 1,
            "issued_at": "2026-12-01T00:00:00Z",
            "expires": "2027-12-01T00:00:00Z",
            "keys": {
                root_id: {
                    "keytype": "ed25519",
                    "public": base64.b64encode(_raw_public(root_key)).decode(),
                },
                publisher_id: {
                    "keytype": "ed25519",
                    "public": base64.b64encode(_raw_public(publisher_key)).decode(),
                },
            },
            "roles": {
                "root": {"keyids": [root_id], "threshold": 1},
                "publisher": {"keyids": [publisher_id], "threshold": 1},
            },
        },
        indent=1,
    ).encode()
    manifest_payload = manifest_document(1).to_bytes().replace(b",", b", ")  # not canonical
    trusted = TrustedSet.from_anchor(
        _independent_envelope(ROOT_TYPE, root_payload, [root_key]), reference_time=NOW
    )
    verified = trusted.update_manifest(
        _independent_envelope(MANIFEST_TYPE, manifest_payload, [publisher_key])
    )
    assert verified.signed_by == {publisher_id}
    assert verified.envelope.payload == manifest_payload  # bytes as carried, not re-encoded
    assert verified.payload_sha256 == hashlib.sha256(manifest_payload).hexdigest()


def test_cryptography_verifies_envelopes_made_by_pinserver() -> None:
    signer = key("interop")
    envelope_bytes = sign(Envelope(MANIFEST_TYPE, MANIFEST_PAYLOAD), signer).to_bytes()
    obj = json.loads(envelope_bytes)
    payload = base64.b64decode(obj["payload"])
    assert payload == MANIFEST_PAYLOAD
    public = ed25519.Ed25519PublicKey.from_public_bytes(signer.public_key.raw)
    (entry,) = obj["signatures"]
    assert entry["keyid"] == hashlib.sha256(signer.public_key.raw).hexdigest()
    sig = base64.b64decode(entry["sig"])
    public.verify(sig, independent_pae(obj["payloadType"].encode(), payload))
    with pytest.raises(InvalidSignature):
        public.verify(sig, independent_pae(ROOT_TYPE.encode(), payload))
