"""docs/operations.md, runbooks 2 to 4, command by command as the document gives them.

(Runbook 1, emergency pin rotation, is tests/ops/test_rotate.py; runbook 5, the drill,
is tests/ops/test_drill.py.)
"""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

from pinserver.authoring import build_manifest, unsigned_envelope
from pinserver.client import PinClient
from pinserver.envelope import sign
from pinserver.keys import load_private_key
from pinserver.trust import verify_anchor_root
from tests.factory import fake_pin
from tests.ops.conftest import (
    Deployment,
    RunCli,
    SwitchableHost,
    TwoCas,
    keygen,
    make_root,
    ok,
    publish_first,
)
from tests.support.mirror import Mirror

PINS = {"api.example.com": [(fake_pin("api"), "primary"), (fake_pin("api-reserve"), "backup")]}


def test_runbook_2_publisher_key_compromise_and_fast_forward_recovery(
    run: RunCli, deployment: Deployment, tmp_path: Path
) -> None:
    d = deployment
    publish_first(d, PINS)
    state = tmp_path / "client-state"

    # The attacker holds the stolen publisher key and pushes a fielded client far ahead
    # through a mirror it controls: version 1000, pins of its choosing.
    stolen = load_private_key(Path(d.key("publisher")), b"correct horse")
    root1 = verify_anchor_root(Path(d.root1).read_bytes())
    now = root1.root.issued_at + timedelta(minutes=1)
    evil = build_manifest(
        [],
        version=1000,
        previous="e" * 64,
        root_version=1,
        issued_at=now,
        expires=now + timedelta(days=30),
    )
    with Mirror() as mirror:
        mirror.files["/v1/roots/1.json"] = Path(d.root1).read_bytes()
        mirror.files["/v1/manifest.json"] = sign(unsigned_envelope(evil), stolen).to_bytes()
        with PinClient(mirror.url, trusted_root=d.root1, state_dir=state) as victim:
            assert victim.refresh().manifest_version == 1000
            assert victim.pins_for("api.example.com") is None  # pins gone

    # Runbook: a new publisher key, root 2 naming it, signed by 2 of the 3 root holders.
    keygen(tmp_path, "publisher-2", passphrase=True)
    make_root(
        d,
        d.path("root-2.json"),
        version=2,
        root_keys=d.root_keys,
        threshold=2,
        publisher="publisher-2",
        signers=["root-a", "root-c"],
    )
    ok(run("verify", d.path("root-2.json"), "--root", d.root1))
    ok(run("publish", d.path("root-2.json"), "--server", d.url))
    renewed = ok(
        run(
            "renew",
            "--server",
            d.url,
            "--root",
            d.root1,
            *d.publisher_args("publisher-2"),
            "--expires",
            "30d",
            env=d.env,
        )
    )
    assert "moved from root 1" in renewed.stdout

    # The stolen key no longer counts.
    refused = run(
        "renew",
        "--server",
        d.url,
        "--root",
        d.root1,
        *d.publisher_args(),
        "--expires",
        "30d",
        env=d.env,
    )
    assert refused.exit_code == 1
    assert "do not meet the publisher threshold of root 2" in refused.stderr

    # The fielded client recovers from version 1000 down to the legitimate version 2.
    with PinClient(d.url, trusted_root=d.root1, state_dir=state) as recovered:
        result = recovered.refresh()
        assert (result.root_version, result.manifest_version) == (2, 2)
        pinset = recovered.pins_for("api.example.com")
        assert pinset is not None
        assert {p.sha256 for p in pinset.pins} == {s for s, _ in PINS["api.example.com"]}

    audit = json.loads(ok(run("history", "--server", d.url, "--root", d.root1, "--json")).stdout)
    assert audit["ok"] is True
    assert audit["roots_verified"] == [1, 2]


