"""CLI commands for manifests: ``manifest new``, ``lint`` and ``publish``.

The manifest is built by :mod:`pinserver.authoring` and judged by :mod:`pinserver.lint`;
this module only reads files, talks to the server and prints.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from pinserver import trust
from pinserver.authoring import (
    DEFAULT_POLL_INTERVAL,
    build_manifest,
    parse_pins_file,
    unsigned_envelope,
)
from pinserver.cli._common import (
    emit_json,
    parse_expiry,
    read_envelope_file,
    utcnow,
    write_file_atomically,
)
from pinserver.cli._http import REASON_HEADER, ServerClient, validate_server_url
from pinserver.documents import Manifest, Root, format_timestamp, parse_timestamp
from pinserver.envelope import MANIFEST_TYPE, ROOT_TYPE, Envelope, verify_payload_type
from pinserver.errors import FetchError, FormatError, LintFailedError
from pinserver.lint import Finding, has_errors, lint_envelope
from pinserver.live import fetch_verified_chain, parse_host_port
from pinserver.pins import ChainCert, describe_chain

_EXISTING_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)
MAX_REASON_CHARS = 1024


def _previous_from_envelope(envelope: Envelope, *, source: str) -> tuple[Manifest, str]:
    """A previous manifest's document and payload hash (signatures are the server's and
    the clients' business: a wrong previous only makes publication fail with 409)."""
    try:
        verify_payload_type(envelope, MANIFEST_TYPE)
    except FormatError as e:
        raise FormatError(f"{source}: {e.message}", code=e.code) from e
    return Manifest.from_bytes(envelope.payload), envelope.payload_sha256


def _server_state(server: str) -> tuple[int, tuple[Manifest, str] | None]:
    """The server's current root version and its latest manifest (None: none yet)."""
    with ServerClient(server) as client:
        health = client.health()
        root_version = health.get("root_version")
        if not isinstance(root_version, int) or root_version < 1:
            raise FetchError(
                f"{server}/healthz names no root (root_version {root_version!r});"
                " the server needs `pinserver init` first"
            )
        latest = client.get_optional_bytes("/v1/manifest.json")
    if latest is None:
        return root_version, None
    envelope = Envelope.from_bytes(latest)
    return root_version, _previous_from_envelope(envelope, source=f"{server}/v1/manifest.json")


@click.group("manifest")
def manifest_group() -> None:
    """Pin manifests: `manifest new` writes the next unsigned one."""


