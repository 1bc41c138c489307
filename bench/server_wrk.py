"""Server throughput of one poll, ``GET /v1/manifest.json``, as ratios to nginx static.

In one run, with wrk on 127.0.0.1, every target serves the same manifest bytes:

* ``nginx_static``: nginx serving those bytes as a plain file (the limit);
* ``pinserver_serve``: ``pinserver serve`` with its default configuration
  (gunicorn gthread, 2 workers per CPU, 4 threads, JSON access log to stdout);
* ``pinserver_serve_no_access_log``: the same with ``PINSERVER_ACCESS_LOG=off``;
* ``nginx_export_open_file_cache``: nginx serving ``pinserver export`` of the same
  store, configured as docs/scaling.md's mirror (the production layout it recommends);
* ``nginx_export``: the same mirror without its ``open_file_cache`` lines;
* ``nginx_proxy_cache``: nginx ``proxy_cache`` in front of ``pinserver serve``, as
  docs/scaling.md's "nginx in front of the replicas" (the other production layout);
* ``flask_reference`` / ``bare_wsgi_reference``: a plain Flask view and a bare WSGI
  callable returning cached bytes under the same gunicorn settings (what gunicorn
  and Flask cost per request here; bench/_reference_apps.py).

Besides throughput, the CPU time the serving processes spend per request (user +
system, from /proc, over each wrk run) is recorded: on a shared machine it moves
much less than requests per second, and it is the server's cost of one poll.
``cpu_ratio_to_nginx_static`` is nginx's CPU per request divided by the target's
(1.0: as cheap as nginx; 0.1: ten times the CPU).

Each target is measured as 200 (no validator) and 304 (``If-None-Match`` with the
ETag it served). Every wrk run of a target follows an ``nginx_static`` run of the
same status, and its ratio is taken to that run (on a shared, noisy machine the
pair sees the same conditions); runs rotate the order of targets. Figures are
medians over runs; ratios are the median of the per-pair ratios.

    python -m bench.server_wrk [--runs 5] [--duration 3] [--pinsets 10]

wrk and the servers share the machine's cores: that is why only ratios from the
same run are compared.
"""

from __future__ import annotations

import argparse
import io
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
    children_of,
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


_TICKS = os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(roots: list[int]) -> float:
    """User + system CPU seconds of each process in ``roots`` and its direct children
    (nginx or gunicorn master and workers), from /proc."""
    total = 0
    for pid in {p for root in roots for p in (root, *children_of(root))}:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
    return total / _TICKS


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


# docs/scaling.md's mirror keeps open descriptors and stat() results for 1 s, which
# saves the open/fstat/close of every request (a new manifest shows within 1 s):
# OPEN_FILE_CACHE + EXPORT_MIRROR_DIRECTIVES is the mirror exactly as documented.
OPEN_FILE_CACHE = """
        open_file_cache max=1000 inactive=60s;
        open_file_cache_valid 1s;
        open_file_cache_errors on;"""

# docs/scaling.md's "A mirror serving pinserver export output" (TLS left out), without
# its open_file_cache lines: the nginx_export target, to show what they are worth.
EXPORT_MIRROR_DIRECTIVES = """
        etag on;
        default_type application/json;
        gzip off;
        location = /v1/manifest.json {
            add_header Cache-Control "public, max-age=60, must-revalidate" always;
            try_files $uri =404;
        }"""


