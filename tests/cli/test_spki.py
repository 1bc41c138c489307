"""spki on PEM files and on a live TLS server; pins agree with openssl's."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.cli.conftest import RunCli, TlsChain


def openssl_pin(pem: bytes) -> str:
    """pin-sha256 the HPKP way: x509 -pubkey | pkey -pubin -outform der | dgst | base64."""
    public = subprocess.run(
        ["openssl", "x509", "-pubkey", "-noout"], input=pem, capture_output=True, check=True
    ).stdout
    return openssl_key_pin(public)


def openssl_key_pin(public_pem: bytes) -> str:
    der = subprocess.run(
        ["openssl", "pkey", "-pubin", "-outform", "der"],
        input=public_pem, capture_output=True, check=True,
    ).stdout  # fmt: skip
    digest = subprocess.run(
        ["openssl", "dgst", "-sha256", "-binary"], input=der, capture_output=True, check=True
    ).stdout
    return (
        subprocess.run(
            ["openssl", "base64", "-A"], input=digest, capture_output=True, check=True, text=False
        )
        .stdout.decode()
        .strip()
    )


def test_spki_pem_agrees_with_openssl_and_ranks_the_chain(
    run: RunCli, tmp_path: Path, tls_chain: TlsChain
) -> None:
    bundle = tmp_path / "full.pem"
    bundle.write_bytes(tls_chain.chain_file.read_bytes() + tls_chain.ca.cert_pem.bytes())
    result = run("spki", str(bundle), "--json")
    assert result.exit_code == 0, result.stderr
    chain = json.loads(result.stdout)["chain"]
    pems = [blob.bytes() for blob in tls_chain.leaf.cert_chain_pems] + [
        tls_chain.ca.cert_pem.bytes()
    ]
    assert [c["pin_sha256"] for c in chain] == [openssl_pin(p) for p in pems]
    assert [c["position"] for c in chain] == [0, 1, 2]
    assert [c["kind"] for c in chain] == ["leaf", "intermediate", "root"]
    assert [c["recommendation"] for c in chain][1:] == ["best", "wrong"]
    assert chain[0]["recommendation"] in ("good", "risky")
    assert chain[1]["subject"] == chain[0]["issuer"]
    assert chain[0]["key_type"].endswith("256")  # trustme: ECDSA P-256
    assert chain[2]["not_after"].endswith("Z")

    text = run("spki", str(bundle))
    assert text.exit_code == 0
    assert f"pin-sha256: {chain[1]['pin_sha256']}" in text.stdout
    assert f"suggestion: pin {chain[1]['pin_sha256']} (intermediate" in text.stdout


def test_spki_of_a_reserve_public_key_agrees_with_openssl(run: RunCli, tmp_path: Path) -> None:
    subprocess.run(
        ["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-out", str(tmp_path / "reserve.key")],
        check=True, capture_output=True,
    )  # fmt: skip
    public = subprocess.run(
        ["openssl", "pkey", "-in", str(tmp_path / "reserve.key"), "-pubout"],
        check=True, capture_output=True,
    ).stdout  # fmt: skip
    (tmp_path / "reserve.pub").write_bytes(public)
    result = run("spki", "reserve.pub", "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["public_keys"] == [{"pin_sha256": openssl_key_pin(public)}]


def test_spki_connect_shows_leaf_and_intermediate(
    run: RunCli, tls_chain: TlsChain, tls_server: int
) -> None:
    result = run(
        "spki", "--connect", f"127.0.0.1:{tls_server}", "--cafile", str(tls_chain.ca_file),
        "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    chain = json.loads(result.stdout)["chain"]
    presented = [blob.bytes() for blob in tls_chain.leaf.cert_chain_pems]
    assert [c["pin_sha256"] for c in chain] == [openssl_pin(p) for p in presented]
    assert [c["kind"] for c in chain] == ["leaf", "intermediate"]


def test_spki_connect_refuses_an_unverified_chain_unless_insecure(
    run: RunCli, tls_server: int
) -> None:
    refused = run("spki", "--connect", f"127.0.0.1:{tls_server}")
    assert refused.exit_code == 1
    assert "does not verify" in refused.stderr
    assert "--cafile" in refused.stderr
    shown = run("spki", "--connect", f"127.0.0.1:{tls_server}", "--insecure", "--json")
    assert shown.exit_code == 0, shown.stderr
    assert len(json.loads(shown.stdout)["chain"]) == 2


def test_spki_usage_errors(run: RunCli, tmp_path: Path) -> None:
    assert run("spki").exit_code == 2
    (tmp_path / "empty.pem").write_text("nothing here\n")
    result = run("spki", "empty.pem")
    assert result.exit_code == 1
    assert "holds no PEM certificate or public key" in result.stderr
    bad_port = run("spki", "--connect", "127.0.0.1:99999")
    assert bad_port.exit_code == 2
    assert "port must be a number" in bad_port.stderr
