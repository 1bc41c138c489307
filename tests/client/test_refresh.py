"""PinClient.refresh against an honest mirror: conditional polls, root walks, durable
state that is re-verified from the shipped root on every load, and the clock."""

from __future__ import annotations

import json
import logging
from datetime import timedelta
from pathlib import Path

import pytest

from pinserver.client.state import STATE_FILE, StoredState, decode_state, encode_state
from pinserver.errors import ExpiredError
from tests.client.conftest import Clock, MakeClient
from tests.factory import NOW, Deployment, fake_pin, pinset
from tests.support.mirror import Mirror

MANIFEST = "/v1/manifest.json"


def test_first_refresh_accepts_then_polls_are_one_conditional_request(
    deployment: Deployment, mirror: Mirror, make_client: MakeClient, state_dir: Path
) -> None:
    deployment.publish()
    mirror.serve_deployment(deployment)
    client = make_client()
    assert client.manifest_version is None

    first = client.refresh()
    assert first.updated
    assert (first.root_version, first.manifest_version) == (1, 1)
    assert first.changed_hosts == ("updates.example.com",)
    assert (state_dir / STATE_FILE).exists()

    state_before = (state_dir / STATE_FILE).read_bytes()
    mirror.seen.clear()
    second = client.refresh()
    assert not second.updated
    assert second.not_modified
    assert second.manifest_version == 1
    # One request, conditional, answered 304; no root fetched.
    assert [s.path for s in mirror.seen] == [MANIFEST]
    assert mirror.seen[0].headers["If-None-Match"].startswith('"')
    assert (state_dir / STATE_FILE).read_bytes() == state_before


def test_new_version_replaces_pins_and_reports_what_changed(
    deployment: Deployment, mirror: Mirror, make_client: MakeClient
) -> None:
    deployment.publish(pinsets=[pinset("a.example.com"), pinset("b.example.com")])
    mirror.serve_deployment(deployment)
    client = make_client()
    client.refresh()
    old_b = client.pins_for("b.example.com")

    deployment.publish(
        pinsets=[pinset("a.example.com"), pinset("b.example.com", [fake_pin("new")])]
    )
    mirror.serve_deployment(deployment)
    result = client.refresh()
    assert result.updated
    assert (result.previous_manifest_version, result.manifest_version) == (1, 2)
    assert result.changed_hosts == ("b.example.com",)
    new_b = client.pins_for("b.example.com")
    assert new_b is not None
    assert old_b is not None
    assert fake_pin("new") in new_b.hashes
    assert fake_pin("new") not in old_b.hashes


def test_same_manifest_without_etag_is_nothing_new(
    deployment: Deployment, mirror: Mirror, make_client: MakeClient
) -> None:
    mirror.send_etags = False
    deployment.publish()
    mirror.serve_deployment(deployment)
    client = make_client()
    assert client.refresh().updated
    again = client.refresh()
    assert not again.updated
    assert not again.not_modified
    assert again.manifest_version == 1


def test_publisher_rotation_walks_roots_until_404(
    deployment: Deployment, mirror: Mirror, make_client: MakeClient
) -> None:
    deployment.publish()
    mirror.serve_deployment(deployment)
    client = make_client()
    client.refresh()

    deployment.rotate_publisher()
    deployment.publish()
    mirror.serve_deployment(deployment)
    mirror.seen.clear()
    result = client.refresh()
    assert result.updated
    assert (result.root_version, result.manifest_version) == (2, 2)
    # The manifest fails under root 1, so the client walks 2, 3 (404), then verifies.
    assert [s.path for s in mirror.seen] == [MANIFEST, "/v1/roots/2.json", "/v1/roots/3.json"]


def test_manifest_naming_a_newer_root_walks_exactly_to_it(
    deployment: Deployment, mirror: Mirror, make_client: MakeClient
) -> None:
    deployment.publish()
    mirror.serve_deployment(deployment)
    client = make_client()
    client.refresh()

    deployment.rotate_root()  # root keys change, publisher stays: signatures still pass
    deployment.publish()
    mirror.serve_deployment(deployment)
    mirror.seen.clear()
    result = client.refresh()
    assert (result.root_version, result.manifest_version) == (2, 2)
    assert [s.path for s in mirror.seen] == [MANIFEST, "/v1/roots/2.json"]


def test_saved_state_loads_without_network_and_reverified(
    deployment: Deployment, mirror: Mirror, make_client: MakeClient
) -> None:
    deployment.publish()
    deployment.rotate_publisher()
    deployment.publish()
    mirror.serve_deployment(deployment)
    make_client().refresh()
    mirror.stop()

    reloaded = make_client()
    assert reloaded.load_problem is None
    assert (reloaded.root_version, reloaded.manifest_version) == (2, 2)
    assert reloaded.pins_for("updates.example.com") is not None


def test_corrupt_state_falls_back_to_the_shipped_root(
    deployment: Deployment, mirror: Mirror, make_client: MakeClient, state_dir: Path
) -> None:
    deployment.publish()
    mirror.serve_deployment(deployment)
    make_client().refresh()
    path = state_dir / STATE_FILE
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))

    client = make_client()
    assert client.load_problem is not None
    assert "checksum" in client.load_problem
    assert (client.root_version, client.manifest_version) == (1, None)
    assert client.pins_for("updates.example.com") is None
    assert client.refresh().manifest_version == 1  # recovers from the network

    path.write_bytes(b"\x00garbage")
    assert make_client().load_problem is not None


