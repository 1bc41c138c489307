"""Server throughput of one poll, ``GET /v1/manifest.json``, as ratios to nginx static.

In one run, with wrk on 127.0.0.1, every target serves the same manifest bytes:

* ``nginx_static``: nginx serving those bytes as a plain file (the limit);
* ``pinserver_serve``: ``pinserver serve`` with its default configuration
  (gunicorn gthread, 2 workers per CPU, 4 threads, JSON access log to stdout);
* ``pinserver_serve_no_access_log``: the same with ``PINSERVER_ACCESS_LOG=off``;
* ``nginx_export``: nginx serving ``pinserver export`` of the same store, configured
  as docs/scaling.md's mirror (the production layout it recommends);
* ``nginx_proxy_cache``: nginx ``proxy_cache`` in front of ``pinserver serve``, as
  docs/scaling.md's "nginx in front of the replicas" (the other production layout);
* ``flask_reference`` / ``bare_wsgi_reference``: a plain Flask view and a bare WSGI
  callable returning cached bytes under the same gunicorn settings (what gunicorn
  and Flask cost per request here; bench/_reference_apps.py).

Each target is measured as 200 (no validator) and 304 (``If-None-Match`` with the
ETag it served), runs rotate the order of targets, and each figure is the median
over runs; ratios are the median of per-run ratios to ``nginx_static``.

    python -m bench.server_wrk [--runs 5] [--duration 3] [--pinsets 10]

wrk and the servers share the machine's cores: that is why only ratios from the
same run are compared.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import requests

from bench import _documents
from bench._common import (
    REPO_DIR,
    Nginx,
    Site,
    free_port,
    median,
    run_wrk,
    stop_process,
    temp_dir,
    wait_for_port,
    write_results,
)
from pinserver.keys import PrivateKey
from tests.factory import root_document, root_envelope

PINSERVER = str(Path(sys.executable).with_name("pinserver"))
MANIFEST = "/v1/manifest.json"
BASELINE = "nginx_static"


def _default_workers() -> int:
    return max(2, (os.cpu_count() or 1) * 2)


def start_serve(
    data: Path, port: int, log: Path, *options: str, **env: str
) -> subprocess.Popen[bytes]:
    """``pinserver serve`` as an operator starts it (it execs gunicorn: same pid)."""
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [PINSERVER, "serve", "--data", str(data), "--bind", f"127.0.0.1:{port}", *options],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **env},
        )
    wait_for_port(port, proc=proc)
    return proc


def start_reference(app: str, port: int, manifest_file: Path, log: Path) -> subprocess.Popen[bytes]:
    """A reference app under the same gunicorn settings as ``pinserver serve``."""
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "--worker-class",
                "gthread",
                "--workers",
                str(_default_workers()),
                "--threads",
                "4",
                "--bind",
                f"127.0.0.1:{port}",
                f"bench._reference_apps:{app}",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=REPO_DIR,
            env={**os.environ, "BENCH_MANIFEST_FILE": str(manifest_file)},
        )
    wait_for_port(port, proc=proc)
    return proc


def proxy_cache_directives(upstream_port: int, cache_dir: Path) -> tuple[str, str]:
    """http-level and server-level directives of docs/scaling.md's "nginx in front of
    the replicas" (the polling location; TLS left out: wrk talks plain HTTP here)."""
    http = (
        f"proxy_cache_path {cache_dir} levels=1:2 keys_zone=pinserver:10m"
        " max_size=1g inactive=7d use_temp_path=off;\n"
        f"    upstream pinserver_replicas {{ server 127.0.0.1:{upstream_port}; keepalive 64; }}"
    )
    server = """
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_set_header Host $host;
        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        proxy_set_header X-Forwarded-Proto $scheme;
        location = /v1/manifest.json {
            limit_except GET HEAD { deny all; }
            proxy_pass http://pinserver_replicas;
            proxy_cache pinserver;
            proxy_cache_revalidate on;
            proxy_cache_lock on;
            proxy_cache_use_stale updating;
            proxy_cache_background_update on;
            proxy_cache_valid 404 10s;
            add_header X-Cache $upstream_cache_status always;
        }"""
    return http, server


