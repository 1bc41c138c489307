"""Signature games: fewer signatures than the threshold, the same signature counted
twice, a publisher key stolen after it was retired, and keys used outside their role.
The attacker controls every response; what keys it holds is said per test."""

from __future__ import annotations

import pytest

from pinserver.envelope import Envelope, Signature
from pinserver.errors import FormatError, SignatureError
from pinserver.keys import PrivateKey
from tests.attacks.conftest import Stage, keys, window
from tests.factory import root_document, root_envelope
from tests.support.mitm import Replace

MANIFEST = "/v1/manifest.json"


def _attack_manifest(stage: Stage, signers: list[PrivateKey]) -> bytes:
    return stage.deployment.next_manifest(
        signers=signers, pinsets=stage.attacker_pinsets(), **window()
    )


def test_below_threshold_signatures_are_refused(stage: Stage) -> None:
    """Attack: one stolen publisher key of three (threshold 2) signs the attacker's
    pins. Defence: the threshold counts distinct authorised keys with valid signatures."""
    crafted = _attack_manifest(stage, stage.deployment.publisher_keys[:1])
    stage.mitm.rules[MANIFEST] = Replace(crafted)
    with pytest.raises(SignatureError):
        stage.client.refresh()
    stage.assert_untouched()
    assert stage.upstream.post("/v1/manifests", crafted).status_code == 403


def test_duplicated_signatures_count_once(stage: Stage) -> None:
    """Attack: the one stolen key's signature listed twice (and under a second entry
    with the same keyid and a different, invalid signature) to reach the threshold of
    2. Defence: each keyid counts at most once."""
    one = Envelope.from_bytes(_attack_manifest(stage, stage.deployment.publisher_keys[:1]))
    sig = one.signatures[0]
    for extra in (sig, Signature(sig.keyid, bytes(64))):
        doubled = Envelope(one.payload_type, one.payload, (sig, extra)).to_bytes()
        stage.mitm.rules[MANIFEST] = Replace(doubled)
        with pytest.raises(SignatureError):
            stage.client.refresh()
        stage.assert_untouched()
        assert stage.upstream.post("/v1/manifests", doubled).status_code == 403


def test_publisher_keys_stolen_after_rotation_are_refused(stage: Stage) -> None:
    """Attack: every retired publisher key (root 1's publisher role, threshold met
    there) signs the attacker's pins as the next version. Defence: a client that has
    walked to root 2 counts only root 2's publisher keys; the server refuses too."""
    crafted = _attack_manifest(stage, stage.upstream.retired_publisher)
    stage.mitm.rules[MANIFEST] = Replace(crafted)
    with pytest.raises(SignatureError):
        stage.client.refresh()
    stage.assert_untouched()
    assert stage.upstream.post("/v1/manifests", crafted).status_code == 403


def test_root_keys_cannot_sign_manifests_nor_publisher_keys_roots(stage: Stage) -> None:
    """Attack: key reuse across roles: the (online-stolen) root key signs a manifest;
    the current publisher keys sign a root 3 that makes the attacker publisher.
    Defence: each role has its own key list; a key counts only for its role."""
    stage.mitm.rules[MANIFEST] = Replace(_attack_manifest(stage, stage.deployment.root_keys))
    with pytest.raises(SignatureError):
        stage.client.refresh()
    stage.assert_untouched()

    attacker = keys(1)
    forged_root = root_envelope(
        root_document(3, stage.deployment.root_keys, attacker), stage.deployment.publisher_keys
    )
    stage.mitm.rules[MANIFEST] = Replace(
        stage.deployment.next_manifest(
            signers=attacker, pinsets=stage.attacker_pinsets(), **window()
        )
    )
    stage.mitm.rules["/v1/roots/3.json"] = Replace(forged_root)
    with pytest.raises(SignatureError):
        stage.client.refresh()
    stage.assert_untouched()


def test_a_root_that_gives_one_key_two_roles_is_refused(stage: Stage) -> None:
    """Attack: key reuse across roles: a root 3, genuinely signed by the root holders
    (by mistake, or tricked), that also names the root key as publisher key, so that
    the online publisher machine would hold a key able to rotate the root. The
    attacker serves it with a manifest signed by that key. Defence: a root whose roles
    share a key is invalid (FormatError) for the server (422) and for the client."""
    deployment = stage.deployment
    reused = root_envelope(
        root_document(3, deployment.root_keys, deployment.root_keys), deployment.root_keys
    )
    assert stage.upstream.post("/v1/roots", reused).status_code == 422
    stage.mitm.rules["/v1/roots/3.json"] = Replace(reused)
    stage.mitm.rules[MANIFEST] = Replace(_attack_manifest(stage, deployment.root_keys))
    with pytest.raises(FormatError):
        stage.client.refresh()
    assert stage.mitm.requests_for("/v1/roots/3.json")
    stage.assert_untouched()
