"""Rollback and indefinite freeze: the attacker replays what the real server said
earlier, or keeps saying the same thing forever. It controls every response and has
a recording of every document ever published; it holds no key."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
import requests

from pinserver.client.state import STATE_FILE
from pinserver.errors import ExpiredError, RollbackError, SignatureError
from tests.attacks.conftest import HOST, Stage
from tests.factory import fake_pin, pinset
from tests.support.mitm import Freeze, Replace

MANIFEST = "/v1/manifest.json"


@pytest.mark.parametrize("version", [1, 2])
def test_rollback_to_an_older_manifest_is_refused(stage: Stage, version: int) -> None:
    """Attack: replay manifest 1 (signed by keys since retired) or 2 (current keys) to
    bring back older pins. Defence: versions never go backwards (rule 3); manifest 1
    also fails the current publisher threshold."""
    stage.mitm.rules[MANIFEST] = Replace(stage.deployment.manifests[version - 1])
    with pytest.raises(RollbackError if version == 2 else SignatureError):
        stage.client.refresh()
    stage.assert_untouched()


def test_rollback_of_the_root_is_refused(stage: Stage) -> None:
    """Attack: offer root 1 again as the "next" root, with a manifest signed by the
    retired publisher keys that only root 1 trusts. Defence: the root walk takes
    exactly version N+1 signed by N's root role; an older root is a rollback."""
    stage.mitm.rules[MANIFEST] = Replace(
        stage.deployment.next_manifest(
            signers=stage.upstream.retired_publisher,
            pinsets=stage.attacker_pinsets(),
            issued_at=stage.clock.now - timedelta(hours=1),
            expires=stage.clock.now + timedelta(days=30),
        )
    )
    stage.mitm.rules["/v1/roots/3.json"] = Replace(stage.deployment.roots[0])
    with pytest.raises(RollbackError):
        stage.client.refresh()
    stage.assert_untouched()


def test_indefinite_freeze_is_bounded_by_expiry(stage: Stage) -> None:
    """Attack: hide every update by serving the last manifest the client saw (and 304s)
    forever, while the real server publishes new pins. Defence: the client cannot tell
    a quiet week from a freeze, but a manifest has ``expires``: past it the client
    reports the freeze on every poll; with ``fail-closed`` the last good pins stay
    enforced, with ``ca-only`` (the default) they lapse to CA validation, by design."""
    stage.mitm.rules[MANIFEST] = Freeze()
    stage.upstream.publish(pinsets=[pinset(HOST, [fake_pin("hidden update")])])
    result = stage.client.refresh()
    assert not result.updated
    assert not result.manifest_expired
    stage.assert_untouched()

    expires = stage.client.manifest.expires  # type: ignore[union-attr]
    stage.clock.now = expires + timedelta(seconds=1)
    result = stage.client.refresh()
    assert not result.updated
    assert result.manifest_expired
    assert not result.enforcing
    assert stage.client.pins_for(HOST) is None  # ca-only: the documented trade-off

    closed = stage.new_client(on_expiry="fail-closed")
    result = closed.refresh()
    assert result.manifest_expired
    assert result.enforcing
    assert closed.pins_for(HOST) == stage.pins_before
    assert (stage.state_dir / STATE_FILE).read_bytes() == stage.state_before
    served = requests.get(stage.upstream.url + "/healthz", timeout=10).json()
    assert served["manifest_version"] > stage.versions_before[1]  # the hidden update


def test_replay_of_an_expired_manifest_is_refused(stage: Stage, tmp_path: Path) -> None:
    """Attack: a client installed later (or restored from an old backup) is fed a
    recording of the latest manifest long after it expired. Defence: rule 4,
    ``now < expires``; nothing is written for a rejected manifest."""
    later = stage.client.manifest.expires + timedelta(days=1)  # type: ignore[union-attr]
    stage.mitm.rules[MANIFEST] = Replace(stage.deployment.manifests[-1])
    late = stage.new_client(state_dir=tmp_path / "late", clock=lambda: later)
    with pytest.raises(ExpiredError):
        late.refresh()
    assert late.manifest_version is None
    assert late.pins_for(HOST) is None
    assert not (tmp_path / "late" / STATE_FILE).exists()
    stage.assert_untouched()
