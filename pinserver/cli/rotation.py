"""CLI commands that change what is published: ``rotate``, ``renew`` and ``drill``.

``rotate`` is the 3 a.m. emergency in one step, ``renew`` the cron job that keeps the
manifest from expiring, ``drill`` rehearses every runbook against a throwaway server.
Documents are built by :mod:`pinserver.authoring`, judged by :mod:`pinserver.lint` and
:mod:`pinserver.trust`; this module reads keys, talks to the server and prints.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import click

from pinserver.authoring import next_manifest_from, unsigned_envelope, with_pinset
from pinserver.cli._common import emit_json, parse_duration, parse_expiry, utcnow
from pinserver.cli._http import ServerClient, validate_server_url
from pinserver.cli._remote import (
    ServerView,
    confirm_or_abort,
    diff_dict,
    diff_lines,
    fetch_server_view,
    publish_and_confirm,
    read_anchor,
)
from pinserver.cli.manifests import _check_reason, _parse_connect_to, _print_findings
from pinserver.cli.roots import _load_signing_key
from pinserver.diff import diff_manifests
from pinserver.documents import Manifest, Pin, PinSet, decode_pin, format_timestamp
from pinserver.envelope import Envelope, sign
from pinserver.errors import FetchError, FormatError, LintFailedError, PinserverError
from pinserver.keys import PrivateKey
from pinserver.lint import Finding, has_errors, lint_manifest
from pinserver.live import fetch_verified_chain
from pinserver.pins import ChainCert, describe_chain
from pinserver.trust import VerifiedManifest, verify_manifest_signatures

_EXISTING_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)
_PIN_ROLES = ("primary", "backup")


def _server_options(func: Any) -> Any:
    """--server, --key, --passphrase-env, --root, --token-env: shared by rotate and renew."""
    options = [
        click.option(
            "--server", required=True, callback=validate_server_url, help="Server base URL."
        ),
        click.option(
            "--key",
            "key_paths",
            multiple=True,
            required=True,
            type=_EXISTING_FILE,
            metavar="KEY",
            help="Publisher private key (NAME.key); repeat for a k-of-n publisher role.",
        ),
        click.option(
            "--passphrase-env",
            metavar="VAR",
            help="Read the key passphrase(s) from VAR (the same for every --key).",
        ),
        click.option(
            "--root",
            "root_path",
            type=_EXISTING_FILE,
            help="Your trusted root: the server's root chain is walked from it (recommended;"
            " without it the server's current root is only checked against itself).",
        ),
        click.option(
            "--token-env",
            metavar="VAR",
            default="PINSERVER_PUBLISH_TOKEN",
            show_default=True,
            help="Environment variable holding the publish bearer token, if one is needed.",
        ),
        click.option(
            "--confirm-timeout",
            type=click.FloatRange(0, 3600),
            default=30.0,
            show_default=True,
            help="Seconds to wait for the server to serve the new version.",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _load_keys(paths: Sequence[Path], passphrase_env: str | None) -> list[PrivateKey]:
    keys = [_load_signing_key(path, passphrase_env) for path in paths]
    if len({k.keyid for k in keys}) != len(keys):
        raise click.UsageError("the same key is given twice (--key)")
    return keys


def _view(
    server: str, root_path: Path | None, client: ServerClient
) -> tuple[ServerView, VerifiedManifest]:
    view = fetch_server_view(client, read_anchor(root_path) if root_path else None)
    if view.latest is None:
        raise PinserverError(
            f"{server} has no manifest yet: there is nothing to rotate or renew; publish the"
            " first one with `pinserver manifest new --first`, `sign`, `publish`",
            code="no_manifest",
        )
    return view, view.latest


def _signed(manifest: Manifest, keys: Sequence[PrivateKey], view: ServerView) -> Envelope:
    """Sign, then check locally that the signatures meet the current root's publisher
    threshold, so a wrong or missing key is reported before anything is sent."""
    envelope = unsigned_envelope(manifest)
    for key in keys:
        envelope = sign(envelope, key)
    root = view.current.root
    try:
        verify_manifest_signatures(root, envelope)
    except PinserverError as e:
        role = root.publisher_role
        given = ", ".join(k.keyid[:16] for k in keys)
        e.message = (
            f"the key(s) given ({given}) do not meet the publisher threshold of root"
            f" {root.version} ({role.threshold} of {len(role.keyids)}: {', '.join(role.keyids)})"
        )
        e.args = (e.message,)
        raise
    return envelope


def _summary(
    server: str, view: ServerView, manifest: Manifest, envelope: Envelope
) -> dict[str, Any]:
    return {
        "server": server,
        "trust": view.trust_note,
        "previous_version": view.latest.version if view.latest else None,
        "version": manifest.version,
        "root_version": manifest.root_version,
        "payload_sha256": envelope.payload_sha256,
        "expires": format_timestamp(manifest.expires),
    }


# --- rotate ---------------------------------------------------------------------------------


def _parse_add_pin(text: str) -> Pin:
    """``B64[:role[:note]]``; base64 has no ``:``, so the first two colons split."""
    parts = text.split(":", 2)
    sha256 = parts[0].strip()
    role = parts[1].strip() if len(parts) > 1 and parts[1].strip() else "primary"
    note = parts[2] if len(parts) > 2 and parts[2] else None
    try:
        decode_pin(sha256, field="--add-pin")
    except FormatError as e:
        raise click.BadParameter(
            f"{sha256!r}: {e.message} (take it from `pinserver spki`)", param_hint="--add-pin"
        ) from e
    if role not in _PIN_ROLES:
        raise click.BadParameter(
            f"{text!r}: the role must be primary or backup", param_hint="--add-pin"
        )
    return Pin(sha256=sha256, role=role, note=note)  # type: ignore[arg-type]


def _rotated_pinset(current: PinSet, add: Sequence[Pin], remove: Sequence[str]) -> PinSet:
    """The host's pin set with pins removed, then added; an added hash already in the set
    takes the new role and note (promoting a backup to primary is one --add-pin)."""
    known = {p.sha256 for p in current.pins}
    missing = [h for h in remove if h not in known]
    if missing:
        raise click.BadParameter(
            f"{', '.join(missing)} is not a pin of {current.host}; current pins:"
            f" {', '.join(sorted(known))}",
            param_hint="--remove-pin",
        )
    overlap = {p.sha256 for p in add} & set(remove)
    if overlap:
        raise click.BadParameter(f"{', '.join(overlap)} is both added and removed")
    kept = [p for p in current.pins if p.sha256 not in remove]
    by_hash = {p.sha256: p for p in add}
    pins = [by_hash.pop(p.sha256, p) for p in kept] + [p for p in add if p.sha256 in by_hash]
    raw = {**current.to_dict(), "pins": [p.to_dict() for p in pins]}
    return PinSet.from_dict(raw, where="")


def _live_chain(
    host: str, *, cafile: str | None, connect_to: dict[str, tuple[str, int]]
) -> tuple[dict[str, list[ChainCert]], list[Finding]]:
    address, port = connect_to.get(host, (host, 443))
    try:
        certs = fetch_verified_chain(address, port, servername=host, cafile=cafile)
    except FetchError as e:
        return {}, [
            Finding(
                "error",
                "live_chain_unavailable",
                f"cannot check {host} against its live chain: {e.message}",
                host,
            )
        ]
    return {host: describe_chain(certs)}, []


@click.command("rotate")
@_server_options
@click.option("--host", required=True, help="The pinned host whose pin set changes.")
@click.option(
    "--add-pin",
    "add_pins",
    multiple=True,
    metavar="B64[:ROLE[:NOTE]]",
    help="Pin to add (role primary by default); an existing pin takes the new role/note.",
)
@click.option("--remove-pin", "remove_pins", multiple=True, metavar="B64", help="Pin to remove.")
@click.option("--expires", default="30d", show_default=True, help="New manifest's validity.")
@click.option("--cafile", type=_EXISTING_FILE, help="CA bundle for the live check.")
@click.option(
    "--connect-to",
    multiple=True,
    metavar="HOST=ADDR[:PORT]",
    help="Reach HOST at ADDR:PORT for the live check.",
)
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation (scripts).")
@click.option("--force", is_flag=True, help="Skip the live check and publish despite lint errors.")
@click.option("--reason", help="Why (with --force); recorded by the server.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def rotate_command(
    *,
    server: str,
    key_paths: Sequence[Path],
    passphrase_env: str | None,
    root_path: Path | None,
    token_env: str,
    confirm_timeout: float,
    host: str,
    add_pins: Sequence[str],
    remove_pins: Sequence[str],
    expires: str,
    cafile: Path | None,
    connect_to: Sequence[str],
    yes: bool,
    force: bool,
    reason: str | None,
    as_json: bool,
) -> None:
    """Emergency pin rotation in one step.

    Fetches and verifies the latest manifest, changes HOST's pin set, bumps the version
    and chains `previous`, lints, checks that HOST's live chain matches the new pins,
    shows the diff, asks, signs, publishes, and waits until the server serves it.

    The backup-pin rule (2 pins, one backup) always holds. The live check refuses a
    pin set the host's chain would not match (clients would be locked out); only
    --force --reason TEXT skips it.

    \b
    Example (the CA changed; its intermediate was the pre-placed backup pin):
      pinserver rotate --server https://pins.example.com --root root-1.json \\
        --host api.example.com --key publisher.key --passphrase-env PASS \\
        --add-pin NEW_INTERMEDIATE_PIN:primary --add-pin RESERVE_PIN:backup:reserve-2027 \\
        --remove-pin OLD_INTERMEDIATE_PIN
    """
    reason = _check_reason(force, reason)
    if not add_pins and not remove_pins:
        raise click.UsageError("nothing to change: give --add-pin and/or --remove-pin")
    add = [_parse_add_pin(text) for text in add_pins]
    targets = _parse_connect_to(connect_to)
    keys = _load_keys(key_paths, passphrase_env)
    now = utcnow()
    new_expires = parse_expiry(expires, now=now)
    with ServerClient(server, token=os.environ.get(token_env) or None) as client:
        view, verified_latest = _view(server, root_path, client)
        latest = verified_latest.manifest
        current = latest.pinset(host)
        if current is None:
            raise click.BadParameter(
                f"{host} has no pin set in manifest {latest.version} (hosts:"
                f" {', '.join(p.host for p in latest.pinsets) or 'none'}); add a host with"
                " `pinserver manifest new`",
                param_hint="--host",
            )
        try:
            pinset = _rotated_pinset(current, add, remove_pins)
        except FormatError as e:
            # The backup-pin rule is part of verification: no --force gets past it.
            e.message = f"refused, not published: the new pin set of {host}: {e.message}"
            e.args = (e.message,)
            raise
        manifest = next_manifest_from(
            latest,
            previous_sha256=verified_latest.payload_sha256,
            issued_at=now,
            expires=new_expires,
            pinsets=with_pinset(latest.pinsets, pinset),
            root_version=view.current.version,
        )
        live: dict[str, list[ChainCert]] = {}
        findings: list[Finding] = []
        if not force:
            live, findings = _live_chain(
                host, cafile=str(cafile) if cafile else None, connect_to=targets
            )
        findings += lint_manifest(
            manifest, root=view.current.root, reference_time=now, live_chains=live
        )
        findings.sort(key=lambda f: f.severity != "error")
        diff = diff_manifests(latest, manifest)
        if not as_json:
            click.echo(f"verified: {view.trust_note}; latest is manifest {latest.version}")
            for line in diff_lines(diff):
                click.echo(line)
            if findings:
                _print_findings(findings)
            if force:
                click.echo(f"live check SKIPPED (--force): {reason}")
            elif host in live and not any(f.code == "pin_not_in_live_chain" for f in findings):
                click.echo(f"live check: the chain {host} serves matches the new pins")
        if has_errors(findings) and not force:
            if as_json:
                emit_json(
                    {
                        "published": False,
                        "diff": diff_dict(diff),
                        "findings": [f.to_dict() for f in findings],
                    }
                )
            codes = sorted({f.code for f in findings if f.severity == "error"})
            raise LintFailedError(
                f"not published: lint found errors ({', '.join(codes)}) in the rotation of {host}"
            )
        confirm_or_abort(f"sign and publish manifest {manifest.version} to {server}?", yes=yes)
        envelope = _signed(manifest, keys, view)
        answer = publish_and_confirm(client, envelope, reason=reason, timeout=confirm_timeout)
    summary = {
        **_summary(server, view, manifest, envelope),
        "published": True,
        "host": host,
        "diff": diff_dict(diff),
        "findings": [f.to_dict() for f in findings],
        "forced": reason,
        "answer": answer,
    }
    if as_json:
        emit_json(summary)
        return
    click.echo(
        f"published manifest {manifest.version} (root {manifest.root_version}) to {server};"
        f" the server serves it now. Expires {summary['expires']}."
    )


# --- renew ----------------------------------------------------------------------------------


def _time_left_text(expires: datetime, now: datetime) -> str:
    days = (expires - now).total_seconds() / 86400
    return f"{days:.1f} days" if days >= 0 else f"expired {-days:.1f} days ago"


@click.command("renew")
@_server_options
@click.option("--expires", required=True, help="New validity: a duration (30d) or timestamp.")
@click.option(
    "--if-expiring-within",
    "within",
    metavar="DURATION",
    help="Do nothing (exit 0) unless the current manifest expires within DURATION (7d).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def renew_command(
    *,
    server: str,
    key_paths: Sequence[Path],
    passphrase_env: str | None,
    root_path: Path | None,
    token_env: str,
    confirm_timeout: float,
    expires: str,
    within: str | None,
    as_json: bool,
) -> None:
    """Republish the latest pins as the next version with a fresh validity window.

    Made for cron or a CI schedule: a signed manifest nobody re-signs in time is the
    commonest outage of signed-metadata systems. After a root rotation it also moves
    the manifest to the new root. Lint errors (a window past the root's expiry) fail.

    \b
    Examples:
      pinserver renew --server https://pins.example.com --root root-1.json \\
        --key publisher.key --passphrase-env PASS --expires 30d --if-expiring-within 7d
    \b
    crontab (daily at 03:17):
      17 3 * * * PASS=... pinserver renew --server https://pins.example.com \\
        --root /etc/pinserver/root-1.json --key /etc/pinserver/publisher.key \\
        --passphrase-env PASS --expires 30d --if-expiring-within 7d
    """
    now = utcnow()
    threshold = parse_duration(within) if within is not None else None
    new_expires = parse_expiry(expires, now=now)
    if new_expires <= now:
        raise click.BadParameter("must be in the future", param_hint="--expires")
    keys = _load_keys(key_paths, passphrase_env)
    with ServerClient(server, token=os.environ.get(token_env) or None) as client:
        view, verified_latest = _view(server, root_path, client)
        latest = verified_latest.manifest
        left = _time_left_text(latest.expires, now)
        moves_root = latest.root_version != view.current.version
        if threshold is not None and latest.expires - now > threshold and not moves_root:
            result = {
                "server": server,
                "renewed": False,
                "version": latest.version,
                "expires": format_timestamp(latest.expires),
                "reason": f"manifest {latest.version} has {left} left, more than {within}",
            }
            if as_json:
                emit_json(result)
            else:
                click.echo(f"nothing to do: {result['reason']}")
            return
        manifest = next_manifest_from(
            latest,
            previous_sha256=verified_latest.payload_sha256,
            issued_at=now,
            expires=new_expires,
            root_version=view.current.version,
        )
        findings = lint_manifest(manifest, root=view.current.root, reference_time=now)
        if has_errors(findings):
            if not as_json:
                _print_findings(findings)
            codes = sorted({f.code for f in findings if f.severity == "error"})
            raise LintFailedError(f"not renewed: lint found errors ({', '.join(codes)})")
        envelope = _signed(manifest, keys, view)
        answer = publish_and_confirm(client, envelope, reason=None, timeout=confirm_timeout)
    summary = {
        **_summary(server, view, manifest, envelope),
        "renewed": True,
        "previous_expires": format_timestamp(latest.expires),
        "findings": [f.to_dict() for f in findings],
        "answer": answer,
    }
    if as_json:
        emit_json(summary)
        return
    for finding in findings:
        click.echo(f"{finding.severity}: [{finding.code}] {finding.message}", err=True)
    moved = f", moved from root {latest.root_version}" if moves_root else ""
    click.echo(
        f"renewed: manifest {manifest.version} (root {manifest.root_version}{moved}) expires"
        f" {summary['expires']}; manifest {latest.version} had {left} left. Served by {server}."
    )


# --- drill ----------------------------------------------------------------------------------


@click.command("drill")
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Work here (must be empty or new; default: a temporary directory).",
)
@click.option("--keep", is_flag=True, help="Keep the work directory (keys, store, logs).")
@click.pass_context
def drill_command(ctx: click.Context, *, workdir: Path | None, keep: bool) -> None:
    """Rehearse every runbook against a throwaway local deployment.

    Throwaway keys, a root, `pinserver serve` on a free 127.0.0.1 port, a local TLS host
    with two throwaway CAs, and a real client; then the runbooks of docs/operations.md
    one after another: first publication, emergency rotation after a CA switch, renew,
    publisher key compromise, root key rotation, history and monitor. Each step prints
    PASS or FAIL with the commands it ran; exit 1 on any failure (the work directory is
    then kept as evidence). Run it after upgrades and before you need a runbook.

    \b
    Example:
      pinserver drill --workdir /tmp/drill --keep
    """
    from pinserver.drill import run_drill  # noqa: PLC0415 (only this command needs it)

    if workdir is not None and workdir.exists() and any(workdir.iterdir()):
        raise click.BadParameter(f"{workdir} is not empty", param_hint="--workdir")
    directory = workdir or Path(tempfile.mkdtemp(prefix="pinserver-drill-"))
    click.echo(f"pinserver drill: rehearsing the runbooks in {directory}")
    outcome = run_drill(ctx.find_root().command, directory, click.echo)
    passed = sum(1 for r in outcome.results if r.passed)
    if outcome.passed:
        click.echo(f"drill PASSED: {passed} of {outcome.total} steps")
    else:
        click.echo(
            f"drill FAILED: {passed} of {outcome.total} steps passed; work directory kept:"
            f" {directory}",
            err=True,
        )
        ctx.exit(1)
    if keep:
        click.echo(f"kept {directory}")
    else:
        shutil.rmtree(directory, ignore_errors=True)


def register(group: click.Group) -> None:
    """Add this module's commands to the pinserver group."""
    group.add_command(rotate_command)
    group.add_command(renew_command)
    group.add_command(drill_command)
