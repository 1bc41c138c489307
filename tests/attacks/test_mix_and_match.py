"""Mix and match: genuine, validly signed documents put together in a way the
publisher never did: another deployment's manifest or roots, or the signatures of one
genuine manifest on the payload of another. The attacker has every document any
pinserver has ever published and controls every response; it holds no key of ours."""

from __future__ import annotations

import pytest

from pinserver.envelope import Envelope
from pinserver.errors import SignatureError
from tests.attacks.conftest import Stage, window
from tests.factory import Deployment
from tests.support.mitm import Replace

MANIFEST = "/v1/manifest.json"


def _other_deployment(stage: Stage, *, rotations: int) -> Deployment:
    """Someone else's pinserver, genuinely signed by its own keys, at the same versions."""
    other = Deployment()
    for _ in range(rotations):
        other.rotate_root()
    while other.manifest_version < stage.deployment.manifest_version:
        other.publish(**window())
    other.publish(pinsets=stage.attacker_pinsets(), **window())
    return other


def test_manifest_from_another_root_chain_is_refused(stage: Stage) -> None:
    """Attack: another deployment's genuine manifest 4 (same root version), with that
    deployment's roots offered for the walk. Defence: only keys named by our root
    chain count; the foreign root 3 is not signed by our root role."""
    other = _other_deployment(stage, rotations=1)
    stage.mitm.rules[MANIFEST] = Replace(other.manifests[-1])
    stage.mitm.rules["/v1/roots/3.json"] = Replace(other.roots[1])
    with pytest.raises(SignatureError):
        stage.client.refresh()
    stage.assert_untouched()


def test_root_from_another_deployment_is_refused(stage: Stage) -> None:
    """Attack: a manifest naming root 3, and as root 3 another deployment's genuine
    root 3 that names the attacker's publisher. Defence: root N+1 must be signed by a
    threshold of trusted root N's root role."""
    other = _other_deployment(stage, rotations=2)
    stage.mitm.rules[MANIFEST] = Replace(other.manifests[-1])
    stage.mitm.rules["/v1/roots/3.json"] = Replace(other.roots[2])
    with pytest.raises(SignatureError):
        stage.client.refresh()
    assert stage.mitm.requests_for("/v1/roots/3.json")
    stage.assert_untouched()


def test_signatures_of_one_genuine_manifest_on_another_are_refused(stage: Stage) -> None:
    """Attack: manifest 1's payload (older pins) under manifest 3's genuine signatures,
    or the reverse. Defence: each signature covers PAE of exactly its own payload."""
    first = Envelope.from_bytes(stage.deployment.manifests[0])
    latest = Envelope.from_bytes(stage.deployment.manifests[-1])
    for payload, signatures in ((first.payload, latest.signatures), (latest.payload, ())):
        mixed = Envelope(latest.payload_type, payload, signatures + first.signatures)
        stage.mitm.rules[MANIFEST] = Replace(mixed.to_bytes())
        with pytest.raises(SignatureError):
            stage.client.refresh()
    stage.assert_untouched()
