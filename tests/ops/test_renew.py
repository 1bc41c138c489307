"""``pinserver renew``: the cron job that keeps the manifest from expiring."""

from __future__ import annotations

import json

import requests

from pinserver.documents import Manifest
from pinserver.envelope import Envelope
from tests.factory import fake_pin
from tests.ops.conftest import Deployment, RunCli, ok, publish_first

PINS = {"api.example.com": [(fake_pin("api"), "primary"), (fake_pin("api-reserve"), "backup")]}


def _served(url: str, version: int) -> tuple[Envelope, Manifest]:
    response = requests.get(f"{url}/v1/manifests/{version}.json", timeout=10)
    response.raise_for_status()
    envelope = Envelope.from_bytes(response.content)
    return envelope, Manifest.from_bytes(envelope.payload)


def test_renew_does_nothing_while_the_window_is_long_then_republishes(
    run: RunCli, deployment: Deployment
) -> None:
    d = deployment
    publish_first(d, PINS)
    renew = ["renew", "--server", d.url, "--root", d.root1, *d.publisher_args()]

    idle = ok(run(*renew, "--expires", "30d", "--if-expiring-within", "7d", env=d.env))
    assert "nothing to do: manifest 1 has" in idle.stdout
    assert "more than 7d" in idle.stdout

    renewed = ok(
        run(*renew, "--expires", "60d", "--if-expiring-within", "45d", "--json", env=d.env)
    )
    summary = json.loads(renewed.stdout)
    assert summary["renewed"] is True
    assert (summary["previous_version"], summary["version"]) == (1, 2)
    assert summary["answer"]["confirmed"] is True

    first_envelope, first = _served(d.url, 1)
    _, second = _served(d.url, 2)
    assert second.pinsets == first.pinsets
    assert second.previous == first_envelope.payload_sha256
    assert (second.expires - second.issued_at).days == 60
    assert second.expires > first.expires

    # A window past the root's expiry (365 days) would freeze every client: refused.
    too_long = run(*renew, "--expires", "400d", env=d.env)
    assert too_long.exit_code == 1
    assert "expires_after_root" in too_long.stdout
    assert "not renewed" in too_long.stderr
    assert requests.get(d.url + "/healthz", timeout=10).json()["manifest_version"] == 2


def test_renew_without_a_manifest_or_a_passphrase_says_what_to_do(
    run: RunCli, deployment: Deployment
) -> None:
    d = deployment
    base = ["renew", "--server", d.url, "--expires", "30d"]
    nothing = run(*base, *d.publisher_args(), env=d.env)
    assert nothing.exit_code == 1
    assert "has no manifest yet" in nothing.stderr
    assert "manifest new --first" in nothing.stderr

    publish_first(d, PINS)
    no_env = run(*base, *d.publisher_args())
    assert no_env.exit_code == 2
    assert "PUBLISH_PASS is not set" in no_env.stderr
    wrong = run(*base, *d.publisher_args(), env={"PUBLISH_PASS": "wrong"})
    assert wrong.exit_code == 1
    assert "key_file" in wrong.stderr
