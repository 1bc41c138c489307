"""CLI commands for auditors and on-call: ``history`` and ``monitor``.

``history`` downloads everything a server has published and hands it to the pure
:func:`pinserver.audit.verify_history`; ``monitor`` fetches the verified latest
manifest and the pinned hosts' live chains and hands them to the pure
:func:`pinserver.monitoring.evaluate`. Neither decides anything itself.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import click

from pinserver.audit import HistoryReport, verify_history
from pinserver.cli._common import emit_json, utcnow, write_file_atomically
from pinserver.cli._http import ServerClient, validate_server_url
from pinserver.cli._remote import diff_dict, diff_lines, fetch_server_view, read_anchor
from pinserver.cli.manifests import _parse_connect_to
from pinserver.diff import diff_manifests
from pinserver.documents import format_timestamp
from pinserver.errors import FetchError, PinserverError
from pinserver.live import fetch_verified_chain
from pinserver.monitoring import (
    LiveChain,
    MonitorReport,
    Thresholds,
    Unreachable,
    evaluate,
    server_failure,
)
from pinserver.pins import describe_chain
from pinserver.trust import MAX_ROOT_ROTATIONS

_EXISTING_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)
HISTORY_PAGE = 50  # envelopes are capped at 1 MiB: a page stays under the CLI's JSON cap


# --- history ------------------------------------------------------------------------------


def _download_roots(client: ServerClient) -> list[bytes]:
    roots: list[bytes] = []
    for version in range(1, MAX_ROOT_ROTATIONS + 2):
        data = client.get_optional_bytes(f"/v1/roots/{version}.json")
        if data is None:
            return roots
        roots.append(data)
    return roots


def _download_manifests(client: ServerClient, expected: int) -> tuple[list[bytes], dict[int, str]]:
    """Every manifest envelope by paging GET /v1/history, with a progress bar on stderr;
    also the server's ``published_at`` per listed version (its claim, not signed)."""
    envelopes: list[bytes] = []
    published: dict[int, str] = {}
    after = 0
    with click.progressbar(
        length=max(expected, 1), label="downloading manifests", file=sys.stderr
    ) as bar:
        while True:
            page = client.get_json(f"/v1/history?after={after}&limit={HISTORY_PAGE}")
            items = page.get("items")
            if not isinstance(items, list):
                raise FetchError(f"{client.base_url}/v1/history answered no items list")
            for item in items:
                if not isinstance(item, dict) or not isinstance(item.get("envelope"), dict):
                    raise FetchError(f"{client.base_url}/v1/history: an item has no envelope")
                envelopes.append(json.dumps(item["envelope"]).encode("utf-8"))
                if isinstance(item.get("version"), int):
                    published[item["version"]] = str(item.get("published_at"))
            bar.update(len(items))
            next_after = page.get("next_after")
            if next_after is None or not items:
                return envelopes, published
            if not isinstance(next_after, int) or next_after <= after:
                raise FetchError(
                    f"{client.base_url}/v1/history paging does not advance (after={after},"
                    f" next_after={next_after!r})"
                )
            after = next_after


def _write_out(out: Path, roots: Sequence[bytes], manifests: Sequence[bytes]) -> None:
    (out / "roots").mkdir(parents=True, exist_ok=True)
    (out / "manifests").mkdir(parents=True, exist_ok=True)
    for version, data in enumerate(roots, start=1):
        write_file_atomically(out / "roots" / f"{version}.json", data, overwrite=True)
    for version, data in enumerate(manifests, start=1):
        write_file_atomically(out / "manifests" / f"{version}.json", data, overwrite=True)


def _short(keyid: str) -> str:
    return keyid[:12]


def _history_rows(report: HistoryReport, published: dict[int, str]) -> list[dict[str, Any]]:
    return [
        {
            "version": e.version,
            "root_version": e.root_version,
            "issued_at": format_timestamp(e.issued_at),
            "published_at": published.get(e.version),
            "expires": format_timestamp(e.manifest.expires),
            "signed_by": sorted(e.signed_by),
            "payload_sha256": e.payload_sha256,
            "hosts_changed": list(e.hosts_changed),
        }
        for e in report.entries
    ]


