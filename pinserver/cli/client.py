"""CLI commands for the client: ``client poll`` (once, or ``--watch``).

``poll`` runs one refresh with :class:`pinserver.client.PinClient` and prints the
result as JSON; a rejected document or a failed fetch prints a JSON error and exits
non-zero. ``--pins-out FILE`` writes the verified pins in force to a JSON file
(atomically) for programs in other languages. ``--watch`` keeps polling at the
manifest's ``poll_interval`` with jitter, backs off after failures, and stops
cleanly on SIGTERM or SIGINT.
"""

from __future__ import annotations

import json
import logging
import random
import signal
import threading
from pathlib import Path
from types import FrameType
from typing import Any

import click

from pinserver.cli._common import emit_json, utcnow
from pinserver.client import PinClient
from pinserver.client.fetcher import DEFAULT_TIMEOUT
from pinserver.client.state import write_file_atomic
from pinserver.documents import format_timestamp
from pinserver.errors import PinserverError, VerificationError
from pinserver.pins import is_pinset_active

logger = logging.getLogger(__name__)

PINS_FILE_FORMAT = 1
DEFAULT_POLL_INTERVAL = 300
FIRST_RETRY_SECONDS = 30
JITTER = 0.1

# What an operator of a fielded client should do, by error code.
CLIENT_HINTS: dict[str, str] = {
    "fetch_failed": "the mirrors are unreachable; the last good pins stay in force."
    " Check --server and the network",
    "fetch_timeout": "a mirror is too slow or trickling its answer; check it, add a mirror",
    "response_too_large": "a mirror sent more than 1 MiB: misconfigured or hostile",
    "signature_threshold": "ATTACK SIGNAL or wrong --root: the manifest is not signed by the"
    " publisher keys of the trusted root",
    "rollback": "ATTACK SIGNAL or a lagging mirror: it served an older version than the"
    " client already trusts",
    "equal_version_mismatch": "ATTACK SIGNAL: same version, different content",
    "fork": "ATTACK SIGNAL: the manifest does not chain to the trusted one",
    "expired": "the server serves an expired manifest: the publisher must run `pinserver"
    " renew`; under ca-only the pins are no longer enforced",
    "root_expired": "the root has expired; the root key holders must sign a new root",
    "wrong_payload_type": "ATTACK SIGNAL: a document of another type was served as manifest",
    "unknown_root_version": "the manifest names a root the mirror cannot serve; check the mirror",
}


def _pins_document(client: PinClient) -> dict[str, Any]:
    """The verified pins in force, as a JSON document for programs in other languages."""
    manifest = client.manifest
    now = client.now()
    enforcing = client.is_enforcing()
    pinsets = []
    if manifest is not None and enforcing:
        pinsets = [p.to_dict() for p in manifest.pinsets if is_pinset_active(p, now)]
    return {
        "format": PINS_FILE_FORMAT,
        "generated_at": format_timestamp(utcnow()),
        "root_version": client.root_version,
        "manifest_version": client.manifest_version,
        "manifest_expires": format_timestamp(manifest.expires) if manifest else None,
        "enforcing": enforcing,
        "on_expiry": client.on_expiry,
        "pinsets": pinsets,
    }


def _write_pins(client: PinClient, pins_out: Path | None) -> None:
    if pins_out is not None:
        data = json.dumps(_pins_document(client), indent=2, sort_keys=True).encode() + b"\n"
        write_file_atomic(pins_out, data)


def _error_document(client: PinClient, error: PinserverError) -> dict[str, Any]:
    return {
        "ok": False,
        "error": error.to_dict(),
        "attack_signal": isinstance(error, VerificationError),
        "what_to_do": CLIENT_HINTS.get(error.code, "see docs/client.md"),
        "root_version": client.root_version,
        "manifest_version": client.manifest_version,
        "enforcing": client.is_enforcing(),
    }


