"""``pinserver history``: download everything, verify it offline, show what changed."""

from __future__ import annotations

import json
from pathlib import Path

from tests.factory import fake_pin
from tests.ops.conftest import Deployment, RunCli, ok, publish_first
from tests.support.mirror import Mirror

A_PRIMARY, A_BACKUP, A_NEW = fake_pin("a"), fake_pin("a-reserve"), fake_pin("a-new")
B_PIN, B_BACKUP = fake_pin("b"), fake_pin("b-reserve")


def _three_versions(run: RunCli, d: Deployment) -> None:
    publish_first(
        d,
        {
            "a.example": [(A_PRIMARY, "primary"), (A_BACKUP, "backup")],
            "b.example": [(B_PIN, "primary"), (B_BACKUP, "backup")],
        },
    )
    ok(
        run(
            "rotate",
            "--server",
            d.url,
            "--root",
            d.root1,
            *d.publisher_args(),
            "--host",
            "a.example",
            "--add-pin",
            A_NEW,
            "--remove-pin",
            A_PRIMARY,
            "--yes",
            "--force",
            "--reason",
            "a.example has no live host in this test",
            env=d.env,
        )
    )
    ok(run("renew", "--server", d.url, *d.publisher_args(), "--expires", "20d", env=d.env))


def test_history_verifies_the_whole_chain_and_diffs_two_versions(
    run: RunCli, deployment: Deployment, tmp_path: Path
) -> None:
    d = deployment
    _three_versions(run, d)
    result = ok(
        run("history", "--server", d.url, "--root", d.root1, "--diff", "1", "2", "--out", "audit")
    )
    lines = result.stdout.splitlines()
    assert "verified from root 1: 1" in lines[0]
    rows = [line.split() for line in lines[2:5]]
    assert [row[0] for row in rows] == ["1", "2", "3"]
    assert rows[0][-2:] == ["a.example,", "b.example"]
    assert rows[1][-1] == "a.example"
    assert rows[2][-1] == "-"  # renew changes no pins
    assert "3 of 3 manifest(s) verified" in result.stdout
    assert "manifest 1 -> manifest 2" in result.stdout
    assert f"+ pin {A_NEW} primary" in result.stdout
    assert f"- pin {A_PRIMARY} primary" in result.stdout
    assert "downloading manifests" in result.stderr  # the progress bar
    assert sorted(p.name for p in (tmp_path / "audit" / "manifests").iterdir()) == [
        "1.json",
        "2.json",
        "3.json",
    ]
    assert (tmp_path / "audit" / "roots" / "1.json").read_bytes() == Path(d.root1).read_bytes()

    as_json = json.loads(ok(run("history", "--server", d.url, "--root", d.root1, "--json")).stdout)
    assert as_json["ok"] is True
    assert as_json["breaks"] == []
    assert [m["hosts_changed"] for m in as_json["manifests"]] == [
        ["a.example", "b.example"],
        ["a.example"],
        [],
    ]

    bad = run("history", "--server", d.url, "--root", d.root1, "--diff", "1", "9")
    assert bad.exit_code == 2
    assert "version 9 is not among the verified versions (1..3)" in bad.stderr


def test_history_names_the_first_bad_version_of_a_tampered_server(
    run: RunCli, deployment: Deployment, tmp_path: Path
) -> None:
    """A server (or mirror) that drops version 2 from its history: the gap is caught."""
    d = deployment
    _three_versions(run, d)
    ok(run("history", "--server", d.url, "--root", d.root1, "--out", "honest"))
    honest = tmp_path / "honest"
    envelopes = [json.loads((honest / "manifests" / f"{v}.json").read_bytes()) for v in (1, 2, 3)]
    with Mirror() as mirror:
        mirror.files["/healthz"] = json.dumps(
            {"status": "ok", "root_version": 1, "manifest_version": 2}
        ).encode()
        mirror.files["/v1/roots/1.json"] = (honest / "roots" / "1.json").read_bytes()
        items = [{"version": v, "envelope": envelopes[v - 1], "published_at": "x"} for v in (1, 3)]
        mirror.files["/v1/history?after=0&limit=50"] = json.dumps(
            {"items": items, "next_after": None}
        ).encode()
        result = run("history", "--server", mirror.url, "--root", d.root1)
    assert result.exit_code == 1
    assert "history breaks at manifest 2" in result.stderr
    assert "version_mismatch" in result.stderr
    assert "1 of 2 manifest(s) verified" in result.stdout
