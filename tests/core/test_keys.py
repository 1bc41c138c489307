"""SPEC section 2: keyids, and key files that ``openssl pkey`` reads (checked with the
real openssl binary), encrypted unless asked otherwise, 0600, never overwritten."""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from pinserver.envelope import MANIFEST_TYPE, Envelope, Signature, pae, verify_threshold
from pinserver.errors import KeyFileError
from pinserver.keys import (
    PrivateKey,
    PublicKey,
    keyid_of,
    load_private_key,
    load_public_key,
    write_key_pair,
)
from pinserver.trust import verify_anchor_root

OPENSSL = shutil.which("openssl")
needs_openssl = pytest.mark.skipif(OPENSSL is None, reason="the openssl binary is not installed")
PASSPHRASE = b"correct horse battery staple"
REPO = Path(__file__).resolve().parents[2]


def openssl(*args: str, data: bytes | None = None) -> bytes:
    assert OPENSSL is not None
    done = subprocess.run([OPENSSL, *args], input=data, capture_output=True, check=False)
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout


def test_keyid_is_sha256_of_raw_public_key() -> None:
    key = PrivateKey(bytes(range(32)))
    assert (
        key.keyid == hashlib.sha256(key.public_key.raw).hexdigest() == keyid_of(key.public_key.raw)
    )
    assert PublicKey.from_b64(key.public_key.to_b64()) == key.public_key


@needs_openssl
def test_encrypted_key_pair_is_read_by_openssl(tmp_path: Path) -> None:
    key = PrivateKey.generate()
    private_path, public_path = write_key_pair(tmp_path, "alice", key, PASSPHRASE)
    assert private_path.read_bytes().startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    assert stat.S_IMODE(private_path.stat().st_mode) == 0o600
    pub_from_private = openssl(
        "pkey", "-in", str(private_path), "-passin", "pass:" + PASSPHRASE.decode(), "-pubout"
    )
    pub_file = openssl("pkey", "-pubin", "-in", str(public_path))
    assert pub_from_private == pub_file == public_path.read_bytes()
    der = openssl("pkey", "-pubin", "-in", str(public_path), "-outform", "DER")
    assert der[-32:] == key.public_key.raw
    assert "ED25519" in openssl("pkey", "-pubin", "-in", str(public_path), "-text_pub").decode()
    # openssl refuses to open it without the passphrase, too
    refused = subprocess.run(
        [str(OPENSSL), "pkey", "-in", str(private_path), "-passin", "pass:wrong"],
        capture_output=True,
        check=False,
    )
    assert refused.returncode != 0


@needs_openssl
def test_openssl_signature_over_pae_verifies_in_pinserver(tmp_path: Path) -> None:
    """A third implementation: openssl signs the PAE with pinserver's key file."""
    key = PrivateKey.generate()
    private_path, _ = write_key_pair(tmp_path, "signer", key, None)
    payload = b'{"any": "bytes"}'
    message = tmp_path / "pae.bin"
    message.write_bytes(pae(MANIFEST_TYPE, payload))
    sig = openssl("pkeyutl", "-sign", "-rawin", "-inkey", str(private_path), "-in", str(message))
    envelope = Envelope(MANIFEST_TYPE, payload, (Signature(key.keyid, sig),))
    assert verify_threshold(
        envelope, keys={key.keyid: key.public_key}, authorised=[key.keyid], threshold=1, role="t"
    ) == {key.keyid}


@needs_openssl
def test_unencrypted_key_only_when_asked(tmp_path: Path) -> None:
    key = PrivateKey.generate()
    private_path, _ = write_key_pair(tmp_path, "demo", key, None)
    assert private_path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert stat.S_IMODE(private_path.stat().st_mode) == 0o600
    openssl("pkey", "-in", str(private_path), "-noout")
    assert load_private_key(private_path, None).keyid == key.keyid


@needs_openssl
def test_openssl_made_key_loads(tmp_path: Path) -> None:
    path = tmp_path / "openssl.key"
    openssl(
        "genpkey",
        "-algorithm",
        "ed25519",
        "-aes-256-cbc",
        "-pass",
        "pass:" + PASSPHRASE.decode(),
        "-out",
        str(path),
    )
    key = load_private_key(path, PASSPHRASE)
    pub = openssl("pkey", "-in", str(path), "-passin", "pass:" + PASSPHRASE.decode(), "-pubout")
    assert PublicKey.from_pem(pub) == key.public_key


