"""Arbitrary pins: the attacker on the path serves a manifest of its own making that
pins ``localhost`` to its own certificate. It controls every byte of the response but
holds no publisher key. Defence: the publisher threshold of the trusted root is
checked over PAE(payloadType, payload) before the payload is parsed."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from pinserver.envelope import MANIFEST_TYPE, ROOT_TYPE, Envelope
from pinserver.errors import EnvelopeError, SignatureError
from pinserver.keys import PrivateKey
from tests.attacks.conftest import Stage, keys, window
from tests.factory import sign_all
from tests.support.mitm import Replace

MANIFEST = "/v1/manifest.json"


def _unsigned(stage: Stage) -> bytes:
    return stage.deployment.next_manifest(signers=[], pinsets=stage.attacker_pinsets(), **window())


def _signed_by_the_attacker(stage: Stage) -> bytes:
    # The attacker's keys, and keyids it claims belong to the publisher role.
    return stage.deployment.next_manifest(
        signers=keys(2), pinsets=stage.attacker_pinsets(), **window()
    )


def _genuine_signatures_on_a_forged_payload(stage: Stage) -> bytes:
    genuine = Envelope.from_bytes(stage.deployment.manifests[-1])
    forged = Envelope.from_bytes(_unsigned(stage))
    return Envelope(MANIFEST_TYPE, forged.payload, genuine.signatures).to_bytes()


def _keyids_of_the_publisher_with_garbage_signatures(stage: Stage) -> bytes:
    forged = Envelope.from_bytes(_unsigned(stage))
    fake = [PrivateKey.generate() for _ in stage.deployment.publisher_keys]
    signed = sign_all(forged, fake)
    relabelled = tuple(
        type(s)(keyid=real.keyid, sig=s.sig)
        for s, real in zip(signed.signatures, stage.deployment.publisher_keys, strict=True)
    )
    return Envelope(MANIFEST_TYPE, forged.payload, relabelled).to_bytes()


def _genuinely_signed_but_relabelled_as_a_root(stage: Stage) -> bytes:
    genuine = Envelope.from_bytes(stage.deployment.manifests[-1])
    return Envelope(ROOT_TYPE, genuine.payload, genuine.signatures).to_bytes()


CASES: list[tuple[str, Callable[[Stage], bytes], type[Exception]]] = [
    ("unsigned manifest", _unsigned, SignatureError),
    ("signed by the attacker's own keys", _signed_by_the_attacker, SignatureError),
    (
        "genuine signatures on a forged payload",
        _genuine_signatures_on_a_forged_payload,
        SignatureError,
    ),
    (
        "publisher keyids over garbage signatures",
        _keyids_of_the_publisher_with_garbage_signatures,
        SignatureError,
    ),
    (
        "genuine manifest relabelled with another payloadType",
        _genuinely_signed_but_relabelled_as_a_root,
        EnvelopeError,
    ),
]


@pytest.mark.parametrize(("craft", "error"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_arbitrary_pins_are_refused(
    stage: Stage, craft: Callable[[Stage], bytes], error: type[Exception]
) -> None:
    """Attack: serve a manifest pinning the attacker's certificate.
    Attacker controls: the whole response to ``GET /v1/manifest.json`` (and every other path).
    Expected: a typed error; state, pins and enforcement unchanged."""
    stage.mitm.rules[MANIFEST] = Replace(craft(stage))
    with pytest.raises(error):
        stage.client.refresh()
    stage.assert_untouched()