def _print_history(report: HistoryReport, rows: Sequence[dict[str, Any]]) -> None:
    roots = ", ".join(str(r.version) for r in report.roots) or "none"
    click.echo(
        f"roots: {report.roots_total} served; verified from root {report.anchor_version}: {roots}"
    )
    click.echo(f"{'version':>7}  {'root':>4}  {'issued_at':<20}  {'signers':<25}  hosts changed")
    for row in rows:
        signers = ",".join(_short(k) for k in row["signed_by"])
        changed = ", ".join(row["hosts_changed"]) or "-"
        click.echo(
            f"{row['version']:>7}  {row['root_version']:>4}  {row['issued_at']:<20}"
            f"  {signers:<25}  {changed}"
        )
    verified = len(report.entries)
    click.echo(
        f"{verified} of {report.manifests_total} manifest(s) verified: signatures, hash chain,"
        " versions"
    )


@click.command("history")
@click.option("--server", required=True, callback=validate_server_url, help="Server base URL.")
@click.option(
    "--root",
    "root_path",
    required=True,
    type=_EXISTING_FILE,
    help="The root you trust (root 1 audits everything).",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    help="Also write roots/N.json and manifests/N.json here.",
)
@click.option(
    "--diff",
    "diff_versions",
    nargs=2,
    type=click.IntRange(min=1),
    metavar="A B",
    help="Show the pins added and removed per host from version A to version B.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.pass_context
def history_command(
    ctx: click.Context,
    *,
    server: str,
    root_path: Path,
    out: Path | None,
    diff_versions: tuple[int, int] | None,
    as_json: bool,
) -> None:
    """Download every root and manifest and verify the whole history offline.

    Roots are walked from ROOT one version at a time; each manifest must meet the
    publisher threshold of the root it names; versions run 1, 2, 3... without a gap and
    each `previous` is the SHA-256 of the payload before. Exit 1 at the first break,
    which is named. Files in --out are the envelopes as the history API lists them
    (same payloads and signatures; JSON whitespace may differ from the uploads).

    \b
    Examples:
      pinserver history --server https://pins.example.com --root root-1.json
      pinserver history --server https://pins.example.com --root root-1.json --diff 3 4
      pinserver history --server https://pins.example.com --root root-1.json --out audit/
    """
    anchor = read_anchor(root_path)
    with ServerClient(server) as client:
        health = client.health()
        roots = _download_roots(client)
        expected = health.get("manifest_version")
        manifests, published = _download_manifests(
            client, expected if isinstance(expected, int) else 0
        )
    if out is not None:
        _write_out(out, roots, manifests)
    report = verify_history(anchor, roots, manifests)
    rows = _history_rows(report, published)
    diff_result = None
    if diff_versions is not None:
        a, b = diff_versions
        old, new = report.entry(a), report.entry(b)
        if old is None or new is None:
            raise click.BadParameter(
                f"version {a if old is None else b} is not among the verified versions"
                f" (1..{len(report.entries)})",
                param_hint="--diff",
            )
        diff_result = diff_manifests(old.manifest, new.manifest)
    if as_json:
        emit_json(
            {
                "server": server,
                "ok": report.ok,
                "anchor_version": report.anchor_version,
                "roots_total": report.roots_total,
                "roots_verified": [r.version for r in report.roots],
                "manifests_total": report.manifests_total,
                "manifests": rows,
                "breaks": [b.to_dict() for b in report.breaks],
                "diff": diff_dict(diff_result) if diff_result else None,
                "out": str(out) if out else None,
            }
        )
    else:
        _print_history(report, rows)
        if diff_result is not None:
            for line in diff_lines(diff_result):
                click.echo(line)
        if out is not None:
            click.echo(f"wrote {len(roots)} root(s) and {len(manifests)} manifest(s) to {out}")
    for brk in report.breaks:
        click.echo(
            f"error [{brk.code}]: history breaks at {brk.kind} {brk.version}: {brk.message}",
            err=True,
        )
    if not report.ok:
        click.echo(
            "  what to do: do not trust versions from there on; keep the downloaded files"
            " (--out) as evidence and alert the root holders",
            err=True,
        )
        ctx.exit(1)


# --- monitor ------------------------------------------------------------------------------


def _live_chains(
    hosts: Sequence[str],
    *,
    cafile: str | None,
    connect_to: dict[str, tuple[str, int]],
    timeout: float,
) -> dict[str, LiveChain]:
    chains: dict[str, LiveChain] = {}
    for host in hosts:
        address, port = connect_to.get(host, (host, 443))
        try:
            certs = fetch_verified_chain(
                address, port, servername=host, cafile=cafile, timeout=timeout
            )
        except FetchError as e:
            chains[host] = Unreachable(e.message)
            continue
        chains[host] = describe_chain(certs)
    return chains


_STATUS_WORD = {"ok": "OK", "warning": "WARN", "failure": "FAIL"}


def _print_monitor(report: MonitorReport, server: str) -> None:
    click.echo(f"{'status':<6}  {'days':>6}  what")
    for check in report.checks:
        days = f"{check.days_left:.1f}" if check.days_left is not None else "-"
        click.echo(f"{_STATUS_WORD[check.status]:<6}  {days:>6}  {check.subject}")
    problems = [c for c in report.checks if c.status != "ok"]
    for check in problems:
        click.echo(f"{check.status}: {check.message}")
    counts = report.counts()
    click.echo(
        f"{server}: {report.status.upper()} ({counts['ok']} ok, {counts['warning']} warning(s),"
        f" {counts['failure']} failure(s))"
    )


@click.command("monitor")
@click.option("--server", required=True, callback=validate_server_url, help="Server base URL.")
@click.option("--root", "root_path", required=True, type=_EXISTING_FILE, help="The root you trust.")
@click.option("--warn-days", type=click.IntRange(min=0), default=30, show_default=True)
@click.option("--fail-days", type=click.IntRange(min=0), default=15, show_default=True)
@click.option(
    "--manifest-warn-days",
    type=click.IntRange(min=0),
    default=5,
    show_default=True,
    help="The manifest is renewed by cron, so it has its own, shorter thresholds.",
)
@click.option("--manifest-fail-days", type=click.IntRange(min=0), default=2, show_default=True)
@click.option("--cafile", type=_EXISTING_FILE, help="CA bundle for the live checks.")
@click.option(
    "--connect-to",
    multiple=True,
    metavar="HOST=ADDR[:PORT]",
    help="Reach HOST at ADDR:PORT (staging, a non-standard port).",
)
@click.option("--timeout", type=float, default=10.0, show_default=True, help="Seconds per host.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON (for alerting).")
@click.pass_context
def monitor_command(
    ctx: click.Context,
    *,
    server: str,
    root_path: Path,
    warn_days: int,
    fail_days: int,
    manifest_warn_days: int,
    manifest_fail_days: int,
    cafile: Path | None,
    connect_to: Sequence[str],
    timeout: float,
    as_json: bool,
) -> None:
    """Check every pinned host's live chain and everything that can expire.

    Verifies the latest manifest (root chain walked from ROOT), connects to every
    pinned host and checks that its verified chain matches a pin, and reports days
    left for the root, the manifest, each pin set and each certificate. Exit 0 all
    ok, 1 warnings, 2 failures (an unreachable or unverifiable server is a failure).

    \b
    Example (cron every 15 minutes, alert on non-zero exit):
      pinserver monitor --server https://pins.example.com --root root-1.json --json
    """
    try:
        thresholds = Thresholds(
            warn=timedelta(days=warn_days),
            fail=timedelta(days=fail_days),
            manifest_warn=timedelta(days=manifest_warn_days),
            manifest_fail=timedelta(days=manifest_fail_days),
        )
    except ValueError as e:
        raise click.UsageError(f"{e} (--fail-days <= --warn-days)") from e
    targets = _parse_connect_to(connect_to)
    anchor = read_anchor(root_path)
    now = utcnow()
    try:
        with ServerClient(server) as client:
            view = fetch_server_view(client, anchor)
    except PinserverError as e:
        report = server_failure(server, f"[{e.code}] {e.message}", now)
    else:
        if view.latest is None:
            report = server_failure(server, "the server has published no manifest yet", now)
        else:
            manifest = view.latest.manifest
            chains = _live_chains(
                [p.host for p in manifest.pinsets],
                cafile=str(cafile) if cafile else None,
                connect_to=targets,
                timeout=timeout,
            )
            report = evaluate(manifest, view.current.root, chains, utcnow(), thresholds)
    if as_json:
        emit_json({"server": server, **report.to_dict()})
    else:
        _print_monitor(report, server)
    ctx.exit(report.exit_code)


def register(group: click.Group) -> None:
    """Add this module's commands to the pinserver group."""
    group.add_command(history_command)
    group.add_command(monitor_command)