@manifest_group.command("new")
@click.argument("pins_file", metavar="PINSFILE", type=_EXISTING_FILE)
@click.option(
    "--server",
    callback=validate_server_url,
    help="Follow this server's latest manifest and current root.",
)
@click.option(
    "--previous",
    "previous_path",
    type=_EXISTING_FILE,
    help="Follow this previous manifest envelope (offline).",
)
@click.option("--first", is_flag=True, help="Version 1 (no previous manifest exists).")
@click.option(
    "--root-version",
    type=click.IntRange(min=1),
    help="Root the manifest is published under (default: the server's current root, the"
    " previous manifest's, or 1 with --first).",
)
@click.option("--expires", default="30d", show_default=True, help="Duration or timestamp.")
@click.option("--not-before", help="Start of validity, a timestamp (default: now).")
@click.option(
    "--poll-interval",
    type=int,
    help=f"Seconds between client polls, 60..86400 (default: the pins file's, or"
    f" {DEFAULT_POLL_INTERVAL}).",
)
@click.option("--report-uri", help="Where clients send pin-failure reports (default: file's).")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True)
@click.option("--json", "as_json", is_flag=True, help="Print a summary as JSON.")
def manifest_new(
    *,
    pins_file: Path,
    server: str | None,
    previous_path: Path | None,
    first: bool,
    root_version: int | None,
    expires: str,
    not_before: str | None,
    poll_interval: int | None,
    report_uri: str | None,
    output: Path,
    as_json: bool,
) -> None:
    """Write the next unsigned manifest from a TOML or JSON pins file.

    The pins file holds `pinsets` as in SPEC section 5 (mode defaults to enforce,
    include_subdomains to false; a pin set's expires may be a duration such as 365d),
    and optionally poll_interval and report_uri. Exactly one of --server, --previous,
    --first says what the manifest follows. Then: `pinserver sign`, `lint`, `publish`.

    \b
    Example:
      pinserver manifest new pins.toml --server https://pins.example.com \\
        --expires 30d -o manifest.json
    """
    if sum((server is not None, previous_path is not None, first)) != 1:
        raise click.UsageError("give exactly one of --server URL, --previous FILE, --first")
    now = utcnow()
    spec = parse_pins_file(pins_file.read_bytes(), filename=pins_file.name, issued_at=now)
    previous: tuple[Manifest, str] | None = None
    default_root = 1
    if server is not None:
        default_root, previous = _server_state(server)
    elif previous_path is not None:
        previous = _previous_from_envelope(
            read_envelope_file(previous_path), source=str(previous_path)
        )
        default_root = previous[0].root_version
    start = None
    if not_before is not None:
        try:
            start = parse_timestamp(not_before, field="--not-before")
        except FormatError as e:
            raise click.BadParameter(e.message, param_hint="--not-before") from e
    manifest = build_manifest(
        spec.pinsets,
        version=previous[0].version + 1 if previous else 1,
        previous=previous[1] if previous else None,
        root_version=root_version or default_root,
        issued_at=now,
        expires=parse_expiry(expires, now=now),
        not_before=start,
        poll_interval=poll_interval or spec.poll_interval or DEFAULT_POLL_INTERVAL,
        report_uri=report_uri if report_uri is not None else spec.report_uri,
    )
    envelope = unsigned_envelope(manifest)
    write_file_atomically(output, envelope.to_bytes(), overwrite=False)
    summary = {
        "file": str(output),
        "version": manifest.version,
        "root_version": manifest.root_version,
        "previous": manifest.previous,
        "payload_sha256": envelope.payload_sha256,
        "not_before": format_timestamp(manifest.not_before),
        "expires": format_timestamp(manifest.expires),
        "hosts": [p.host for p in manifest.pinsets],
    }
    if as_json:
        emit_json(summary)
        return
    chained = f"after {manifest.previous}" if manifest.previous else "the first version"
    click.echo(
        f"wrote {output}: unsigned manifest {manifest.version} under root"
        f" {manifest.root_version}, {chained}; {len(manifest.pinsets)} pin set(s),"
        f" expires {summary['expires']}"
    )
    click.echo(
        f"next: pinserver sign {output} --key PUBLISHER.key; pinserver lint {output}", err=True
    )


# --- lint -----------------------------------------------------------------------------


def _parse_connect_to(values: Sequence[str]) -> dict[str, tuple[str, int]]:
    out = {}
    for value in values:
        host, sep, address = value.partition("=")
        if not sep or not host or not address:
            raise click.BadParameter(
                f"{value!r}: use HOST=ADDRESS[:PORT]", param_hint="--connect-to"
            )
        try:
            out[host] = parse_host_port(address)
        except ValueError as e:
            raise click.BadParameter(str(e), param_hint="--connect-to") from e
    return out


def _live_chains(
    manifest_payload: bytes, *, cafile: str | None, connect_to: dict[str, tuple[str, int]]
) -> tuple[dict[str, list[ChainCert]], list[Finding]]:
    """Each pinned host's verified live chain; a host that cannot be checked is an error
    finding (publishing pins nobody could check is what the rule is there to stop)."""
    try:
        manifest = Manifest.from_bytes(manifest_payload)
    except FormatError:
        return {}, []  # lint reports the document's own errors
    chains: dict[str, list[ChainCert]] = {}
    failures = []
    for pinset in manifest.pinsets:
        address, port = connect_to.get(pinset.host, (pinset.host, 443))
        try:
            certs = fetch_verified_chain(address, port, servername=pinset.host, cafile=cafile)
        except FetchError as e:
            failures.append(
                Finding(
                    "error",
                    "live_chain_unavailable",
                    f"cannot check {pinset.host} against its live chain: {e.message}",
                    pinset.host,
                )
            )
            continue
        chains[pinset.host] = describe_chain(certs)
    return chains, failures