# docs/scaling.md's "A mirror serving pinserver export output" (TLS left out).
EXPORT_MIRROR_DIRECTIVES = """
        etag on;
        default_type application/json;
        gzip off;
        location = /v1/manifest.json {
            add_header Cache-Control "public, max-age=60, must-revalidate" always;
            try_files $uri =404;
        }"""


def _setup_store(work: Path, pinsets: int) -> tuple[Path, bytes, PrivateKey]:
    root_key, publisher = PrivateKey.generate(), PrivateKey.generate()
    root = root_envelope(root_document(1, [root_key], [publisher]), [root_key])
    (work / "root-1.json").write_bytes(root)
    data = work / "data"
    subprocess.run(
        [PINSERVER, "init", "--root", str(work / "root-1.json"), "--data", str(data)],
        check=True,
        capture_output=True,
    )
    manifest = _documents.manifest(pinsets, [publisher], version=1)
    return data, manifest, publisher


def _publish(base_url: str, envelope: bytes) -> None:
    r = requests.post(
        base_url + "/v1/manifests",
        data=envelope,
        headers={"Content-Type": "application/json"},
        timeout=30,
    )
    if r.status_code != 201:
        raise RuntimeError(f"publication failed: HTTP {r.status_code} {r.text}")


def _probe(url: str, expected: bytes) -> str:
    """Check that a target serves exactly ``expected`` and answers If-None-Match with
    304; return its ETag."""
    r = requests.get(url, timeout=10)
    if r.status_code != 200 or r.content != expected:
        raise RuntimeError(f"{url} does not serve the manifest bytes (HTTP {r.status_code})")
    etag = r.headers.get("ETag")
    if not etag:
        raise RuntimeError(f"{url} sends no ETag")
    r304 = requests.get(url, headers={"If-None-Match": etag}, timeout=10)
    if r304.status_code != 304:
        raise RuntimeError(f"{url} answered If-None-Match with {r304.status_code}")
    return etag


