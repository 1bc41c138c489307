"""``pinserver rotate``: the emergency rotation, with a fielded client watching.

Runbook 1 of docs/operations.md. The host's CA changes under it (old CA -> new CA);
the new CA's intermediate was the pre-placed backup pin, so clients keep working,
and ``rotate`` then makes it primary, drops the old one and places the next backup.
A rotation whose pin set the live chain would not match is refused before publication.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import requests

from pinserver.client import PinClient
from pinserver.errors import PinMismatchError
from tests.factory import fake_pin
from tests.ops.conftest import Deployment, RunCli, SwitchableHost, TwoCas, ok, publish_first

RESERVE = fake_pin("reserve key held offline")
RESERVE_2 = fake_pin("second reserve key")


def _get(client: PinClient, host: SwitchableHost, cas: TwoCas) -> int:
    with client.session() as session:
        response = session.get(host.url, timeout=10, verify=str(cas.ca_bundle))
        response.close()
        return response.status_code


def _version(url: str) -> int:
    return int(requests.get(url + "/healthz", timeout=10).json()["manifest_version"])


def test_emergency_rotation_keeps_a_fielded_client_working(
    run: RunCli, deployment: Deployment, live_host: SwitchableHost, two_cas: TwoCas, tmp_path: Path
) -> None:
    d = deployment
    old_int, new_int = two_cas.old.intermediate_pin, two_cas.new.intermediate_pin
    publish_first(d, {"localhost": [(old_int, "primary"), (new_int, "backup")]})
    client = PinClient(d.url, trusted_root=d.root1, state_dir=tmp_path / "client")
    assert client.refresh().manifest_version == 1
    assert _get(client, live_host, two_cas) == 200

    # 03:00: the old CA is gone; the host now serves the new CA's chain.
    live_host.serve("new")
    assert _get(client, live_host, two_cas) == 200  # the backup pin carries the clients

    common = [
        "rotate",
        "--server",
        d.url,
        "--root",
        d.root1,
        "--host",
        "localhost",
        *d.publisher_args(),
        "--cafile",
        str(two_cas.ca_bundle),
        "--connect-to",
        live_host.connect_to,
        "--yes",
    ]

    # A pin set without the key the host now serves is refused before publication.
    refused = run(*common, "--remove-pin", new_int, "--add-pin", f"{RESERVE}:backup", env=d.env)
    assert refused.exit_code == 1, refused.output
    assert "pin_not_in_live_chain" in refused.output
    assert "lint_failed" in refused.stderr
    assert _version(d.url) == 1

    # The real rotation: new intermediate primary, old one out, the next reserve in.
    result = ok(
        run(
            *common,
            "--add-pin",
            f"{new_int}:primary",
            "--remove-pin",
            old_int,
            "--add-pin",
            f"{RESERVE}:backup:held offline in the safe",
            env=d.env,
        )
    )
    assert f"- pin {old_int} primary" in result.stdout
    assert f"+ pin {RESERVE} backup (held offline in the safe)" in result.stdout
    assert f"~ pin {new_int}" in result.stdout
    assert "the server serves it now" in result.stdout
    assert _version(d.url) == 2

    assert client.refresh().manifest_version == 2
    pinset = client.pins_for("localhost")
    assert pinset is not None
    assert {(p.sha256, p.role) for p in pinset.pins} == {(new_int, "primary"), (RESERVE, "backup")}
    assert _get(client, live_host, two_cas) == 200

    # What the live check protects against: forced through, the same bad pin set locks
    # the fielded client out on its next refresh.
    forced = ok(
        run(
            *common,
            "--remove-pin",
            new_int,
            "--add-pin",
            f"{RESERVE_2}:backup",
            "--force",
            "--reason",
            "test: show what the live check prevents",
            "--json",
            env=d.env,
        )
    )
    assert json.loads(forced.stdout)["forced"] == "test: show what the live check prevents"
    client.refresh()
    with pytest.raises(PinMismatchError):
        _get(client, live_host, two_cas)
    client.close()


def test_rotate_explains_bad_input_and_publishes_nothing(
    run: RunCli, deployment: Deployment, two_cas: TwoCas
) -> None:
    d = deployment
    old_int, new_int = two_cas.old.intermediate_pin, two_cas.new.intermediate_pin
    publish_first(d, {"localhost": [(old_int, "primary"), (new_int, "backup")]})
    base = ["rotate", "--server", d.url, "--root", d.root1, *d.publisher_args(), "--yes"]

    unknown_host = run(*base, "--host", "nope.example", "--add-pin", RESERVE, env=d.env)
    assert unknown_host.exit_code == 2
    assert "nope.example has no pin set in manifest 1" in unknown_host.output

    not_a_pin = run(*base, "--host", "localhost", "--remove-pin", RESERVE, env=d.env)
    assert not_a_pin.exit_code == 2
    assert "is not a pin of localhost" in not_a_pin.output

    # The backup-pin rule cannot be forced.
    no_backup = run(
        *base,
        "--host",
        "localhost",
        "--remove-pin",
        new_int,
        "--force",
        "--reason",
        "trying",
        env=d.env,
    )
    assert no_backup.exit_code == 1
    assert "backup_pin_required" in no_backup.stderr
    assert "refused, not published: the new pin set of localhost" in no_backup.stderr

    # The wrong key is caught before upload, with what would be needed.
    ok(run("keygen", "intruder", "--dir", "keys", "--no-passphrase"))
    wrong_key = run(
        "rotate",
        "--server",
        d.url,
        "--key",
        "keys/intruder.key",
        "--yes",
        "--host",
        "localhost",
        "--force",
        "--reason",
        "skip live",
        "--add-pin",
        f"{RESERVE}:backup",
    )
    assert wrong_key.exit_code == 1
    assert "do not meet the publisher threshold of root 1" in wrong_key.stderr

    # A confirmation that is declined publishes nothing.
    declined = run(
        *base[:-1],
        "--host",
        "localhost",
        "--force",
        "--reason",
        "skip live",
        "--add-pin",
        f"{RESERVE}:backup",
        env=d.env,
        input="n\n",
    )
    assert declined.exit_code == 1
    assert "aborted" in declined.stderr
    assert _version(d.url) == 1