def test_encrypted_key_refused_without_or_with_wrong_passphrase(tmp_path: Path) -> None:
    key = PrivateKey.generate()
    private_path, _ = write_key_pair(tmp_path, "bob", key, PASSPHRASE)
    with pytest.raises(KeyFileError):
        load_private_key(private_path, None)
    with pytest.raises(KeyFileError):
        load_private_key(private_path, b"wrong")
    assert load_private_key(private_path, PASSPHRASE).keyid == key.keyid
    with pytest.raises(ValueError, match="no-passphrase"):
        key.to_pem(b"")


def test_key_files_are_never_overwritten(tmp_path: Path) -> None:
    first = PrivateKey.generate()
    private_path, public_path = write_key_pair(tmp_path, "carol", first, PASSPHRASE)
    before = private_path.read_bytes(), public_path.read_bytes()
    with pytest.raises(KeyFileError, match="refusing to overwrite"):
        write_key_pair(tmp_path, "carol", PrivateKey.generate(), PASSPHRASE)
    assert (private_path.read_bytes(), public_path.read_bytes()) == before
    # a stray public key alone also blocks, so a pair never mixes two keys
    private_path.unlink()
    with pytest.raises(KeyFileError):
        write_key_pair(tmp_path, "carol", PrivateKey.generate(), PASSPHRASE)
    assert not private_path.exists()


def test_public_key_loader_refuses_a_private_key(tmp_path: Path) -> None:
    private_path, public_path = write_key_pair(tmp_path, "dave", PrivateKey.generate(), None)
    with pytest.raises(KeyFileError, match="private key"):
        load_public_key(private_path)
    assert load_public_key(public_path).keyid == load_private_key(private_path, None).keyid
    with pytest.raises(KeyFileError):
        load_public_key(tmp_path / "missing.pub")


@needs_openssl
def test_non_ed25519_keys_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "ec.key"
    openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", str(path))
    with pytest.raises(KeyFileError, match="Ed25519"):
        load_private_key(path, None)
    pub = openssl("pkey", "-in", str(path), "-pubout")
    with pytest.raises(KeyFileError, match="Ed25519"):
        PublicKey.from_pem(pub)


def test_demo_keys_match_the_demo_root() -> None:
    """keys.example is what the worked example in docs/protocol.md is built from."""
    example = REPO / "keys.example"
    root_key = load_private_key(example / "DEMO-ONLY-root.key", None)
    publisher_key = load_private_key(example / "DEMO-ONLY-publisher.key", None)
    root = verify_anchor_root((example / "DEMO-ONLY-root-1.json").read_bytes()).root
    assert root.root_role.keyids == (root_key.keyid,)
    assert root.publisher_role.keyids == (publisher_key.keyid,)
    assert load_public_key(example / "DEMO-ONLY-root.pub") == root_key.public_key


@needs_openssl
def test_pinserver_keygen_output_is_read_by_openssl(tmp_path: Path) -> None:
    """The real command line, as an admin runs it."""
    env = {**os.environ, "KEYGEN_PASSPHRASE": PASSPHRASE.decode()}
    command = [sys.executable, "-m", "pinserver", "keygen", "ops", "--dir", str(tmp_path)]
    done = subprocess.run(
        [*command, "--passphrase-env", "KEYGEN_PASSPHRASE"],
        capture_output=True,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()
    private_path, public_path = tmp_path / "ops.key", tmp_path / "ops.pub"
    assert stat.S_IMODE(private_path.stat().st_mode) == 0o600
    assert private_path.read_bytes().startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    pub = openssl(
        "pkey", "-in", str(private_path), "-passin", "pass:" + PASSPHRASE.decode(), "-pubout"
    )
    assert pub == public_path.read_bytes()
    assert done.stdout.decode().strip() == load_public_key(public_path).keyid
    before = private_path.read_bytes()
    again = subprocess.run(
        [*command, "--passphrase-env", "KEYGEN_PASSPHRASE"],
        capture_output=True,
        env=env,
        check=False,
    )
    assert again.returncode != 0
    assert private_path.read_bytes() == before
