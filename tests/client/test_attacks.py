"""Every attack a malicious mirror can try: each is rejected with a typed error, the
stored state is byte-for-byte unchanged, and the old pins stay enforced on a real
TLS handshake.

The client starts out trusting root 2 (the publisher key was rotated once) and
manifest 3, which pins ``localhost`` to a key the test server does not have:
every attack tries, in effect, to get that pin removed or replaced.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest

from pinserver.client import PinClient
from pinserver.client.state import STATE_FILE
from pinserver.envelope import MANIFEST_TYPE, ROOT_TYPE, Envelope
from pinserver.errors import PinMismatchError, PinserverError
from pinserver.keys import PrivateKey
from tests.client.conftest import Clock, MakeClient
from tests.factory import (
    NOW,
    Deployment,
    fake_pin,
    manifest_document,
    payload_hash,
    pinset,
    sign_all,
)
from tests.support.mirror import ENDLESS, Answer, Mirror, Trickle
from tests.support.tls_server import Pki, TlsServer

MANIFEST = "/v1/manifest.json"


@dataclass
class World:
    deployment: Deployment
    old_publisher: list[PrivateKey]
    pki: Pki

    def unpinned(self) -> list[object]:
        """Pin sets that would let the test server through."""
        return [pinset("localhost", [self.pki.leaf_pin])]


@dataclass(frozen=True)
class Attack:
    name: str
    error: str  # the error class name, or class:code
    craft: Callable[[World], dict[str, Answer]]
    client_timeout: float = 30.0


def _replay_older_manifest(w: World) -> dict[str, Answer]:
    return {MANIFEST: w.deployment.manifests[1]}  # manifest 2: same publisher, older


def _older_root(w: World) -> dict[str, Answer]:
    # A manifest only the old publisher signed forces a root walk; the mirror then
    # offers root 1 again as "root 3".
    crafted = w.deployment.next_manifest(signers=w.old_publisher, pinsets=w.unpinned())
    return {MANIFEST: crafted, "/v1/roots/3.json": w.deployment.roots[0]}


def _expired_manifest(w: World) -> dict[str, Answer]:
    crafted = w.deployment.next_manifest(
        pinsets=w.unpinned(),
        issued_at=NOW - timedelta(days=30),
        expires=NOW - timedelta(days=1),
    )
    return {MANIFEST: crafted}


def _revoked_publisher(w: World) -> dict[str, Answer]:
    return {MANIFEST: w.deployment.next_manifest(signers=w.old_publisher, pinsets=w.unpinned())}


def _fork(w: World) -> dict[str, Answer]:
    doc = manifest_document(4, previous="ab" * 32, root_version=2, pinsets=w.unpinned())
    crafted = sign_all(Envelope(MANIFEST_TYPE, doc.to_bytes()), w.deployment.publisher_keys)
    return {MANIFEST: crafted.to_bytes()}


def _wrong_payload_type(w: World) -> dict[str, Answer]:
    doc = manifest_document(
        4,
        previous=payload_hash(w.deployment.manifests[-1]),
        root_version=2,
        pinsets=w.unpinned(),
    )
    crafted = sign_all(Envelope(ROOT_TYPE, doc.to_bytes()), w.deployment.publisher_keys)
    return {MANIFEST: crafted.to_bytes()}


def _other_root_chain(w: World) -> dict[str, Answer]:
    other = Deployment()
    other.rotate_root()
    other.rotate_root()
    other.publish()
    other.publish()
    other.publish()
    other.publish(pinsets=w.unpinned())
    return {MANIFEST: other.manifests[-1], "/v1/roots/3.json": other.roots[2]}


def _endless_body(w: World) -> dict[str, Answer]:
    return {MANIFEST: ENDLESS}


def _slow_body(w: World) -> dict[str, Answer]:
    return {MANIFEST: Trickle(0.05)}


ATTACKS = [
    Attack("replay of an older manifest", "RollbackError", _replay_older_manifest),
    Attack("replay of an older root", "RollbackError", _older_root),
    Attack("expired manifest (freeze)", "ExpiredError:expired", _expired_manifest),
    Attack("manifest signed by a revoked publisher key", "SignatureError", _revoked_publisher),
    Attack("fork of the hash chain", "ForkError", _fork),
    Attack("wrong payloadType", "EnvelopeError:wrong_payload_type", _wrong_payload_type),
    Attack("manifest from another root chain", "SignatureError", _other_root_chain),
    Attack("endless body", "FetchError:response_too_large", _endless_body),
    Attack("slow body", "FetchError:fetch_timeout", _slow_body, client_timeout=1.0),
]


@pytest.mark.parametrize("attack", ATTACKS, ids=[a.name for a in ATTACKS])
def test_attack_is_rejected_state_unchanged_old_pins_enforced(
    *,
    attack: Attack,
    pki: Pki,
    tls_server: TlsServer,
    mirror: Mirror,
    make_client: MakeClient,
    state_dir: Path,
) -> None:
    deployment = Deployment()
    deployment.publish(pinsets=[pinset("localhost", [fake_pin("v1")])])
    old_publisher = deployment.publisher_keys
    deployment.rotate_publisher()
    deployment.publish(pinsets=[pinset("localhost", [fake_pin("v2")])])
    deployment.publish(pinsets=[pinset("localhost", [fake_pin("v3")])])
    mirror.serve_deployment(deployment, manifest_version=1)
    client = make_client(trusted_root=deployment.roots[0], timeout=attack.client_timeout)
    client.refresh()
    mirror.serve_deployment(deployment)
    assert client.refresh().manifest_version == 3
    assert client.root_version == 2
    pins_before = client.pins_for("localhost")
    state_before = (state_dir / STATE_FILE).read_bytes()

    mirror.files.update(attack.craft(World(deployment, old_publisher, pki)))
    with pytest.raises(PinserverError) as raised:
        client.refresh()
    error_name, _, code = attack.error.partition(":")
    assert type(raised.value).__name__ == error_name
    if code:
        assert raised.value.code == code

    assert (state_dir / STATE_FILE).read_bytes() == state_before
    assert client.pins_for("localhost") == pins_before
    assert (client.root_version, client.manifest_version) == (2, 3)
    restarted = make_client(trusted_root=deployment.roots[0])
    assert restarted.pins_for("localhost") == pins_before
    for each in (client, restarted):
        with each.session() as session, pytest.raises(PinMismatchError):
            session.get(tls_server.url_for("localhost"), timeout=10, verify=str(pki.ca_file))
    assert tls_server.requests == []


def test_frozen_mirror_is_bounded_by_expiry(
    deployment: Deployment, mirror: Mirror, make_client: MakeClient, clock: Clock
) -> None:
    """A mirror that keeps serving the last manifest (or answering 304) cannot keep a
    ca-only client on stale pins past the manifest's expires: it then falls back to
    CA validation and says so on every poll."""
    deployment.publish(expires=NOW + timedelta(days=7))
    mirror.serve_deployment(deployment)
    client: PinClient = make_client()
    client.refresh()
    clock.advance(days=8)
    result = client.refresh()
    assert result.not_modified
    assert result.manifest_expired
    assert not result.enforcing
    assert client.pins_for("updates.example.com") is None
