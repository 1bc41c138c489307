"""The only Ed25519 code in pinserver: key pairs, keyids and PEM key files.

Signing and verification use PyNaCl (libsodium: fast, strict verification);
``cryptography`` is used only to read and write the PKCS#8 / SubjectPublicKeyInfo
PEM files that ``openssl pkey`` understands.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import nacl.exceptions
import nacl.signing
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from pinserver.errors import FormatError, KeyFileError

PUBLIC_KEY_BYTES = 32
SIGNATURE_BYTES = 64


def keyid_of(raw_public_key: bytes) -> str:
    """Lowercase hex SHA-256 of the raw 32-byte public key (SPEC section 2)."""
    return hashlib.sha256(raw_public_key).hexdigest()


def b64encode(data: bytes) -> str:
    """Standard padded base64 as text."""
    return base64.b64encode(data).decode("ascii")


def b64decode_strict(text: str, *, field: str) -> bytes:
    """Decode standard padded base64, rejecting anything non-canonical."""
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError) as e:
        raise FormatError("not valid standard base64", field=field) from e
    # Canonical means b64encode(raw) == text. Every full group of four characters maps
    # one-to-one to three bytes, so only the length and the last group can differ: the
    # same check without re-encoding a megabyte.
    tail = len(raw) % 3 or 3
    if len(text) != 4 * ((len(raw) + 2) // 3) or (
        raw and base64.b64encode(raw[-tail:]).decode("ascii") != text[-4:]
    ):
        raise FormatError("base64 is not in canonical padded form", field=field)
    return raw


@dataclass(frozen=True)
class PublicKey:
    """An Ed25519 public key, as its raw 32 bytes."""

    raw: bytes
    _verify_key: nacl.signing.VerifyKey = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.raw) != PUBLIC_KEY_BYTES:
            raise ValueError(f"an Ed25519 public key has 32 bytes, not {len(self.raw)}")
        object.__setattr__(self, "_verify_key", nacl.signing.VerifyKey(self.raw))

    @property
    def keyid(self) -> str:
        return keyid_of(self.raw)

    def to_b64(self) -> str:
        return b64encode(self.raw)

    @classmethod
    def from_b64(cls, text: str, *, field: str = "public") -> PublicKey:
        raw = b64decode_strict(text, field=field)
        if len(raw) != PUBLIC_KEY_BYTES:
            raise FormatError("an Ed25519 public key has 32 bytes", field=field)
        return cls(raw)

    def is_valid_signature(self, message: bytes, signature: bytes) -> bool:
        """True iff ``signature`` is a valid Ed25519 signature of ``message``; never raises."""
        if len(signature) != SIGNATURE_BYTES:
            return False
        try:
            self._verify_key.verify(message, signature)
        except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError, ValueError):
            return False
        return True

    def to_pem(self) -> bytes:
        key = ed25519.Ed25519PublicKey.from_public_bytes(self.raw)
        return key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    @classmethod
    def from_pem(cls, data: bytes) -> PublicKey:
        try:
            key = serialization.load_pem_public_key(data)
        except ValueError as e:
            raise KeyFileError(f"not a PEM public key: {e}") from e
        if not isinstance(key, ed25519.Ed25519PublicKey):
            raise KeyFileError("not an Ed25519 public key (pinserver v1 uses Ed25519 only)")
        return cls(key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))


class PrivateKey:
    """An Ed25519 signing key. Lives on an admin workstation, never on the server."""

    def __init__(self, seed: bytes) -> None:
        if len(seed) != 32:
            raise ValueError("an Ed25519 private key seed has 32 bytes")
        self._signing_key = nacl.signing.SigningKey(seed)
        self.public_key = PublicKey(bytes(self._signing_key.verify_key))

    @classmethod
    def generate(cls) -> PrivateKey:
        return cls(os.urandom(32))

    @property
    def keyid(self) -> str:
        return self.public_key.keyid

    def sign(self, message: bytes) -> bytes:
        return bytes(self._signing_key.sign(message).signature)

    def to_pem(self, passphrase: bytes | None) -> bytes:
        """PKCS#8 PEM, encrypted unless ``passphrase`` is None (an explicit choice)."""
        key = ed25519.Ed25519PrivateKey.from_private_bytes(bytes(self._signing_key))
        encryption: serialization.KeySerializationEncryption
        if passphrase is None:
            encryption = serialization.NoEncryption()
        else:
            if not passphrase:
                raise ValueError("an empty passphrase is no passphrase; use --no-passphrase")
            encryption = serialization.BestAvailableEncryption(passphrase)
        return key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
        )

    @classmethod
    def from_pem(cls, data: bytes, passphrase: bytes | None) -> PrivateKey:
        try:
            key = serialization.load_pem_private_key(data, password=passphrase)
        except TypeError as e:
            # cryptography: encrypted key without a password, or a password for a plain key.
            raise KeyFileError(f"passphrase mismatch: {e}") from e
        except ValueError as e:
            raise KeyFileError(f"cannot read private key (wrong passphrase?): {e}") from e
        if not isinstance(key, ed25519.Ed25519PrivateKey):
            raise KeyFileError("not an Ed25519 private key (pinserver v1 uses Ed25519 only)")
        seed = key.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        return cls(seed)


def is_encrypted_pem(data: bytes) -> bool:
    return b"-----BEGIN ENCRYPTED PRIVATE KEY-----" in data


def write_new_file(path: Path, data: bytes, *, mode: int) -> None:
    """Create ``path`` with ``mode``; refuse to overwrite (O_EXCL), fsync before returning."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError as e:
        raise KeyFileError(f"{path} exists; refusing to overwrite a key file") from e
    except OSError as e:
        raise KeyFileError(f"cannot create {path}: {e.strerror}") from e
    try:
        try:
            os.fchmod(fd, mode)
            remaining = memoryview(data)
            while remaining:  # os.write may write less than asked (disk full, quota)
                remaining = remaining[os.write(fd, remaining) :]
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as e:
        # A truncated key file must not survive: it would pass for the key and block retries.
        path.unlink(missing_ok=True)
        raise KeyFileError(f"cannot write {path}: {e.strerror}") from e


def write_key_pair(
    directory: Path, name: str, key: PrivateKey, passphrase: bytes | None
) -> tuple[Path, Path]:
    """Write NAME.key (0600, PKCS#8) and NAME.pub (SPKI PEM); neither may exist already."""
    private_path = directory / f"{name}.key"
    public_path = directory / f"{name}.pub"
    for path in (private_path, public_path):
        if path.exists():
            raise KeyFileError(f"{path} exists; refusing to overwrite a key file")
    write_new_file(private_path, key.to_pem(passphrase), mode=0o600)
    try:
        write_new_file(public_path, key.public_key.to_pem(), mode=0o644)
    except KeyFileError:
        private_path.unlink(missing_ok=True)  # never half a pair
        raise
    return private_path, public_path


def load_public_key(path: Path) -> PublicKey:
    try:
        data = path.read_bytes()
    except OSError as e:
        raise KeyFileError(f"cannot read public key {path}: {e.strerror}") from e
    if b"PRIVATE KEY" in data:
        raise KeyFileError(f"{path} is a private key; pass the .pub file")
    return PublicKey.from_pem(data)


def load_private_key(path: Path, passphrase: bytes | None) -> PrivateKey:
    try:
        data = path.read_bytes()
    except OSError as e:
        raise KeyFileError(f"cannot read private key {path}: {e.strerror}") from e
    return PrivateKey.from_pem(data, passphrase)