def _lint_root(root_path: Path | None) -> Root | None:
    if root_path is None:
        return None
    return trust.verify_anchor_root(read_envelope_file(root_path)).root


def _print_findings(findings: Sequence[Finding]) -> None:
    for f in findings:
        where = f" {f.host}:" if f.host else ""
        click.echo(f"{f.severity}: [{f.code}]{where} {f.message}")
    n_errors = sum(1 for f in findings if f.severity == "error")
    click.echo(f"{n_errors} error(s), {len(findings) - n_errors} warning(s)")


def _findings_json(findings: Sequence[Finding]) -> dict[str, Any]:
    return {"ok": not has_errors(findings), "findings": [f.to_dict() for f in findings]}


@click.command("lint")
@click.argument("file", type=_EXISTING_FILE)
@click.option(
    "--root",
    "root_path",
    type=_EXISTING_FILE,
    help="The root the manifest will be published under (checks it does not outlive it).",
)
@click.option("--connect", is_flag=True, help="Check every pinned host's live TLS chain.")
@click.option("--cafile", type=_EXISTING_FILE, help="CA bundle for --connect (default: system).")
@click.option(
    "--connect-to",
    multiple=True,
    metavar="HOST=ADDR[:PORT]",
    help="With --connect, reach HOST at ADDR:PORT (a staging box, a non-standard port).",
)
@click.option("--at", "at", help="Judge expiry at this time instead of now.")
@click.option("--json", "as_json", is_flag=True, help="Print the findings as JSON.")
@click.pass_context
def lint_command(
    ctx: click.Context,
    *,
    file: Path,
    root_path: Path | None,
    connect: bool,
    cafile: Path | None,
    connect_to: Sequence[str],
    at: str | None,
    as_json: bool,
) -> None:
    """Check a manifest against the operational rules of SPEC section 10.

    Errors (exit 1): a pin set without 2 pins and a backup; a manifest that outlives
    its root (--root); a pin set that matches nothing in the host's live chain
    (--connect). Warnings (exit 0): backup pin in the live chain, a pinned root CA,
    only a short-lived leaf pinned, all pins under one CA, something expiring within
    14 days, a poll interval over a tenth of the manifest's lifetime.

    \b
    Example:
      pinserver lint manifest.json --root root-1.json --connect
    """
    targets = _parse_connect_to(connect_to)
    try:
        now = utcnow() if at is None else parse_timestamp(at, field="--at")
    except FormatError as e:
        raise click.BadParameter(e.message, param_hint="--at") from e
    envelope = read_envelope_file(file)
    root = _lint_root(root_path)
    live: dict[str, list[ChainCert]] | None = None
    failures: list[Finding] = []
    if connect and envelope.payload_type == MANIFEST_TYPE:
        live, failures = _live_chains(
            envelope.payload, cafile=str(cafile) if cafile else None, connect_to=targets
        )
    findings = failures + lint_envelope(envelope, root=root, reference_time=now, live_chains=live)
    findings.sort(key=lambda f: f.severity != "error")
    if as_json:
        emit_json({"file": str(file), **_findings_json(findings)})
    else:
        _print_findings(findings)
    if has_errors(findings):
        ctx.exit(1)


# --- publish --------------------------------------------------------------------------