def _emit(document: dict[str, Any], *, as_json: bool, one_line: bool) -> None:
    if as_json:
        if one_line:
            click.echo(json.dumps(document, sort_keys=True, default=str))
        else:
            emit_json(document)
    elif document.get("ok"):
        click.echo(
            f"manifest {document['manifest_version']} under root {document['root_version']}"
            f" ({'updated' if document['updated'] else 'no change'}; pins"
            f" {'enforced' if document['enforcing'] else 'not enforced'})"
        )
    else:
        error = document["error"]
        click.echo(f"error [{error['code']}]: {error['message']}", err=True)


def _retry_delay(failures: int, poll_interval: int) -> float:
    """30 s, 60 s, 120 s, ... capped at the poll interval."""
    return float(min(poll_interval, FIRST_RETRY_SECONDS * 2 ** (failures - 1)))


def _jittered(seconds: float) -> float:
    return seconds * random.uniform(1 - JITTER, 1 + JITTER)  # noqa: S311 - not security


def _watch(client: PinClient, *, pins_out: Path | None, as_json: bool) -> None:
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    failures = 0
    try:
        while not stop.is_set():
            try:
                result = client.refresh()
            except PinserverError as e:
                failures += 1
                _emit(_error_document(client, e), as_json=as_json, one_line=True)
            else:
                failures = 0
                _emit({"ok": True, **result.to_dict()}, as_json=as_json, one_line=True)
            _write_pins(client, pins_out)
            manifest = client.manifest
            interval = manifest.poll_interval if manifest else DEFAULT_POLL_INTERVAL
            delay = _retry_delay(failures, interval) if failures else float(interval)
            stop.wait(_jittered(delay))
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    logger.info("stopped on signal")


@click.group("client")
def client_group() -> None:
    """The Python client from the command line (for cron, systemd, other languages)."""


@client_group.command("poll")
@click.option(
    "--server",
    "servers",
    multiple=True,
    required=True,
    help="Base URL of the pinserver or a mirror; repeat to fail over between mirrors.",
)
@click.option(
    "--root",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    required=True,
    help="The trusted root envelope shipped with the application (the trust anchor).",
)
@click.option(
    "--state",
    "state_dir",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="State directory (created if absent); may be shared by several processes.",
)
@click.option("--watch", is_flag=True, help="Keep polling at poll_interval until SIGTERM.")
@click.option(
    "--pins-out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write the verified pins in force to this JSON file (atomically).",
)
@click.option(
    "--json/--text",
    "as_json",
    default=True,
    show_default=True,
    help="JSON output (the default) or one human line.",
)
@click.option(
    "--on-expiry",
    type=click.Choice(["ca-only", "fail-closed"]),
    default="ca-only",
    show_default=True,
    help="What the pins file says once the last good manifest has expired.",
)
@click.option("--skew", type=click.IntRange(0, 3600), default=300, show_default=True)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0.1),
    default=DEFAULT_TIMEOUT,
    show_default=True,
    help="Seconds a download may take, body included.",
)
def poll(
    *,
    servers: tuple[str, ...],
    root: Path,
    state_dir: Path,
    watch: bool,
    pins_out: Path | None,
    as_json: bool,
    on_expiry: str,
    skew: int,
    timeout: float,
) -> None:
    """One verified refresh of the pins (or keep polling with --watch)."""
    with PinClient(
        list(servers),
        trusted_root=root,
        state_dir=state_dir,
        skew=skew,
        on_expiry=on_expiry,  # type: ignore[arg-type]
        timeout=timeout,
    ) as client:
        if watch:
            _watch(client, pins_out=pins_out, as_json=as_json)
            return
        try:
            result = client.refresh()
        except PinserverError as e:
            _write_pins(client, pins_out)  # the last good pins stay in force
            if as_json:
                _emit(_error_document(client, e), as_json=True, one_line=False)
            raise  # pinserver's main prints what was wrong and exits 1
        _write_pins(client, pins_out)
        _emit({"ok": True, **result.to_dict()}, as_json=as_json, one_line=False)


def register(group: click.Group) -> None:
    """Add this module's commands to the pinserver group."""
    group.add_command(client_group)
