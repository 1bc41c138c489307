"""Fast-forward: a manifest version pushed so high that the legitimate publisher's next
version looks like a rollback to every client, locking it out for good."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from pinserver.documents import MAX_VERSION
from pinserver.errors import SignatureError
from tests.attacks.conftest import (
    HOST,
    Stage,
    Upstream,
    keys,
    legitimate_history,
    new_deployment,
    serving,
    window,
)
from tests.factory import fake_pin, manifest_document, manifest_envelope, payload_hash, pinset
from tests.support.mitm import Replace

MANIFEST = "/v1/manifest.json"


def _far_future_manifest(stage: Stage, signers: list) -> bytes:  # type: ignore[type-arg]
    doc = manifest_document(
        MAX_VERSION,
        previous=payload_hash(stage.deployment.manifests[-1]),
        root_version=stage.deployment.root_version,
        pinsets=stage.attacker_pinsets(),
        **window(),
    )
    return manifest_envelope(doc, signers)


def test_fast_forward_without_the_keys_is_refused(stage: Stage) -> None:
    """Attack: serve version 2^53-1, signed by keys the attacker made (or by one stolen
    key, below the threshold of 2). Attacker controls: every response. Defence: the
    version is read only after the publisher threshold is met."""
    for signers in (keys(2), stage.deployment.publisher_keys[:1]):
        stage.mitm.rules[MANIFEST] = Replace(_far_future_manifest(stage, signers))
        with pytest.raises(SignatureError):
            stage.client.refresh()
        stage.assert_untouched()


def test_fast_forward_with_stolen_keys_is_undone_by_rotating_the_publisher(
    make_stage: Callable[..., Stage],
) -> None:
    """Attack: with a threshold of stolen publisher keys, push version 2^53-1 pinning the
    attacker's certificate. That manifest is accepted (the keys are genuine); the
    defence is recovery: the root holders rotate the publisher keys and the client,
    seeing the publisher role change, forgets its version floor (TUF 5.3.11), accepts
    the legitimate next version, and refuses the stolen keys from then on."""
    with serving(new_deployment()) as upstream:
        legitimate_history(upstream)
        stage = make_stage(upstream)
        stolen = upstream.deployment.publisher_keys[:2]
        stage.mitm.rules[MANIFEST] = Replace(_far_future_manifest(stage, stolen))
        assert stage.client.refresh().manifest_version == MAX_VERSION
        assert stage.client.pins_for(HOST).pins[0].sha256 == stage.pki.leaf_pin  # type: ignore[union-attr]

        _recover(upstream)
        stage.mitm.rules.clear()
        result = stage.client.refresh()
        assert result.updated
        assert (stage.client.root_version, stage.client.manifest_version) == (3, 4)
        recovered = stage.client.pins_for(HOST)
        assert recovered is not None
        assert recovered.pins[0].sha256 == fake_pin("after recovery")

        stage.mitm.rules[MANIFEST] = Replace(_far_future_manifest(stage, stolen))
        with pytest.raises(SignatureError):
            stage.client.refresh()
        stage.remember()
        stage.assert_untouched()


def _recover(upstream: Upstream) -> None:
    upstream.rotate_publisher(keys(3))
    upstream.publish(pinsets=[pinset(HOST, [fake_pin("after recovery")])])