def test_runbook_3_root_key_rotation_k_of_n(
    run: RunCli, deployment: Deployment, tmp_path: Path
) -> None:
    d = deployment
    publish_first(d, PINS)
    new_holders = ["root-d", "root-e", "root-f"]
    for name in new_holders:
        keygen(tmp_path, name)
    root2 = make_root(
        d,
        d.path("root-2.json"),
        version=2,
        root_keys=new_holders,
        threshold=2,
        publisher="publisher",
        signers=["root-a", "root-b"],
    )

    # Two old holders are not enough: root 2 must also meet its own new threshold.
    half = run("publish", root2, "--server", d.url)
    assert half.exit_code == 1
    assert "root role of root 2" in half.stderr
    ok(run("sign", root2, "--key", d.key("root-d")))
    ok(run("sign", root2, "--key", d.key("root-e")))
    ok(run("verify", root2, "--root", d.root1))
    ok(run("publish", root2, "--server", d.url))

    # Follow with a manifest under root 2 at once (--if-expiring-within does not hold
    # it back when the root moved).
    moved = ok(
        run(
            "renew",
            "--server",
            d.url,
            "--root",
            d.root1,
            *d.publisher_args(),
            "--expires",
            "30d",
            "--if-expiring-within",
            "7d",
            env=d.env,
        )
    )
    assert "moved from root 1" in moved.stdout

    with PinClient(d.url, trusted_root=d.root1, state_dir=tmp_path / "client") as client:
        result = client.refresh()
        assert (result.root_version, result.manifest_version) == (2, 2)

    # The old root keys alone can no longer make root 3.
    root3 = make_root(
        d,
        d.path("root-3.json"),
        version=3,
        root_keys=d.root_keys,
        threshold=2,
        publisher="publisher",
        signers=["root-a", "root-b", "root-c"],
    )
    stale = run("publish", root3, "--server", d.url)
    assert stale.exit_code == 1
    assert "signature_threshold" in stale.stderr
    ok(run("history", "--server", d.url, "--root", d.root1))


def test_runbook_4_ca_migration_with_a_pre_placed_backup_pin(
    run: RunCli,
    deployment: Deployment,
    live_host: SwitchableHost,
    two_cas: TwoCas,
    tmp_path: Path,
) -> None:
    d = deployment
    old_int, new_int = two_cas.old.intermediate_pin, two_cas.new.intermediate_pin
    reserve = fake_pin("reserve key")
    publish_first(d, {"localhost": [(old_int, "primary"), (reserve, "backup")]})
    rotate = [
        "rotate",
        "--server",
        d.url,
        "--root",
        d.root1,
        *d.publisher_args(),
        "--host",
        "localhost",
        "--cafile",
        str(two_cas.ca_bundle),
        "--connect-to",
        live_host.connect_to,
        "--yes",
    ]
    monitor = [
        "monitor",
        "--server",
        d.url,
        "--root",
        d.root1,
        "--cafile",
        str(two_cas.ca_bundle),
        "--connect-to",
        live_host.connect_to,
    ]

    # Step 1, weeks ahead: the new CA's intermediate as an extra backup pin.
    ok(run(*rotate, "--add-pin", f"{new_int}:backup:next CA", env=d.env))
    with PinClient(d.url, trusted_root=d.root1, state_dir=tmp_path / "client") as client:
        client.refresh()  # step 2: clients pick it up within a poll interval
        # Step 3: switch the host to the new CA; monitor stays green.
        live_host.serve("new")
        ok(run(*monitor))
        with client.session() as session:
            assert session.get(live_host.url, verify=str(two_cas.ca_bundle)).status_code == 200
        # Step 4: the new intermediate becomes primary; the old one goes.
        ok(run(*rotate, "--add-pin", f"{new_int}:primary", "--remove-pin", old_int, env=d.env))
        assert client.refresh().manifest_version == 3
        pinset = client.pins_for("localhost")
        assert pinset is not None
        assert {(p.sha256, p.role) for p in pinset.pins} == {
            (new_int, "primary"),
            (reserve, "backup"),
        }
    ok(run(*monitor))
