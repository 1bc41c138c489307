"""Any input to the envelope, document, trust and report parsers ends in a typed
pinserver error or a value: never an unhandled exception (a crash in a client's
refresh, or a 500 in the service)."""

from __future__ import annotations

import contextlib
import json
from datetime import timedelta

from hypothesis import given
from hypothesis import strategies as st

from pinserver.documents import Manifest, Root
from pinserver.envelope import Envelope
from pinserver.errors import FormatError, VerificationError
from pinserver.server.reports import parse_report
from pinserver.trust import ManifestFloor, TrustedSet, accept_manifest, verify_next_root
from tests.factory import NOW
from tests.fuzz.conftest import FUZZ
from tests.fuzz.strategies import (
    DEPLOYMENT,
    MANIFEST_PAYLOAD,
    MANIFEST_SEED,
    ROOT_PAYLOAD,
    ROOT_SEED,
    envelopes,
    json_values,
    payloads,
    tree_mutations,
)

TRUSTED_ROOT = Root.from_bytes(Envelope.from_bytes(DEPLOYMENT.roots[-1]).payload)
PREVIOUS_ROOT = Root.from_bytes(Envelope.from_bytes(DEPLOYMENT.roots[0]).payload)
FLOOR = ManifestFloor(1, Envelope.from_bytes(DEPLOYMENT.manifests[0]).payload_sha256)
REPORT = {
    "host": "api.example.com",
    "port": 443,
    "observed": ["47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="],
    "manifest_version": 7,
    "mode": "enforce",
    "time": "2026-12-03T12:00:00Z",
}


@FUZZ
@given(envelopes(MANIFEST_SEED) | envelopes(ROOT_SEED))
def test_envelope_parser_raises_only_format_errors(data: bytes) -> None:
    try:
        envelope = Envelope.from_bytes(data)
    except FormatError:
        return
    assert Envelope.from_bytes(envelope.to_bytes()) == envelope


@FUZZ
@given(payloads(MANIFEST_PAYLOAD))
def test_manifest_parser_raises_only_format_errors(data: bytes) -> None:
    try:
        manifest = Manifest.from_bytes(data)
    except FormatError:
        return
    assert Manifest.from_bytes(manifest.to_bytes()) == manifest


@FUZZ
@given(payloads(ROOT_PAYLOAD))
def test_root_parser_raises_only_format_errors(data: bytes) -> None:
    try:
        root = Root.from_bytes(data)
    except FormatError:
        return
    assert Root.from_bytes(root.to_bytes()) == root


@FUZZ
@given(envelopes(MANIFEST_SEED), st.integers(-40, 40))
def test_manifest_acceptance_raises_only_verification_errors(data: bytes, days: int) -> None:
    """The client's whole decision over hostile bytes, at times around the window."""
    with contextlib.suppress(VerificationError):
        accept_manifest(TRUSTED_ROOT, data, floor=FLOOR, reference_time=NOW + timedelta(days=days))


@FUZZ
@given(envelopes(ROOT_SEED))
def test_root_walk_raises_only_verification_errors(data: bytes) -> None:
    with contextlib.suppress(VerificationError):
        verify_next_root(PREVIOUS_ROOT, data)
    trusted = TrustedSet.from_anchor(DEPLOYMENT.roots[0], reference_time=NOW)
    anchor = list(trusted.roots)
    try:
        trusted.update_root(data)
    except VerificationError:
        refused = True
    else:
        refused = False
    if refused:  # a refused root changes nothing
        assert trusted.roots == anchor
        assert not trusted.floor_reset


@FUZZ
@given(
    st.one_of(
        st.binary(max_size=256),
        json_values.map(lambda v: json.dumps(v).encode()),
        tree_mutations(REPORT).map(lambda v: json.dumps(v).encode()),
    )
)
def test_report_parser_raises_only_format_errors(data: bytes) -> None:
    try:
        parse_report(data)
    except FormatError as e:
        status = e.status
    else:
        status = 202
    assert status in (400, 202)
