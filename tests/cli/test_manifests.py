"""manifest new, sign, verify and lint (with and without live chains), offline."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from pinserver.documents import Manifest
from pinserver.envelope import Envelope
from pinserver.pins import spki_sha256
from tests.cli.conftest import RunCli, TlsChain, write_pins_file
from tests.factory import fake_pin

REPO = Path(__file__).resolve().parents[2]


def ok(result: object) -> None:
    assert getattr(result, "exit_code", None) == 0, result


@pytest.fixture
def signed_root(run: RunCli) -> Path:
    """root-1.json (1-of-1 root, 1-of-1 publisher, 365 days), keys unencrypted."""
    for name in ("root", "pub"):
        ok(run("keygen", name, "--dir", "keys", "--no-passphrase"))
    ok(
        run(
            "root", "new", "--root-key", "keys/root.pub", "--root-threshold", "1",
            "--publisher-key", "keys/pub.pub", "--publisher-threshold", "1", "-o", "root-1.json",
        )
    )  # fmt: skip
    ok(run("sign", "root-1.json", "--key", "keys/root.key"))
    return Path("root-1.json").resolve()


def manifest_of(path: str) -> tuple[Envelope, Manifest]:
    envelope = Envelope.from_bytes(Path(path).read_bytes())
    return envelope, Manifest.from_bytes(envelope.payload)


def test_offline_manifest_chain(run: RunCli, signed_root: Path) -> None:
    shutil.copy(REPO / "keys.example" / "DEMO-ONLY-pins.toml", "pins.toml")
    ok(run("manifest", "new", "pins.toml", "--first", "-o", "m1.json"))
    envelope1, first = manifest_of("m1.json")
    assert envelope1.signatures == ()
    assert (first.version, first.previous, first.root_version) == (1, None, 1)
    assert first.poll_interval == 3600  # from the pins file
    api = first.pinset("api.example.com")
    assert api is not None
    assert (api.mode, api.include_subdomains) == ("report", False)  # default filled in

    unsigned = run("verify", "m1.json", "--root", "root-1.json")
    assert unsigned.exit_code == 1
    assert "0 of 1 required -> NOT MET" in unsigned.stdout
    assert "(no signatures)" in unsigned.stdout

    ok(run("sign", "m1.json", "--key", "keys/pub.key", "--root", "root-1.json"))
    ok(run("verify", "m1.json", "--root", "root-1.json"))

    made = run(
        "manifest", "new", "pins.toml", "--previous", "m1.json", "--expires", "20d",
        "--poll-interval", "600", "--report-uri", "https://pins.example.com/v1/reports",
        "-o", "m2.json", "--json",
    )  # fmt: skip
    ok(made)
    summary = json.loads(made.stdout)
    _envelope2, second = manifest_of("m2.json")
    assert second.version == summary["version"] == 2
    assert second.previous == hashlib.sha256(envelope1.payload).hexdigest()
    assert (second.poll_interval, second.report_uri) == (600, "https://pins.example.com/v1/reports")
    assert (second.expires - second.issued_at).days == 20

    ok(run("sign", "m2.json", "--key", "keys/pub.key"))
    verdict = run("verify", "m2.json", "--root", "root-1.json", "--json")
    ok(verdict)
    report = json.loads(verdict.stdout)
    assert report["valid"] is True
    assert report["version"] == 2
    assert report["checks"][0]["rule"] == "publisher threshold of root 1"


def test_signing_a_manifest_with_a_root_key_warns_and_verify_says_why(
    run: RunCli, signed_root: Path
) -> None:
    write_pins_file(Path("pins.json"), {"a.example.com": (fake_pin("p"), fake_pin("b"))})
    ok(run("manifest", "new", "pins.json", "--first", "-o", "m.json"))
    signed = run("sign", "m.json", "--key", "keys/root.key", "--root", "root-1.json")
    ok(signed)
    assert "is not a publisher key of root 1" in signed.stderr
    verdict = run("verify", "m.json", "--root", "root-1.json")
    assert verdict.exit_code == 1
    assert "not a key of this role, ignored" in verdict.stdout


def test_pins_file_without_a_backup_pin_is_refused_in_plain_words(run: RunCli) -> None:
    one, two = fake_pin("1"), fake_pin("2")
    Path("pins.toml").write_text(
        '[[pinsets]]\nhost = "a.example.com"\nexpires = 2027-12-01T00:00:00Z\n'
        f'pins = [{{ sha256 = "{one}", role = "primary" }},'
        f' {{ sha256 = "{two}", role = "primary" }}]\n'
    )
    result = run("manifest", "new", "pins.toml", "--first", "-o", "m.json")
    assert result.exit_code == 1
    assert "error [backup_pin_required]" in result.stderr
    assert "a.example.com has no backup pin" in result.stderr
    assert "what to do: add a backup pin" in result.stderr
    assert not Path("m.json").exists()


def test_pins_file_typos_are_named(run: RunCli) -> None:
    write_pins_file(
        Path("pins.json"), {"a.example.com": (fake_pin("1"), fake_pin("2"))}, poll_intervall=60
    )
    result = run("manifest", "new", "pins.json", "--first", "-o", "m.json")
    assert result.exit_code == 1
    assert "poll_intervall" in result.stderr


def test_manifest_new_needs_exactly_one_source(run: RunCli) -> None:
    write_pins_file(Path("pins.json"), {"a.example.com": (fake_pin("1"), fake_pin("2"))})
    result = run("manifest", "new", "pins.json", "-o", "m.json")
    assert result.exit_code == 2
    assert "exactly one of --server URL, --previous FILE, --first" in result.stderr


def test_lint_error_when_the_manifest_outlives_its_root(run: RunCli) -> None:
    for name in ("root", "pub"):
        ok(run("keygen", name, "--dir", "keys", "--no-passphrase"))
    ok(
        run(
            "root", "new", "--root-key", "keys/root.pub", "--root-threshold", "1",
            "--publisher-key", "keys/pub.pub", "--publisher-threshold", "1",
            "--expires", "10d", "-o", "root-1.json",
        )
    )  # fmt: skip
    ok(run("sign", "root-1.json", "--key", "keys/root.key"))
    write_pins_file(Path("pins.json"), {"a.example.com": (fake_pin("1"), fake_pin("2"))})
    ok(run("manifest", "new", "pins.json", "--first", "--expires", "30d", "-o", "m.json"))
    result = run("lint", "m.json", "--root", "root-1.json")
    assert result.exit_code == 1
    assert "error: [expires_after_root]" in result.stdout
    as_json = json.loads(run("lint", "m.json", "--root", "root-1.json", "--json").stdout)
    assert as_json["ok"] is False
    assert [f["code"] for f in as_json["findings"]] == ["expires_after_root"]
    # Without the root the rule cannot be checked, and nothing else is wrong.
    ok(run("lint", "m.json"))


def test_lint_warnings_exit_zero(run: RunCli) -> None:
    write_pins_file(
        Path("pins.json"), {"a.example.com": (fake_pin("1"), fake_pin("2"))}, poll_interval=86400
    )
    ok(run("manifest", "new", "pins.json", "--first", "--expires", "5d", "-o", "m.json"))
    result = run("lint", "m.json", "--json")
    ok(result)
    codes = {f["code"] for f in json.loads(result.stdout)["findings"]}
    assert codes == {"manifest_expiring_soon", "poll_interval_too_long"}


def test_lint_connect_matches_the_live_chain(
    run: RunCli, tls_chain: TlsChain, tls_server: int
) -> None:
    intermediate = spki_sha256(tls_chain.intermediate.cert_pem.bytes())
    write_pins_file(Path("good.json"), {"localhost": (intermediate, fake_pin("reserve"))})
    ok(run("manifest", "new", "good.json", "--first", "-o", "good-m.json"))
    target = f"localhost=127.0.0.1:{tls_server}"
    live = ("--connect", "--cafile", str(tls_chain.ca_file), "--connect-to", target)
    good = run("lint", "good-m.json", *live, "--json")
    ok(good)
    assert json.loads(good.stdout)["ok"] is True

    write_pins_file(Path("bad.json"), {"localhost": (fake_pin("old"), fake_pin("reserve"))})
    ok(run("manifest", "new", "bad.json", "--first", "-o", "bad-m.json"))
    bad = run("lint", "bad-m.json", *live)
    assert bad.exit_code == 1
    assert "error: [pin_not_in_live_chain] localhost:" in bad.stdout

    # The leaf key pinned as "backup" is in the live chain: it is no backup.
    leaf = spki_sha256(tls_chain.leaf.cert_chain_pems[0].bytes())
    write_pins_file(Path("warn.json"), {"localhost": (intermediate, leaf)})
    ok(run("manifest", "new", "warn.json", "--first", "-o", "warn-m.json"))
    warn = run("lint", "warn-m.json", *live)
    ok(warn)
    assert "warning: [backup_in_live_chain]" in warn.stdout


def test_lint_connect_reports_a_host_it_cannot_check(run: RunCli, tls_chain: TlsChain) -> None:
    write_pins_file(Path("pins.json"), {"localhost": (fake_pin("1"), fake_pin("2"))})
    ok(run("manifest", "new", "pins.json", "--first", "-o", "m.json"))
    import socket

    with socket.create_server(("127.0.0.1", 0)) as closed:
        port = closed.getsockname()[1]
    result = run("lint", "m.json", "--connect", "--connect-to", f"localhost=127.0.0.1:{port}")
    assert result.exit_code == 1
    assert "[live_chain_unavailable] localhost: cannot check localhost" in result.stdout


def test_lint_and_manifest_help_have_examples(run: RunCli) -> None:
    for command in (["manifest", "new"], ["lint"], ["publish"]):
        result = run(*command, "--help")
        assert result.exit_code == 0
        assert "Example" in result.stdout