def in_process_costs(
    data: Path, manifest_file: Path, *, target_seconds: float = 0.2
) -> dict[str, dict[str, float]]:
    """Microseconds per request of each WSGI app called directly (no server, no socket):
    what the application itself costs, next to what it costs under gunicorn."""
    import importlib

    from bench._common import calibrate, time_per_call
    from pinserver.server import create_app
    from pinserver.server.hotpath import etag_for

    os.environ["BENCH_MANIFEST_FILE"] = str(manifest_file)
    reference = importlib.reload(importlib.import_module("bench._reference_apps"))
    apps = {
        "pinserver_app": create_app({"DATA_DIR": str(data), "CHECK_INTEGRITY": False}),
        "flask_reference": reference.flask_app,
        "bare_wsgi_reference": reference.bare_app,
    }
    out: dict[str, dict[str, float]] = {}
    for name, app in apps.items():
        statuses: list[str] = []

        def start_response(status: str, headers: list[tuple[str, str]], _s=statuses) -> None:
            _s.append(status)

        def call(environ: dict[str, Any], app: Any = app, start: Any = start_response) -> None:
            body = app(dict(environ), start)
            for _ in body:
                pass
            close = getattr(body, "close", None)
            if close is not None:
                close()

        base = {
            "REQUEST_METHOD": "GET",
            "PATH_INFO": MANIFEST,
            "SCRIPT_NAME": "",
            "QUERY_STRING": "",
            "SERVER_NAME": "127.0.0.1",
            "SERVER_PORT": "8080",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "REMOTE_ADDR": "127.0.0.1",
            "HTTP_HOST": "127.0.0.1:8080",
            "wsgi.url_scheme": "http",
            "wsgi.input": io.BytesIO(b""),
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": True,
            "wsgi.multiprocess": True,
            "wsgi.run_once": False,
            "wsgi.version": (1, 0),
        }
        call(base)
        etag = etag_for(manifest_file.read_bytes()) if name == "pinserver_app" else reference._ETAG
        conditional = {**base, "HTTP_IF_NONE_MATCH": etag}
        row = {}
        for status, environ in (("200", base), ("304", conditional)):
            statuses.clear()
            call(environ)
            if not statuses[-1].startswith(status):
                raise RuntimeError(f"{name} answered {statuses[-1]} in process, not {status}")
            n = calibrate(lambda e=environ: call(e), target_seconds=target_seconds)
            row[f"{status}_us"] = round(
                median([time_per_call(lambda e=environ: call(e), number=n) for _ in range(5)])
                * 1e6,
                2,
            )
        out[name] = row
    return out


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
    in_process_seconds: float = 0.2,
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
                "export_cached": Site(
                    export_dir, directives=OPEN_FILE_CACHE + EXPORT_MIRROR_DIRECTIVES
                ),
                "cache": Site(static, directives=cache_server),
            },
            http_directives=cache_http,
        ).start()

        tuned = {}
        tuned_pids: dict[str, list[int]] = {}
        for workers, threads in also_serve:
            port = free_port()
            options = ("--workers", str(workers), "--threads", str(threads))
            log = logs / f"serve-w{workers}t{threads}.log"
            procs.append(start_serve(data, port, log, *options, PINSERVER_ACCESS_LOG="off"))
            name = f"pinserver_serve_w{workers}_t{threads}_no_access_log"
            tuned[name] = f"http://127.0.0.1:{port}{MANIFEST}"
            tuned_pids[name] = [procs[-1].pid]
        urls = {
            **tuned,
            "nginx_static": nginx.url("static", MANIFEST),
            "pinserver_serve": serve_url + MANIFEST,
            "pinserver_serve_no_access_log": f"http://127.0.0.1:{serve_nolog_port}{MANIFEST}",
            "nginx_export": nginx.url("export", MANIFEST),
            "nginx_export_open_file_cache": nginx.url("export_cached", MANIFEST),
            "nginx_proxy_cache": nginx.url("cache", MANIFEST),
            "flask_reference": f"http://127.0.0.1:{flask_port}{MANIFEST}",
            "bare_wsgi_reference": f"http://127.0.0.1:{bare_port}{MANIFEST}",
        }
        # The processes whose CPU time a request to each target costs.
        nginx_pid = nginx.proc.pid if nginx.proc else 0
        pids = {
            **tuned_pids,
            "nginx_static": [nginx_pid],
            "pinserver_serve": [procs[0].pid],
            "pinserver_serve_no_access_log": [procs[1].pid],
            "nginx_export": [nginx_pid],
            "nginx_export_open_file_cache": [nginx_pid],
            "nginx_proxy_cache": [nginx_pid, procs[0].pid],
            "flask_reference": [procs[2].pid],
            "bare_wsgi_reference": [procs[3].pid],
        }
        if only is not None:
            urls = {k: v for k, v in urls.items() if k in only or k == BASELINE or k in tuned}
        etags = {name: _probe(url, served) for name, url in urls.items()}

        # Each target's run is paired with an nginx_static run just before it, same
        # status: the ratio of a pair is taken within a few seconds of machine state.
        samples: dict[str, dict[str, list[dict[str, Any]]]] = {"200": {}, "304": {}}
        pairs: dict[str, dict[str, list[float]]] = {"200": {}, "304": {}}
        cpu_pairs: dict[str, dict[str, list[float]]] = {"200": {}, "304": {}}
        others = [n for n in urls if n != BASELINE]

        def measure(name: str, status: str, seconds: int) -> dict[str, Any]:
            headers = {"If-None-Match": etags[name]} if status == "304" else {}
            cpu_before = tree_cpu_seconds(pids[name])
            result = run_wrk(urls[name], headers=headers, duration=seconds, connections=connections)
            cpu = tree_cpu_seconds(pids[name]) - cpu_before
            if result.non_2xx_3xx or result.errors:
                raise RuntimeError(f"{name} {status}: wrk saw errors {result}")
            return {**result.to_dict(), "cpu_us_per_request": cpu / result.requests * 1e6}

        for name in urls:  # warm every target up (caches, imports, connections)
            for status in ("200", "304"):
                measure(name, status, 1)
        for run_index in range(runs):
            shift = run_index % len(others)
            for name in others[shift:] + others[:shift]:
                for status in ("200", "304"):
                    base = measure(BASELINE, status, duration)
                    row = measure(name, status, duration)
                    samples[status].setdefault(BASELINE, []).append(base)
                    samples[status].setdefault(name, []).append(row)
                    pairs[status].setdefault(name, []).append(row["rps"] / base["rps"])
                    cpu_pairs[status].setdefault(name, []).append(
                        base["cpu_us_per_request"] / row["cpu_us_per_request"]
                    )
                    print(
                        f"run {run_index + 1} {name:<40} {status} {row['rps']:9.0f} req/s"
                        f"  (nginx static {base['rps']:9.0f}: {row['rps'] / base['rps']:.3f}x)",
                        flush=True,
                    )
    finally:
        if nginx is not None:
            nginx.stop()
        for proc in procs:
            stop_process(proc)

    in_process = in_process_costs(
        data, static / "v1" / "manifest.json", target_seconds=in_process_seconds
    )
    return {
        "runs": runs,
        "duration_s": duration,
        "in_process_us": in_process,
        "wrk": f"-t2 -c{connections} -d{duration}s --latency",
        "pinsets": pinsets,
        "manifest_bytes": len(served),
        "gunicorn": {"workers": _default_workers(), "threads": 4, "worker_class": "gthread"},
        "results": {
            status: _summarise(samples[status], pairs[status], cpu_pairs[status])
            for status in samples
        },
        "targets": {
            "production_layout_vs_nginx_static": ">= 0.9",
            "pinserver_serve_vs_nginx_static": ">= 0.12",
        },
    }