def run(
    *,
    runs: int,
    duration: int,
    pinsets: int,
    connections: int,
    work: Path,
    only: frozenset[str] | None = None,
    also_serve: tuple[tuple[int, int], ...] = (),
) -> dict[str, Any]:
    """Every target, or ``only`` those named (nginx_static is always measured);
    ``also_serve`` adds ``pinserver serve --workers W --threads T`` targets (access
    log off) to see what the gunicorn settings change."""
    data, manifest, _ = _setup_store(work, pinsets)
    logs = work / "logs"
    logs.mkdir()
    procs: list[subprocess.Popen[bytes]] = []
    nginx: Nginx | None = None
    try:
        serve_port, serve_nolog_port = free_port(), free_port()
        procs.append(start_serve(data, serve_port, logs / "serve.log"))
        serve_url = f"http://127.0.0.1:{serve_port}"
        _publish(serve_url, manifest)
        procs.append(
            start_serve(
                data, serve_nolog_port, logs / "serve-nolog.log", PINSERVER_ACCESS_LOG="off"
            )
        )
        served = requests.get(serve_url + MANIFEST, timeout=10).content
        if served != manifest:
            raise RuntimeError("pinserver serve does not serve the published bytes")

        static = work / "static"
        (static / "v1").mkdir(parents=True)
        (static / "v1" / "manifest.json").write_bytes(served)
        export_dir = work / "export"
        subprocess.run(
            [PINSERVER, "export", str(export_dir), "--data", str(data)],
            check=True,
            capture_output=True,
        )
        flask_port, bare_port = free_port(), free_port()
        manifest_file = static / "v1" / "manifest.json"
        procs.append(start_reference("flask_app", flask_port, manifest_file, logs / "flask.log"))
        procs.append(start_reference("bare_app", bare_port, manifest_file, logs / "bare.log"))

        cache_http, cache_server = proxy_cache_directives(serve_port, work / "nginx-cache")
        nginx = Nginx(
            {
                "static": Site(static),
                "export": Site(export_dir, directives=EXPORT_MIRROR_DIRECTIVES),
                "cache": Site(static, directives=cache_server),
            },
            http_directives=cache_http,
        ).start()

        tuned = {}
        for workers, threads in also_serve:
            port = free_port()
            options = ("--workers", str(workers), "--threads", str(threads))
            log = logs / f"serve-w{workers}t{threads}.log"
            procs.append(start_serve(data, port, log, *options, PINSERVER_ACCESS_LOG="off"))
            tuned[f"pinserver_serve_w{workers}_t{threads}_no_access_log"] = (
                f"http://127.0.0.1:{port}{MANIFEST}"
            )
        urls = {
            **tuned,
            "nginx_static": nginx.url("static", MANIFEST),
            "pinserver_serve": serve_url + MANIFEST,
            "pinserver_serve_no_access_log": f"http://127.0.0.1:{serve_nolog_port}{MANIFEST}",
            "nginx_export": nginx.url("export", MANIFEST),
            "nginx_proxy_cache": nginx.url("cache", MANIFEST),
            "flask_reference": f"http://127.0.0.1:{flask_port}{MANIFEST}",
            "bare_wsgi_reference": f"http://127.0.0.1:{bare_port}{MANIFEST}",
        }
        if only is not None:
            urls = {k: v for k, v in urls.items() if k in only or k == BASELINE}
        etags = {name: _probe(url, served) for name, url in urls.items()}

        samples: dict[str, dict[str, list[dict[str, Any]]]] = {"200": {}, "304": {}}
        names = list(urls)
        for run_index in range(runs + 1):  # run 0 warms every target up and is dropped
            shift = run_index % len(names)
            for name in names[shift:] + names[:shift]:
                for status in ("200", "304"):
                    headers = {"If-None-Match": etags[name]} if status == "304" else {}
                    result = run_wrk(
                        urls[name],
                        headers=headers,
                        duration=duration if run_index else 1,
                        connections=connections,
                    )
                    if result.non_2xx_3xx or result.errors:
                        raise RuntimeError(f"{name} {status}: wrk saw errors {result}")
                    if run_index:
                        samples[status].setdefault(name, []).append(result.to_dict())
                    print(
                        f"run {run_index} {name:<32} {status} {result.requests_per_second:10.0f}"
                        " req/s",
                        flush=True,
                    )
    finally:
        if nginx is not None:
            nginx.stop()
        for proc in procs:
            stop_process(proc)

    return {
        "runs": runs,
        "duration_s": duration,
        "wrk": f"-t2 -c{connections} -d{duration}s --latency",
        "pinsets": pinsets,
        "manifest_bytes": len(served),
        "gunicorn": {"workers": _default_workers(), "threads": 4, "worker_class": "gthread"},
        "results": {status: _summarise(rows) for status, rows in samples.items()},
        "targets": {
            "production_layout_vs_nginx_static": ">= 0.9",
            "pinserver_serve_vs_nginx_static": ">= 0.12",
        },
    }


def _summarise(rows: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    base = rows[BASELINE]
    out = {}
    for name, samples in rows.items():
        out[name] = {
            "rps": round(median([s["rps"] for s in samples]), 1),
            "p50_ms": round(median([s["p50_ms"] for s in samples]), 3),
            "p99_ms": round(median([s["p99_ms"] for s in samples]), 3),
            "ratio_to_nginx_static": round(
                median([s["rps"] / b["rps"] for s, b in zip(samples, base, strict=True)]), 3
            ),
            "rps_runs": [s["rps"] for s in samples],
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--duration", type=int, default=3, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--pinsets", type=int, default=10)
    parser.add_argument(
        "--also-serve",
        default="",
        help="extra pinserver serve targets as WORKERS:THREADS,... (access log off)",
    )
    args = parser.parse_args()
    also = tuple(
        (int(w), int(t))
        for w, t in (item.split(":") for item in args.also_serve.split(",") if item)
    )
    with temp_dir("bench-server-") as work:
        results = run(
            runs=args.runs,
            duration=args.duration,
            pinsets=args.pinsets,
            connections=args.connections,
            work=work,
            also_serve=also,
        )
    for status in ("200", "304"):
        print(status)
        for name, row in results["results"][status].items():
            print(
                f"  {name:<32} {row['rps']:>10.0f} req/s  p50 {row['p50_ms']:7.3f} ms"
                f"  p99 {row['p99_ms']:7.3f} ms  {row['ratio_to_nginx_static']:.3f}x"
            )
    write_results("server_wrk", results)


if __name__ == "__main__":
    main()