def _server_root(client: ServerClient) -> Root | None:
    """The server's current root, for lint's root rule (None when it cannot be had)."""
    version = client.health().get("root_version")
    if not isinstance(version, int) or version < 1:
        return None
    data = client.get_optional_bytes(f"/v1/roots/{version}.json")
    if data is None:
        return None
    return trust.verify_anchor_root(data).root


def _check_reason(force: bool, reason: str | None) -> str | None:
    if reason is not None and not force:
        raise click.UsageError("--reason goes with --force (it is why lint was overridden)")
    if not force:
        return None
    if reason is None or not reason.strip():
        raise click.UsageError("--force needs --reason TEXT: the server records why")
    reason = reason.strip()
    if len(reason) > MAX_REASON_CHARS or not reason.isprintable():
        raise click.BadParameter(
            f"at most {MAX_REASON_CHARS} printable characters, one line", param_hint="--reason"
        )
    return reason


@click.command("publish")
@click.argument("file", type=_EXISTING_FILE)
@click.option("--server", required=True, callback=validate_server_url, help="Server base URL.")
@click.option(
    "--token-env",
    metavar="VAR",
    default="PINSERVER_PUBLISH_TOKEN",
    show_default=True,
    help="Environment variable holding the publish bearer token, if the server wants one.",
)
@click.option("--force", is_flag=True, help="Publish despite lint errors (needs --reason).")
@click.option("--reason", help="Why lint was overridden; recorded in the server's audit log.")
@click.option("--json", "as_json", is_flag=True, help="Print lint findings and the answer as JSON.")
def publish_command(
    *,
    file: Path,
    server: str,
    token_env: str,
    force: bool,
    reason: str | None,
    as_json: bool,
) -> None:
    """Upload a signed manifest (POST /v1/manifests) or root (POST /v1/roots).

    A manifest is linted first against the server's current root; errors refuse the
    upload unless --force --reason TEXT (the reason is sent in X-Pinserver-Reason and
    recorded with the publication). The server verifies every signature again.

    \b
    Example:
      pinserver publish manifest.json --server https://pins.example.com
    """
    reason = _check_reason(force, reason)
    envelope = read_envelope_file(file)
    body = file.read_bytes()
    token = os.environ.get(token_env) or None
    findings: list[Finding] = []
    with ServerClient(server, token=token) as client:
        if envelope.payload_type == ROOT_TYPE:
            path = "/v1/roots"
        elif envelope.payload_type == MANIFEST_TYPE:
            path = "/v1/manifests"
            findings = lint_envelope(envelope, root=_server_root(client), reference_time=utcnow())
            if has_errors(findings) and not force:
                if as_json:
                    emit_json({"file": str(file), **_findings_json(findings), "published": False})
                else:
                    _print_findings(findings)
                codes = sorted({f.code for f in findings if f.severity == "error"})
                raise LintFailedError(
                    f"{file}: lint found errors ({', '.join(codes)}); not published"
                )
        else:
            raise FormatError(
                f"{file}: payloadType {envelope.payload_type!r} is neither a root nor a manifest",
                code="wrong_payload_type",
            )
        headers = {REASON_HEADER: reason} if reason else {}
        answer = client.post_envelope(path, body, headers=_encode_headers(headers))
    if as_json:
        emit_json(
            {"file": str(file), **_findings_json(findings), "published": True, "answer": answer}
        )
        return
    if findings:
        _print_findings(findings)
    kind = "root" if path == "/v1/roots" else "manifest"
    click.echo(
        f"published {kind} version {answer.get('version')} to {server}"
        f" (payload sha256 {answer.get('payload_sha256')})"
    )


def _encode_headers(headers: dict[str, str]) -> dict[str, Any]:
    """Header values as UTF-8 bytes (the server decodes X-Pinserver-Reason as UTF-8)."""
    return {name: value.encode("utf-8") for name, value in headers.items()}


def register(group: click.Group) -> None:
    """Add this module's commands to the pinserver group."""
    group.add_command(manifest_group)
    group.add_command(lint_command)
    group.add_command(publish_command)
