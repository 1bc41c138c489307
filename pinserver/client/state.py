"""The client's state directory: one checksummed file, swapped durably, under a lock.

``state.json`` holds the roots after the shipped anchor, the last good manifest
envelope, the ETag each mirror gave for it, and the time floor. It is written as
a temp file in the same directory, fsynced, renamed over the old one with
``os.replace`` and the directory fsynced, so a crash at any instant leaves the
old file or the new one. The checksum catches a torn or corrupted file; it is
not a signature: nothing here is trusted until the client re-verifies it from
the shipped root (a writable cache is never a trust anchor).

Several processes may share a directory: :meth:`StateDir.lock` is an exclusive
``fcntl.flock`` on ``state.lock`` that serialises refreshes.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import fcntl
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from pinserver.documents import format_timestamp, parse_timestamp
from pinserver.errors import FormatError

STATE_FILE = "state.json"
LOCK_FILE = "state.lock"
STATE_FORMAT = 1
_TEMP_SUFFIX = ".tmp"


class StateFileError(ValueError):
    """The state file is not one this module wrote intact (torn, corrupt or edited)."""


@dataclass(frozen=True)
class StoredState:
    """Unverified content of the state file; the client re-verifies all of it."""

    roots: tuple[tuple[int, bytes], ...] = ()
    """(version, envelope bytes) of every root after the anchor, in order."""
    manifest: bytes | None = None
    etags: Mapping[str, str] = field(default_factory=dict)
    """ETag of the stored manifest, per mirror base URL."""
    time_floor: datetime | None = None


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: object, what: str) -> bytes:
    if not isinstance(text, str):
        raise StateFileError(f"{what} is not base64 text")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as e:
        raise StateFileError(f"{what} is not valid base64") from e


def _canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def _checksum(body: Any) -> str:
    return hashlib.sha256(_canonical(body)).hexdigest()


def encode_state(state: StoredState) -> bytes:
    """The bytes of a state file: the content plus a SHA-256 over its canonical form.

    They are the canonical JSON (sorted keys, compact, ASCII) of ``{"format", "sha256",
    "state"}``, assembled in sorted key order so that the manifest's base64, most of
    the file, is not passed through the JSON encoder: base64 needs no escaping."""
    manifest = b'"%s"' % base64.b64encode(state.manifest) if state.manifest is not None else b"null"
    body = b'{"etags":%s,"manifest":%s,"roots":%s,"time_floor":%s}' % (
        _canonical(dict(sorted(state.etags.items()))),
        manifest,
        _canonical([{"envelope": _b64(raw), "version": v} for v, raw in state.roots]),
        _canonical(format_timestamp(state.time_floor) if state.time_floor else None),
    )
    checksum = hashlib.sha256(body).hexdigest().encode("ascii")
    return b'{"format":%d,"sha256":"%s","state":%s}\n' % (STATE_FORMAT, checksum, body)


def decode_state(data: bytes) -> StoredState:
    """Parse a state file; ``StateFileError`` for anything but an intact file of ours."""
    try:
        outer = json.loads(data)
    except (UnicodeDecodeError, ValueError) as e:
        raise StateFileError(f"not JSON: {e}") from e
    if not isinstance(outer, dict) or set(outer) != {"format", "sha256", "state"}:
        raise StateFileError("not a pinserver client state file")
    if outer["format"] != STATE_FORMAT:
        raise StateFileError(f"state format {outer['format']!r}; this client reads {STATE_FORMAT}")
    body = outer["state"]
    if not isinstance(body, dict) or _checksum(body) != outer["sha256"]:
        raise StateFileError("checksum mismatch: the file is corrupt or was edited")
    try:
        roots = []
        for entry in body["roots"]:
            version = entry["version"]
            if type(version) is not int:
                raise StateFileError("root version is not an integer")
            roots.append((version, _unb64(entry["envelope"], f"root {version}")))
        manifest_text = body["manifest"]
        manifest = None if manifest_text is None else _unb64(manifest_text, "manifest")
        etags = body["etags"]
        if not isinstance(etags, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in etags.items()
        ):
            raise StateFileError("etags must map URLs to strings")
        floor_text = body["time_floor"]
        floor = None if floor_text is None else parse_timestamp(floor_text, field="time_floor")
    except (KeyError, TypeError) as e:
        raise StateFileError(f"missing or mistyped field: {e}") from e
    except FormatError as e:
        raise StateFileError(e.message) from e
    return StoredState(roots=tuple(roots), manifest=manifest, etags=etags, time_floor=floor)


def fsync_directory(directory: Path) -> None:
    """Make a rename in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_file_atomic(path: Path, data: bytes, *, mode: int = 0o644) -> None:
    """Temp file in the same directory, fsync, ``os.replace``, fsync the directory.

    Readers see the old content or the new, never a mix; after a crash the same holds.
    """
    directory = path.parent
    fd, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=_TEMP_SUFFIX, dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fchmod(f.fileno(), mode)
            os.fsync(f.fileno())
        os.replace(temp_name, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp_name)
        raise
    fsync_directory(directory)


class StateDir:
    """A state directory: read, durable write, and the multi-process lock."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.mkdir(mode=0o700, parents=True, exist_ok=True)

    @property
    def state_file(self) -> Path:
        return self.path / STATE_FILE

    def read(self) -> bytes | None:
        """The state file's bytes, or None when there is none yet."""
        try:
            return self.state_file.read_bytes()
        except FileNotFoundError:
            return None

    def write(self, state: StoredState) -> bytes:
        """Durably replace the state file (call with :meth:`lock` held); returns the
        bytes written, so that the writer can recognise its own file later."""
        self._remove_stale_temp_files()
        data = encode_state(state)
        write_file_atomic(self.state_file, data, mode=0o600)
        return data

    def _remove_stale_temp_files(self) -> None:
        # Left behind by a process killed mid-write; safe to remove under the lock.
        for stale in self.path.glob(f".{STATE_FILE}.*{_TEMP_SUFFIX}"):
            with contextlib.suppress(OSError):
                stale.unlink()

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Exclusive lock shared by every process using this directory."""
        fd = os.open(self.path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing the descriptor releases the flock
