"""keygen, root new, sign and verify, run as a root ceremony would run them."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from pinserver.envelope import Envelope
from tests.cli.conftest import RunCli, write_pins_file
from tests.factory import fake_pin

PASS = {"HOLDER_PASS": "correct horse battery staple"}


def keygen(run: RunCli, name: str, *extra: str) -> str:
    result = run(
        "keygen", name, "--dir", "keys", "--passphrase-env", "HOLDER_PASS", *extra, env=PASS
    )
    assert result.exit_code == 0, result.stderr
    return result.stdout.strip()


def make_root(run: RunCli, *extra: str, output: str = "root-1.json") -> None:
    result = run(
        "root", "new", "--version", "1",
        "--root-key", "keys/a.pub", "--root-key", "keys/b.pub", "--root-key", "keys/c.pub",
        "--root-threshold", "2",
        "--publisher-key", "keys/pub.pub", "--publisher-threshold", "1",
        "--expires", "365d", "-o", output, *extra,
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr


def sign(run: RunCli, file: str, key: str, *extra: str) -> None:
    result = run("sign", file, "--key", f"keys/{key}.key", "--passphrase-env", "HOLDER_PASS",
                 *extra, env=PASS)  # fmt: skip
    assert result.exit_code == 0, result.stderr


@pytest.fixture
def holders(run: RunCli) -> dict[str, str]:
    """Three root key holders and one publisher, keys encrypted with a passphrase."""
    return {name: keygen(run, name) for name in ("a", "b", "c", "pub")}


def test_keygen_writes_encrypted_pkcs8_0600_and_openssl_reads_it(
    run: RunCli, tmp_path: Path, holders: dict[str, str]
) -> None:
    key_file = tmp_path / "keys" / "a.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert key_file.read_bytes().startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    # openssl agrees: the key decrypts with the passphrase and its public half is a.pub.
    derived = subprocess.run(
        ["openssl", "pkey", "-in", str(key_file), "-passin", "env:HOLDER_PASS", "-pubout"],
        env=PASS, capture_output=True, check=True,
    ).stdout  # fmt: skip
    assert derived == (tmp_path / "keys" / "a.pub").read_bytes()
    assert len(holders["a"]) == 64


def test_keygen_never_overwrites(run: RunCli, tmp_path: Path, holders: dict[str, str]) -> None:
    before = (tmp_path / "keys" / "a.key").read_bytes()
    result = run("keygen", "a", "--dir", "keys", "--no-passphrase")
    assert result.exit_code == 1
    assert "exists; refusing to overwrite" in result.stderr
    assert (tmp_path / "keys" / "a.key").read_bytes() == before


def test_keygen_refuses_a_path_as_name_and_conflicting_flags(run: RunCli) -> None:
    assert run("keygen", "../evil", "--no-passphrase").exit_code == 2
    result = run("keygen", "x", "--no-passphrase", "--passphrase-env", "HOLDER_PASS", env=PASS)
    assert result.exit_code == 2
    assert "exclude each other" in result.stderr


def test_keygen_prompts_for_a_confirmed_passphrase(run: RunCli, tmp_path: Path) -> None:
    result = run("keygen", "prompted", input="s3cret\ns3cret\n")
    assert result.exit_code == 0, result.stderr
    assert b"ENCRYPTED" in (tmp_path / "prompted.key").read_bytes()


def test_k_of_n_root_ceremony(run: RunCli, tmp_path: Path, holders: dict[str, str]) -> None:
    make_root(run)
    envelope = Envelope.from_bytes((tmp_path / "root-1.json").read_bytes())
    assert envelope.signatures == ()

    sign(run, "root-1.json", "a")
    one = run("verify", "root-1.json", "--root", "root-1.json")
    assert one.exit_code == 1
    assert "1 of 2 required -> NOT MET" in one.stdout
    assert f"{holders['a']}  valid, counted" in one.stdout
    assert "INVALID [signature_threshold]" in one.stdout

    sign(run, "root-1.json", "b")
    two = run("verify", "root-1.json", "--root", "root-1.json", "--json")
    assert two.exit_code == 0, two.stdout
    report = json.loads(two.stdout)
    assert report["valid"] is True
    [check] = report["checks"]
    assert (check["counted"], check["threshold"], check["met"]) == (2, 2, True)
    assert [s["keyid"] for s in check["signatures"]] == [holders["a"], holders["b"]]
    assert report["window"]["state"] == "valid"


def test_sign_refuses_a_second_signature_by_the_same_key(
    run: RunCli, tmp_path: Path, holders: dict[str, str]
) -> None:
    make_root(run)
    sign(run, "root-1.json", "a")
    before = (tmp_path / "root-1.json").read_bytes()
    again = run("sign", "root-1.json", "--key", "keys/a.key", "--passphrase-env", "HOLDER_PASS",
                env=PASS)  # fmt: skip
    assert again.exit_code == 1
    assert "already signed" in again.stderr
    assert "what to do:" in again.stderr
    assert (tmp_path / "root-1.json").read_bytes() == before


def test_sign_with_a_wrong_passphrase_changes_nothing(
    run: RunCli, tmp_path: Path, holders: dict[str, str]
) -> None:
    make_root(run)
    before = (tmp_path / "root-1.json").read_bytes()
    result = run("sign", "root-1.json", "--key", "keys/a.key", "--passphrase-env", "P",
                 env={"P": "wrong"})  # fmt: skip
    assert result.exit_code == 1
    assert "error [key_file]" in result.stderr
    assert "passphrase" in result.stderr
    assert (tmp_path / "root-1.json").read_bytes() == before


def test_sign_warns_when_the_key_is_not_in_the_roots_own_root_role(
    run: RunCli, holders: dict[str, str]
) -> None:
    make_root(run)
    result = run("sign", "root-1.json", "--key", "keys/pub.key", "--passphrase-env",
                 "HOLDER_PASS", env=PASS)  # fmt: skip
    assert result.exit_code == 0
    assert "not in the root role of root 1 itself" in result.stderr
    verdict = run("verify", "root-1.json", "--root", "root-1.json")
    assert f"{holders['pub']}  not a key of this role, ignored" in verdict.stdout


def test_sign_to_another_file_leaves_the_original(
    run: RunCli, tmp_path: Path, holders: dict[str, str]
) -> None:
    make_root(run)
    before = (tmp_path / "root-1.json").read_bytes()
    sign(run, "root-1.json", "a", "-o", "root-1.signed.json")
    assert (tmp_path / "root-1.json").read_bytes() == before
    signed = Envelope.from_bytes((tmp_path / "root-1.signed.json").read_bytes())
    assert signed.keyids == (holders["a"],)


def test_root_new_refuses_an_impossible_threshold(run: RunCli, holders: dict[str, str]) -> None:
    result = run(
        "root", "new", "--root-key", "keys/a.pub", "--root-threshold", "2",
        "--publisher-key", "keys/pub.pub", "--publisher-threshold", "1", "-o", "r.json",
    )  # fmt: skip
    assert result.exit_code == 1
    assert "roles.root.threshold: must be between 1 and 1" in result.stderr
    assert "what to do:" in result.stderr


def test_root_new_refuses_a_private_key_and_an_existing_output(
    run: RunCli, holders: dict[str, str]
) -> None:
    result = run(
        "root", "new", "--root-key", "keys/a.key", "--root-threshold", "1",
        "--publisher-key", "keys/pub.pub", "--publisher-threshold", "1", "-o", "r.json",
    )  # fmt: skip
    assert result.exit_code == 1
    assert "is a private key; pass the .pub file" in result.stderr
    make_root(run)
    again = run(
        "root", "new", "--root-key", "keys/a.pub", "--root-threshold", "1",
        "--publisher-key", "keys/pub.pub", "--publisher-threshold", "1", "-o", "root-1.json",
    )  # fmt: skip
    assert again.exit_code == 1
    assert "root-1.json exists" in again.stderr


def test_verify_root_rotation_needs_old_and_new_root_role(
    run: RunCli, holders: dict[str, str]
) -> None:
    make_root(run)
    sign(run, "root-1.json", "a")
    sign(run, "root-1.json", "b")
    keygen(run, "d")
    rotated = run(
        "root", "new", "--version", "2",
        "--root-key", "keys/c.pub", "--root-key", "keys/d.pub", "--root-threshold", "2",
        "--publisher-key", "keys/pub.pub", "--publisher-threshold", "1", "-o", "root-2.json",
    )  # fmt: skip
    assert rotated.exit_code == 0, rotated.stderr
    sign(run, "root-2.json", "c")
    sign(run, "root-2.json", "d")
    # c is in both roles, d only in the new one: root 1's threshold (2) is not met.
    partial = run("verify", "root-2.json", "--root", "root-1.json", "--json")
    assert partial.exit_code == 1
    report = json.loads(partial.stdout)
    old, new = report["checks"]
    assert old["rule"] == "root role threshold of trusted root 1"
    assert (old["counted"], old["met"]) == (1, False)
    assert {s["keyid"]: s["status"] for s in old["signatures"]}[holders["c"]] == "valid"
    assert (new["counted"], new["met"]) == (2, True)
    assert report["error"]["code"] == "signature_threshold"

    sign(run, "root-2.json", "a")
    assert run("verify", "root-2.json", "--root", "root-1.json").exit_code == 0


def test_verify_explains_an_expired_manifest(run: RunCli, holders: dict[str, str]) -> None:
    make_root(run)
    sign(run, "root-1.json", "a")
    sign(run, "root-1.json", "b")
    write_pins_file(Path("pins.json"), {"a.example.com": (fake_pin("a"), fake_pin("b"))})
    made = run("manifest", "new", "pins.json", "--first", "--expires", "1d", "-o", "m.json")
    assert made.exit_code == 0, made.stderr
    sign(run, "m.json", "pub")
    later = run("verify", "m.json", "--root", "root-1.json", "--at", "2099-01-01T00:00:00Z")
    assert later.exit_code == 1
    assert "INVALID [" in later.stdout
    assert "expired" in later.stdout


def test_verify_refuses_an_unsigned_trusted_root(run: RunCli, holders: dict[str, str]) -> None:
    make_root(run)
    write_pins_file(Path("pins.json"), {"a.example.com": (fake_pin("a"), fake_pin("b"))})
    assert run("manifest", "new", "pins.json", "--first", "-o", "m.json").exit_code == 0
    result = run("verify", "m.json", "--root", "root-1.json")
    assert result.exit_code == 1
    assert "is not a valid trusted root" in result.stderr


def test_commands_have_help_with_an_example(run: RunCli) -> None:
    for command in (["keygen"], ["root", "new"], ["sign"], ["verify"]):
        result = run(*command, "--help")
        assert result.exit_code == 0
        assert "Example" in result.stdout


def test_the_installed_entry_point_exits_1_on_an_invalid_envelope(
    run: RunCli, tmp_path: Path, holders: dict[str, str]
) -> None:
    """Exit statuses survive the real process boundary (not just the in-process runner)."""
    make_root(run)
    sign(run, "root-1.json", "a")
    below = subprocess.run(
        [sys.executable, "-m", "pinserver", "verify", "root-1.json", "--root", "root-1.json"],
        cwd=tmp_path, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert below.returncode == 1
    assert "NOT MET" in below.stdout
    sign(run, "root-1.json", "b")
    met = subprocess.run(
        [sys.executable, "-m", "pinserver", "verify", "root-1.json", "--root", "root-1.json"],
        cwd=tmp_path, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert met.returncode == 0, met.stderr
