"""Hypothesis properties of the pure core (bounded example counts, no deadline)."""

from __future__ import annotations

import base64
from datetime import timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pinserver.documents import Manifest, Pin, PinSet, Root
from pinserver.envelope import MANIFEST_TYPE, ROOT_TYPE, Envelope, sign, verify_threshold
from pinserver.errors import ForkError, RollbackError, SignatureError, VerificationError
from pinserver.trust import TrustedSet
from tests.core.helpers import key, snapshot
from tests.factory import (
    NOW,
    Deployment,
    manifest_document,
    manifest_envelope,
    payload_hash,
    root_document,
)

PROPERTY = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SIGNER = key("property-signer")
KEYS = {SIGNER.keyid: SIGNER.public_key}

payload_types = st.sampled_from([MANIFEST_TYPE, ROOT_TYPE, "application/x-other", "ü/ñ"])


def _verify(envelope: Envelope) -> frozenset[str]:
    return verify_threshold(envelope, keys=KEYS, authorised=[SIGNER.keyid], threshold=1, role="t")


@PROPERTY
@given(payload_type=payload_types, payload=st.binary(max_size=2048))
def test_sign_then_verify_round_trips(payload_type: str, payload: bytes) -> None:
    envelope = sign(Envelope(payload_type, payload), SIGNER)
    decoded = Envelope.from_bytes(envelope.to_bytes())
    assert decoded == envelope
    assert _verify(decoded) == {SIGNER.keyid}


def _flip(data: bytes, index: int, delta: int) -> bytes:
    index %= len(data)
    return data[:index] + bytes([(data[index] + delta) % 256]) + data[index + 1 :]


@PROPERTY
@given(
    payload=st.binary(min_size=1, max_size=512),
    part=st.sampled_from(["payload", "payloadType", "signature"]),
    index=st.integers(min_value=0),
    delta=st.integers(min_value=1, max_value=255),
)
def test_any_single_byte_change_fails_verification(
    payload: bytes, part: str, index: int, delta: int
) -> None:
    good = sign(Envelope(MANIFEST_TYPE, payload), SIGNER)
    sig = good.signatures[0]
    if part == "payload":
        bad = Envelope(good.payload_type, _flip(payload, index, delta), good.signatures)
    elif part == "payloadType":
        raw_type = _flip(good.payload_type.encode(), index, delta)
        bad = Envelope(raw_type.decode("utf-8", "surrogateescape"), payload, good.signatures)
    else:
        bad = Envelope(
            good.payload_type, payload, (type(sig)(sig.keyid, _flip(sig.sig, index, delta)),)
        )
    try:
        _verify(bad)
    except SignatureError:
        return
    except UnicodeEncodeError:
        # a payloadType byte that is not UTF-8 cannot even reach the wire (strict JSON)
        return
    raise AssertionError("a changed envelope verified")


@PROPERTY
@given(
    payload=st.binary(min_size=1, max_size=256),
    index=st.integers(min_value=0),
    delta=st.integers(min_value=1, max_value=255),
)
def test_any_single_byte_change_to_the_wire_bytes_is_rejected(
    payload: bytes, index: int, delta: int
) -> None:
    wire = sign(Envelope(MANIFEST_TYPE, payload), SIGNER).to_bytes()
    changed = _flip(wire, index, delta)
    try:
        _verify(Envelope.from_bytes(changed))
    except VerificationError:  # EnvelopeError (malformed) or SignatureError
        return
    raise AssertionError(f"accepted {changed!r}")


# --- canonical round trips ----------------------------------------------------------------

labels = st.from_regex(r"\A[a-z0-9](?:[a-z0-9-]{0,10}[a-z0-9])?\Z", fullmatch=True)
hosts = st.lists(labels, min_size=1, max_size=4).map(".".join)
pins = st.binary(min_size=32, max_size=32).map(lambda b: base64.b64encode(b).decode())
seconds = st.integers(min_value=0, max_value=10**9).map(lambda s: timedelta(seconds=s))


