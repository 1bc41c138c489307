"""Render the tables of docs/benchmarks.md from bench/results/*.json.

    python -m bench.report                            # prints every table
    python -m bench.report --update docs/benchmarks.md  # rewrites the marked tables

The prose around the tables (what limits each figure, what was tried) is written
by hand in docs/benchmarks.md; this only makes sure the numbers are the measured ones.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

from bench._common import RESULTS_DIR


def _load(name: str) -> dict[str, Any] | None:
    path = RESULTS_DIR / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def _header(*names: str) -> str:
    return "| " + " | ".join(names) + " |"


def _provenance(doc: dict[str, Any]) -> str:
    m = doc["machine"]
    return (
        f"_Measured {m['date']} on {m['cpus']} × {m['cpu_model']}, Python {m['python']},"
        f" {m.get('nginx') or ''}; command: `{doc['command']}`._"
    )


def server(doc: dict[str, Any]) -> str:
    lines = [_provenance(doc), ""]
    lines.append(
        f"wrk `{doc['wrk']}`, {doc['runs']} runs, manifest {doc['manifest_bytes']} bytes;"
        " each target run paired with an nginx static run just before it."
    )
    for status in ("200", "304"):
        rows = doc["results"][status]
        lines += ["", f"**{status}**", ""]
        lines.append(
            _header("target", "req/s", "p50 / p99 ms", "req/s ratio", "server CPU µs/req")
            + " CPU ratio |"
        )
        lines.append("|---|---:|---:|---:|---:|---:|")
        for name, r in rows.items():
            lines.append(
                f"| {name} | {r['rps']:,.0f} | {r['p50_ms']:.2f} / {r['p99_ms']:.1f} |"
                f" **{r['ratio_to_nginx_static']:.3f}x** | {r['cpu_us_per_request']:.1f} |"
                f" **{r['cpu_ratio_to_nginx_static']:.3f}x** |"
            )
    in_process = doc.get("in_process_us")
    if in_process:
        lines += ["", "In process (the WSGI app called directly, no server), µs per request:", ""]
        lines.append("| app | 200 | 304 |")
        lines.append("|---|---:|---:|")
        for name, r in in_process.items():
            lines.append(f"| {name} | {r['200_us']:.2f} | {r['304_us']:.2f} |")
    return "\n".join(lines)


def client(doc: dict[str, Any]) -> str:
    lines = [_provenance(doc), ""]
    lines.append(
        f"{doc['runs']} runs, manifest of {doc['pinsets']} pin sets ({doc['manifest_bytes']}"
        " bytes)."
    )
    for case in ("no_change", "update"):
        lines += ["", f"**{case.replace('_', ' ')}**", ""]
        lines.append(
            "| poller | requests | bytes (both ways) | bytes received | wall ms | CPU ms |"
        )
        lines.append("|---|---:|---:|---:|---:|---:|")
        for name, row in doc["results"][case].items():
            lines.append(
                f"| {name} | {row['requests']} | {row['bytes']:,.0f} |"
                f" {row['bytes_received']:,.0f} | {row['wall_ms']:.2f} |"
                f" {row['cpu_ms']:.2f} |"
            )
    lines += [
        "",
        _header("case", "requests (ours, tuf)", "bytes vs tuf", "received vs tuf", "wall vs tuf")
        + " CPU vs tuf | wall vs bare |",
    ]
    lines.append("|---|---|---:|---:|---:|---:|---:|")
    for case, r in doc["ratios"].items():
        lines.append(
            f"| {case} | {r['requests'][0]}, {r['requests'][1]} | {r['bytes_vs_tuf']:.2f}x |"
            f" {r['bytes_received_vs_tuf']:.2f}x |"
            f" {r['wall_vs_tuf']:.2f}x | {r['cpu_vs_tuf']:.2f}x | {r['wall_vs_bare']:.2f}x"
            f" ({r['bare']}) |"
        )
    return "\n".join(lines)


def verify(doc: dict[str, Any]) -> str:
    lines = [_provenance(doc), ""]
    lines.append(
        _header("pin sets", "envelope bytes", "ours ms", "bare ms", "ratio", "envelope decode")
        + " signature | strict payload parse | durable swap |"
    )
    lines.append("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for row in doc["sizes"]:
        p = row["ours_parts_ms"]
        lines.append(
            f"| {row['pinsets']:,} | {row['envelope_bytes']:,} | {row['ours_ms']:.2f} |"
            f" {row['bare_ms']:.2f} | **{row['ratio']:.2f}x** | {p['envelope_decode']:.2f} |"
            f" {p['signature_verify']:.2f} | {p['payload_parse_strict']:.2f} |"
            f" {p['durable_swap']:.2f} |"
        )
    refused = doc.get("refused")
    if refused:
        lines += [
            "",
            f"{refused['pinsets']:,} pin sets: envelope of {refused['envelope_bytes']:,} bytes,"
            f" refused with `{refused['error']}` (HTTP {refused['status']}, code"
            f' `{refused["code"]}`) in {refused["refused_in_ms"]:.2f} ms: "{refused["message"]}".',
        ]
    return "\n".join(lines)


def history(doc: dict[str, Any]) -> str:
    lines = [_provenance(doc), ""]
    sizes = doc["sizes"]
    names = list(sizes)
    lines.append("| stored versions | " + " | ".join(f"{int(n):,}" for n in names) + " |")
    lines.append("|---|" + "---:|" * len(names))

    def row(label: str, get: Any) -> None:
        lines.append(f"| {label} | " + " | ".join(get(sizes[n]) for n in names) + " |")

    row("auditor verification, core (s)", lambda r: f"{r['audit_core']['seconds']:.1f}")
    row("… per version (µs)", lambda r: f"{r['audit_core']['us_per_version']:.0f}")
    row(
        "`pinserver history` over HTTP (s)",
        lambda r: f"{r['audit_cli']['seconds']:.1f}" if "seconds" in r["audit_cli"] else "n/a",
    )
    for key in sizes[names[0]]["pages"]:
        row(f"`{key}`", lambda r, k=key: f"{r['pages'][k]:.2f}")
    row(
        "`/audit/hosts/HOST` (s, scans every version)",
        lambda r: f"{r['host_page']['seconds']:.1f} (HTTP {r['host_page']['status']})",
    )
    row("`POST /v1/manifests` (ms, sign excluded)", lambda r: f"{r['http_publish_ms']:.2f}")
    lines += [
        "",
        "Store-level publish (verify + one SQLite transaction), ms, by versions already stored:",
        "",
    ]
    pub = doc["store_publish_ms_at_stored_versions"]
    lines.append("| stored | " + " | ".join(f"{int(k):,}" for k in pub) + " |")
    lines.append("|---|" + "---:|" * len(pub))
    lines.append("| publish ms | " + " | ".join(f"{v:.2f}" for v in pub.values()) + " |")
    large, small = doc.get("memory_large"), doc.get("memory_small")
    if large and small:
        lines += [
            "",
            "| peak RSS (MiB) | one version, 10 hosts |"
            f" {large['latest_version']:,} versions, {doc['largest_fitting_pinsets']:,} hosts |",
            "|---|---:|---:|",
            f"| gunicorn worker (max of {large['gunicorn_worker_memory']['workers']}) |"
            f" {small['gunicorn_worker_memory']['max_vmhwm_mib']:.1f} |"
            f" {large['gunicorn_worker_memory']['max_vmhwm_mib']:.1f} |",
            f"| client process holding the manifest | {small['client_memory']['maxrss_mib']:.1f} |"
            f" {large['client_memory']['maxrss_mib']:.1f} |",
        ]
    return "\n".join(lines)


RENDERERS = {
    "server_wrk": server,
    "server_wrk_gunicorn_settings": server,
    "server_wrk_access_log": server,
    "client_poll": client,
    "client_poll_large": client,
    "verify_cost": verify,
    "history": history,
}


def update(document: Path) -> None:
    """Replace the text between ``<!-- bench:NAME -->`` and ``<!-- /bench:NAME -->`` in
    ``document`` with the table rendered from ``bench/results/NAME.json``."""
    text = document.read_text()
    for name, render in RENDERERS.items():
        doc = _load(name)
        if doc is None:
            continue
        pattern = re.compile(rf"(<!-- bench:{name} -->\n).*?(<!-- /bench:{name} -->)", re.DOTALL)
        text = pattern.sub(lambda m, d=doc, r=render: m.group(1) + r(d) + "\n" + m.group(2), text)
    document.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--update", type=Path, help="rewrite the marked tables in this file")
    args = parser.parse_args()
    if args.update:
        update(args.update)
        return
    for name, render in RENDERERS.items():
        doc = _load(name)
        print(f"<!-- bench:{name} -->")
        print(render(doc) if doc else f"(no bench/results/{name}.json yet)")
        print(f"<!-- /bench:{name} -->")
        print()


if __name__ == "__main__":
    main()