def _summarise(
    rows: dict[str, list[dict[str, Any]]],
    pairs: dict[str, list[float]],
    cpu_pairs: dict[str, list[float]],
) -> dict[str, Any]:
    out = {}
    for name, samples in rows.items():
        ratios = pairs.get(name, [1.0])
        cpu_ratios = cpu_pairs.get(name, [1.0])
        out[name] = {
            "cpu_us_per_request": round(median([s["cpu_us_per_request"] for s in samples]), 2),
            "cpu_ratio_to_nginx_static": round(median(cpu_ratios), 3),
            "rps": round(median([s["rps"] for s in samples]), 1),
            "p50_ms": round(median([s["p50_ms"] for s in samples]), 3),
            "p99_ms": round(median([s["p99_ms"] for s in samples]), 3),
            "ratio_to_nginx_static": round(median(ratios), 3),
            "ratio_runs": [round(r, 3) for r in ratios],
            "rps_runs": [s["rps"] for s in samples],
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--duration", type=int, default=2, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--pinsets", type=int, default=10)
    parser.add_argument(
        "--also-serve",
        default="",
        help="extra pinserver serve targets as WORKERS:THREADS,... (access log off)",
    )
    parser.add_argument(
        "--only", default="", help="measure only these targets (comma-separated; + nginx_static)"
    )
    parser.add_argument("--name", default="server_wrk", help="results file name")
    args = parser.parse_args()
    only = frozenset(args.only.split(",")) if args.only else None
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
            only=only,
        )
    for status in ("200", "304"):
        print(status)
        for name, row in results["results"][status].items():
            print(
                f"  {name:<32} {row['rps']:>10.0f} req/s  p50 {row['p50_ms']:7.3f} ms"
                f"  p99 {row['p99_ms']:7.3f} ms  {row['ratio_to_nginx_static']:.3f}x"
            )
    write_results(args.name, results)


if __name__ == "__main__":
    main()