@st.composite
def pinsets(draw: st.DrawFn, host: str) -> PinSet:
    hashes = draw(st.lists(pins, min_size=2, max_size=6, unique=True))
    more = len(hashes) - 1
    roles = [
        "backup",
        *draw(st.lists(st.sampled_from(["primary", "backup"]), min_size=more, max_size=more)),
    ]
    return PinSet(
        host=host,
        include_subdomains=draw(st.booleans()),
        mode=draw(st.sampled_from(["enforce", "report"])),
        expires=NOW + draw(seconds),
        pins=tuple(
            Pin(h, r, draw(st.none() | st.text(alphabet=st.characters(codec="utf-8"), max_size=20)))
            for h, r in zip(hashes, roles, strict=True)
        ),
    )


@st.composite
def manifests(draw: st.DrawFn) -> Manifest:
    version = draw(st.integers(min_value=1, max_value=2**53 - 1))
    not_before = NOW - draw(seconds)
    host_names = draw(st.lists(hosts, max_size=4, unique=True))
    return Manifest(
        version=version,
        root_version=draw(st.integers(min_value=1, max_value=2**53 - 1)),
        issued_at=NOW - draw(seconds),
        not_before=not_before,
        expires=not_before + timedelta(seconds=draw(st.integers(1, 10**9))),
        previous=None if version == 1 else draw(st.binary(min_size=32, max_size=32)).hex(),
        poll_interval=draw(st.integers(min_value=60, max_value=86400)),
        report_uri=draw(st.none() | st.just("https://reports.example.com/v1/reports")),
        pinsets=tuple(draw(pinsets(h)) for h in host_names),
    )


@PROPERTY
@given(manifest=manifests())
def test_manifest_canonical_round_trip(manifest: Manifest) -> None:
    canonical = manifest.to_bytes()
    parsed = Manifest.from_bytes(canonical)
    assert parsed.to_bytes() == canonical
    assert parsed == manifest


@PROPERTY
@given(
    n_root=st.integers(1, 4),
    n_publisher=st.integers(1, 4),
    data=st.data(),
)
def test_root_canonical_round_trip(n_root: int, n_publisher: int, data: st.DataObject) -> None:
    root_keys = [key(f"rt-root-{i}") for i in range(n_root)]
    publisher_keys = [key(f"rt-pub-{i}") for i in range(n_publisher)]
    root = root_document(
        data.draw(st.integers(1, 2**53 - 1)),
        root_keys,
        publisher_keys,
        root_threshold=data.draw(st.integers(1, n_root)),
        publisher_threshold=data.draw(st.integers(1, n_publisher)),
    )
    canonical = root.to_bytes()
    assert Root.from_bytes(canonical).to_bytes() == canonical


# --- the trusted version never decreases -------------------------------------------------

OPERATIONS = st.lists(
    st.tuples(st.sampled_from(["publish", "replay", "fork", "equal_other"]), st.integers(0, 50)),
    min_size=1,
    max_size=12,
)


@PROPERTY
@given(operations=OPERATIONS)
def test_trusted_version_never_decreases(operations: list[tuple[str, int]]) -> None:
    deployment = Deployment(root_keys=[key("seq-root")], publisher_keys=[key("seq-publisher")])
    trusted = TrustedSet.from_anchor(deployment.roots[0], reference_time=NOW)
    trusted.update_manifest(deployment.publish())
    for operation, pick in operations:
        assert trusted.floor is not None
        before = snapshot(trusted)
        version_before = trusted.floor.version
        if operation == "publish":
            offered = deployment.publish()
        elif operation == "replay":
            offered = deployment.manifests[pick % len(deployment.manifests)]
        elif operation == "fork":
            offered = manifest_envelope(
                manifest_document(
                    trusted.floor.version + 1,
                    previous=payload_hash(deployment.manifests[0])
                    if trusted.floor.version > 1
                    else "0" * 64,
                ),
                deployment.publisher_keys,
            )
        else:
            offered = manifest_envelope(
                manifest_document(
                    trusted.floor.version,
                    previous=None if trusted.floor.version == 1 else "1" * 64,
                    poll_interval=60 + pick,
                ),
                deployment.publisher_keys,
            )
        try:
            trusted.update_manifest(offered)
        except (RollbackError, ForkError):
            assert snapshot(trusted) == before
        assert trusted.floor.version >= version_before
    assert trusted.floor is not None
    assert trusted.floor.version == deployment.manifest_version