def test_state_with_valid_checksum_but_foreign_roots_is_not_trusted(
    deployment: Deployment, mirror: Mirror, make_client: MakeClient, state_dir: Path
) -> None:
    """A writable cache is never a trust anchor: an attacker who rewrites state.json
    with a well-formed file (valid checksum) holding their own root and manifest gets
    nothing, because every load re-verifies from the shipped root."""
    attacker = Deployment()
    attacker.rotate_root()
    attacker.publish()
    forged = StoredState(
        roots=((2, attacker.roots[1]),), manifest=attacker.manifests[0], etags={}, time_floor=NOW
    )
    state_dir.mkdir()
    (state_dir / STATE_FILE).write_bytes(encode_state(forged))

    client = make_client()
    assert client.load_problem is not None
    assert "SignatureError" in client.load_problem
    assert (client.root_version, client.manifest_version) == (1, None)

    # Our own manifest paired with the file's stored root list emptied still verifies,
    # but a manifest swapped for the attacker's under our root does not.
    deployment.publish()
    mirror.serve_deployment(deployment)
    client.refresh()
    stored = decode_state((state_dir / STATE_FILE).read_bytes())
    swapped = StoredState(roots=(), manifest=attacker.manifests[0], time_floor=stored.time_floor)
    (state_dir / STATE_FILE).write_bytes(encode_state(swapped))
    assert make_client().manifest_version is None


def test_newer_shipped_root_supersedes_stored_roots(
    deployment: Deployment, mirror: Mirror, make_client: MakeClient
) -> None:
    deployment.publish()
    deployment.rotate_root()
    deployment.publish()
    mirror.serve_deployment(deployment)
    make_client().refresh()
    # The application upgrades and now ships root 2 as its anchor.
    upgraded = make_client(trusted_root=deployment.roots[1])
    assert upgraded.load_problem is None
    assert (upgraded.root_version, upgraded.manifest_version) == (2, 2)


def test_expired_manifest_policy_ca_only_vs_fail_closed(
    deployment: Deployment,
    mirror: Mirror,
    make_client: MakeClient,
    clock: Clock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    deployment.publish(expires=NOW + timedelta(days=2))
    mirror.serve_deployment(deployment)
    ca_only = make_client()
    ca_only.refresh()
    fail_closed = make_client(on_expiry="fail-closed")
    assert ca_only.pins_for("updates.example.com") is not None

    clock.advance(days=3)  # the mirror keeps serving the same manifest: a freeze
    with caplog.at_level(logging.WARNING, logger="pinserver.client"):
        result = ca_only.refresh()
    assert result.manifest_expired
    assert not result.enforcing
    assert "NOT enforced" in caplog.text
    assert ca_only.pins_for("updates.example.com") is None
    assert not ca_only.is_enforcing()

    assert fail_closed.pins_for("updates.example.com") is not None
    assert fail_closed.refresh().enforcing


def test_time_floor_defeats_clock_rollback(
    deployment: Deployment, mirror: Mirror, make_client: MakeClient, clock: Clock
) -> None:
    clock.advance(days=10)
    deployment.publish(issued_at=NOW + timedelta(days=10), expires=NOW + timedelta(days=40))
    mirror.serve_deployment(deployment)
    client = make_client()
    client.refresh()

    # A manifest that was valid until day 5; with the clock wound back to day 0 it
    # would pass, but the client never believes a time before what it has seen.
    clock.now = NOW
    assert client.now() == NOW + timedelta(days=10)
    deployment.publish(issued_at=NOW - timedelta(days=1), expires=NOW + timedelta(days=5))
    mirror.serve_deployment(deployment)
    with pytest.raises(ExpiredError):
        client.refresh()
    assert client.manifest_version == 1
    # The floor survives a restart.
    assert make_client().now() == NOW + timedelta(days=10)


def test_state_file_is_json_with_a_checksum(
    deployment: Deployment, mirror: Mirror, make_client: MakeClient, state_dir: Path
) -> None:
    deployment.publish()
    mirror.serve_deployment(deployment)
    make_client().refresh()
    outer = json.loads((state_dir / STATE_FILE).read_bytes())
    assert set(outer) == {"format", "sha256", "state"}
    assert set(outer["state"]) == {"roots", "manifest", "etags", "time_floor"}
    assert list(outer["state"]["etags"]) == [mirror.url]
    assert not list(state_dir.glob(".*.tmp"))


def test_expired_final_root_freezes_updates(
    deployment: Deployment, mirror: Mirror, make_client: MakeClient, clock: Clock
) -> None:
    deployment.publish()
    mirror.serve_deployment(deployment)
    client = make_client()
    client.refresh()
    clock.advance(days=400)  # root 1 expires at NOW + 365 days
    deployment.publish(issued_at=NOW + timedelta(days=399), expires=NOW + timedelta(days=430))
    mirror.serve_deployment(deployment)
    with pytest.raises(ExpiredError) as raised:
        client.refresh()
    assert raised.value.code == "root_expired"
    assert client.manifest_version == 1
