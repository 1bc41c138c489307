"""Helpers shared by the CLI modules: durations, passphrases, JSON output, errors."""

from __future__ import annotations

import json
import os
import re
import sys
import tempfile
import traceback
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click

from pinserver.documents import parse_timestamp
from pinserver.envelope import Envelope
from pinserver.errors import FormatError, PinserverError

_DURATION_RE = re.compile(r"\A(\d+)([dhm])\Z")

# What to do next, by error code: the second half of every CLI failure message.
HINTS: dict[str, str] = {
    "signature_threshold": "collect more signatures with `pinserver sign` or check --root",
    "version_conflict": "rebuild it on the latest version (`manifest new --server`)",
    "expired": "make a new manifest with a fresh window (`pinserver renew`)",
    "root_expired": "the root holders must sign a new root (`pinserver root new`, `sign`)",
    "key_file": "check the path and passphrase (--passphrase-env VAR)",
    "lint_failed": "fix the findings, or pass --force --reason TEXT to publish anyway",
    "fetch_failed": "check --server and that the service is reachable",
    "invalid_envelope": "the file is not a DSSE envelope; was it written by pinserver?",
    "backup_pin_required": "add a backup pin: the hash of a key you hold in reserve",
    "invalid_document": "fix the field named above and write the document again",
    "wrong_payload_type": "pass a pinserver root or manifest envelope",
    "unknown_root_version": "verify against the root the manifest names (GET /v1/roots/N.json)",
    "not_yet_valid": "wait until not_before, or check this machine's clock",
    "rollback": "the version is not newer than the trusted one; build on the latest",
    "fork": "the manifest does not chain to the latest; rebuild it with `manifest new --server`",
    "already_signed": "each key signs once; the next holder signs with their own key",
    "unauthorized": "put the publish token in PINSERVER_PUBLISH_TOKEN (or --token-env VAR)",
    "not_initialised": "install root 1 on the server host first (`pinserver init --root ROOT`)",
    "no_manifest": "publish the first manifest: `manifest new --first`, `sign`, `publish`",
    "not_confirmed": "check every replica serves the new version (GET /v1/manifest.json)",
    "root_substituted": "check --server and --root: this server does not serve your root",
    "file_error": "check that the path exists, is of the right kind and that you may write it",
}


@dataclass
class CliState:
    verbose: bool = False


def utcnow() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def parse_duration(text: str) -> timedelta:
    """``30d``, ``12h`` or ``45m``."""
    match = _DURATION_RE.match(text.strip())
    if not match:
        raise click.BadParameter(f"{text!r} is not a duration like 30d, 12h or 45m")
    amount, unit = int(match.group(1)), match.group(2)
    return {
        "d": timedelta(days=amount),
        "h": timedelta(hours=amount),
        "m": timedelta(minutes=amount),
    }[unit]


def parse_expiry(text: str, *, now: datetime) -> datetime:
    """A duration from ``now`` (``365d``) or an RFC 3339 UTC timestamp."""
    if _DURATION_RE.match(text.strip()):
        return now + parse_duration(text)
    try:
        return parse_timestamp(text, field="expires")
    except FormatError as e:
        raise click.BadParameter(f"{text!r}: use a duration (365d) or 2027-01-01T00:00:00Z") from e


def read_passphrase(env_var: str | None, *, prompt: str, confirm: bool = False) -> bytes:
    """From the named environment variable, else an interactive prompt."""
    if env_var:
        value = os.environ.get(env_var)
        if value is None:
            raise click.UsageError(f"environment variable {env_var} is not set")
        return value.encode("utf-8")
    value = click.prompt(prompt, hide_input=True, confirmation_prompt=confirm)
    return str(value).encode("utf-8")


def emit_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, sort_keys=True, default=str))


def report_error(error: PinserverError, *, verbose: bool) -> None:
    """What was wrong, and what to do about it."""
    if verbose:
        traceback.print_exception(error, file=sys.stderr)
    click.echo(f"error [{error.code}]: {error.message}", err=True)
    hint = HINTS.get(error.code)
    if hint:
        click.echo(f"  what to do: {hint}", err=True)


def read_envelope_file(path: str | Path) -> Envelope:
    """A DSSE envelope from a file; errors name the file."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise click.FileError(str(path), hint=e.strerror) from e
    try:
        return Envelope.from_bytes(data)
    except FormatError as e:
        e.message = f"{path}: {e.message}"
        e.args = (e.message,)
        raise


def write_file_atomically(path: str | Path, data: bytes, *, overwrite: bool) -> None:
    """Write via a temp file in the same directory, fsync, then rename (or hard-link when
    ``overwrite`` is false, which refuses an existing file atomically): an interrupted
    write leaves the old file or the new one, never a torn one."""
    target = Path(path)
    if not overwrite and target.exists():
        raise click.ClickException(f"{target} exists; choose another output name or remove it")
    directory = target.parent
    try:
        fd, temp_name = tempfile.mkstemp(prefix=f".{target.name}.", dir=directory)
    except OSError as e:
        raise click.FileError(str(target), hint=e.strerror) from e
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temp_name, target.stat().st_mode & 0o777 if target.exists() else 0o644)
        if overwrite:
            os.replace(temp_name, target)
        else:
            try:
                os.link(temp_name, target)
            except FileExistsError as e:
                raise click.ClickException(
                    f"{target} exists; choose another output name or remove it"
                ) from e
            os.unlink(temp_name)
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except BaseException:
        if os.path.exists(temp_name):
            os.unlink(temp_name)
        raise
