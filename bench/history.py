"""Long histories: auditor verification, history pages, publish latency and memory.

One SQLite store is grown by publishing (bench/make_store.py: every version through
the server's acceptance, one transaction each) and measured at 10,000 and again at
100,000 stored versions:

* auditor verification of the whole chain, time per version: the pure core
  (``verify_manifest_signatures`` + ``verify_history_entry`` for every version, read
  in pages of 1,000), and ``pinserver history`` over HTTP when the CLI has it;
* history page latency through ``pinserver serve``: ``GET /v1/history`` (first,
  middle and last page of 100) and the audit timeline pages, median of several
  requests; these must not grow with the store;
* publish latency, signing excluded: ``SQLiteStore.publish_manifest`` with the
  server's verification (during the fill, at several store sizes) and
  ``POST /v1/manifests`` through ``pinserver serve``;
* memory, once the largest manifest the cap admits (10,000 hosts do not fit 1 MiB)
  is published on top of the 100,000 versions: peak RSS (VmHWM) of every gunicorn
  worker after wrk has spread polls and history pages over them, and of a client
  process that fetched, verified and holds that manifest; against the same on a
  one-version store with a ten-host manifest.

    python -m bench.history [--sizes 10000,100000] [--keep DIR]

The 100,000-version fill takes a few minutes (about 1.5 ms a version here).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import requests

from bench import _documents
from bench._common import (
    children_of,
    free_port,
    median,
    peak_rss_kib,
    run_wrk,
    stop_process,
    temp_dir,
    write_results,
)
from bench.make_store import ROOT_FILE, Publisher, fill
from bench.server_wrk import PINSERVER, start_serve
from pinserver.keys import PrivateKey
from pinserver.store.sqlite import SQLiteStore
from pinserver.trust import (
    ManifestFloor,
    verify_anchor_root,
    verify_history_entry,
    verify_manifest_signatures,
)

PAGE_REQUESTS = 15
HTTP_PUBLISHES = 10


def audit_core(data_dir: Path) -> dict[str, Any]:
    """Verify every stored version against root 1 and the hash chain, as an auditor does."""
    store = SQLiteStore(data_dir, create=False)
    root = verify_anchor_root((data_dir / ROOT_FILE).read_bytes()).root
    start = time.perf_counter()
    previous: ManifestFloor | None = None
    after = count = 0
    try:
        while batch := store.manifests_after(after, 1000):
            for stored in batch:
                verified = verify_manifest_signatures(root, stored.envelope)
                verify_history_entry(verified, version=stored.version, previous=previous)
                previous = ManifestFloor(stored.version, verified.payload_sha256)
                count += 1
            after = batch[-1].version
    finally:
        store.close()
    seconds = time.perf_counter() - start
    return {
        "versions": count,
        "seconds": round(seconds, 2),
        "us_per_version": round(seconds / count * 1e6, 1),
    }


def audit_cli(base_url: str, data_dir: Path) -> dict[str, Any] | None:
    """``pinserver history`` over HTTP, end to end, when the CLI provides it."""
    help_text = subprocess.run(
        [PINSERVER, "history", "--help"], capture_output=True, text=True, check=False
    )
    if help_text.returncode != 0:
        return {"skipped": "this pinserver has no `history` command"}
    start = time.perf_counter()
    out = subprocess.run(
        [PINSERVER, "history", "--server", base_url, "--root", str(data_dir / ROOT_FILE)],
        capture_output=True,
        text=True,
        check=False,
        timeout=3600,
    )
    seconds = time.perf_counter() - start
    return {
        "exit_code": out.returncode,
        "seconds": round(seconds, 2),
        "stderr_tail": out.stderr.strip().splitlines()[-3:],
    }


def _latency(url: str, *, requests_count: int = PAGE_REQUESTS, timeout: float = 120) -> float:
    """Median milliseconds of ``requests_count`` GETs (one warm-up GET first)."""
    session = requests.Session()
    r = session.get(url, timeout=timeout)
    if r.status_code != 200:
        raise RuntimeError(f"GET {url} answered {r.status_code}: {r.text[:200]}")
    samples = []
    for _ in range(requests_count):
        start = time.perf_counter()
        r = session.get(url, timeout=timeout)
        samples.append(time.perf_counter() - start)
        if r.status_code != 200:
            raise RuntimeError(f"GET {url} answered {r.status_code}")
    session.close()
    return round(median(samples) * 1000, 3)


def pages(base_url: str, latest: int) -> dict[str, float]:
    middle = max(1, latest // 2)
    return {
        "history_first_page_ms": _latency(f"{base_url}/v1/history?after=0&limit=100"),
        "history_middle_page_ms": _latency(f"{base_url}/v1/history?after={middle}&limit=100"),
        "history_last_page_ms": _latency(
            f"{base_url}/v1/history?after={max(0, latest - 100)}&limit=100"
        ),
        "audit_timeline_latest_ms": _latency(f"{base_url}/audit/"),
        "audit_timeline_middle_ms": _latency(f"{base_url}/audit/?before={middle + 1}"),
        "audit_manifest_middle_ms": _latency(f"{base_url}/audit/manifests/{middle}"),
        "manifest_poll_ms": _latency(f"{base_url}/v1/manifest.json"),
    }


def host_page(base_url: str) -> dict[str, Any]:
    """``/audit/hosts/HOST`` scans every version by design: one timed request."""
    start = time.perf_counter()
    try:
        r = requests.get(f"{base_url}/audit/hosts/host0.example.com", timeout=300)
        status: int | str = r.status_code
    except requests.RequestException as e:
        status = f"{type(e).__name__}"
    return {"status": status, "seconds": round(time.perf_counter() - start, 2)}


def http_publish(base_url: str, data_dir: Path) -> float:
    """Median ms of ``POST /v1/manifests`` (signed beforehand) through pinserver serve."""
    publisher = Publisher(data_dir)
    samples = []
    try:
        for _ in range(HTTP_PUBLISHES):
            data = publisher.sign_next()
            start = time.perf_counter()
            r = requests.post(
                f"{base_url}/v1/manifests",
                data=data,
                headers={"Content-Type": "application/json"},
                timeout=60,
            )
            samples.append(time.perf_counter() - start)
            if r.status_code != 201:
                raise RuntimeError(f"publish answered {r.status_code}: {r.text}")
            publisher.version += 1
            publisher.previous = r.json()["payload_sha256"]
    finally:
        publisher.close()
    return round(median(samples) * 1000, 3)


def worker_memory(proc: subprocess.Popen[bytes], base_url: str, latest: int) -> dict[str, Any]:
    """Peak RSS of every worker after wrk has spread polls and history pages over all."""
    for path in ("/v1/manifest.json", f"/v1/history?after={max(0, latest - 100)}&limit=100"):
        run_wrk(base_url + path, threads=2, connections=16, duration=2)
    workers = children_of(proc.pid)
    peaks = [peak_rss_kib(pid) for pid in workers]
    return {"workers": len(workers), "max_vmhwm_mib": round(max(peaks) / 1024, 1), "all_kib": peaks}


# VmHWM, not getrusage: ru_maxrss survives fork+exec, so a child of a big parent
# would report the parent's peak.
_CLIENT_SCRIPT = """
import json, sys
from pinserver.client import PinClient
client = PinClient(sys.argv[1], open(sys.argv[2], "rb").read(), sys.argv[3])
result = client.refresh()
hosts = len(client.manifest.pinsets)
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM:")][0].split()[1]
print(json.dumps({"hosts": hosts, "updated": result.updated, "maxrss_kib": int(hwm)}))
"""


def client_memory(base_url: str, root_file: Path, state_dir: Path) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-c", _CLIENT_SCRIPT, base_url, str(root_file), str(state_dir)],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    row = json.loads(out.stdout.strip().splitlines()[-1])
    row["maxrss_mib"] = round(row.pop("maxrss_kib") / 1024, 1)
    return row


def measure_served(data_dir: Path, work: Path, *, latest: int) -> dict[str, Any]:
    """Pages, the host scan, ``pinserver history`` and HTTP publish against a store."""
    port = free_port()
    proc = start_serve(data_dir, port, work / f"serve-{latest}.log", PINSERVER_ACCESS_LOG="off")
    base_url = f"http://127.0.0.1:{port}"
    try:
        return {
            "pages": pages(base_url, latest),
            "host_page": host_page(base_url),
            "audit_cli": audit_cli(base_url, data_dir),
            "http_publish_ms": http_publish(base_url, data_dir),
        }
    finally:
        stop_process(proc)


def measure_memory(data_dir: Path, work: Path, name: str) -> dict[str, Any]:
    """Peak RSS of the workers after polls and history pages, and of a client process
    that fetched, verified and holds the latest manifest."""
    port = free_port()
    proc = start_serve(data_dir, port, work / f"serve-{name}.log", PINSERVER_ACCESS_LOG="off")
    base_url = f"http://127.0.0.1:{port}"
    try:
        latest = requests.get(f"{base_url}/healthz", timeout=30).json()["manifest_version"]
        return {
            "latest_version": latest,
            "gunicorn_worker_memory": worker_memory(proc, base_url, latest),
            "client_memory": client_memory(base_url, data_dir / ROOT_FILE, work / f"client-{name}"),
        }
    finally:
        stop_process(proc)


def run(sizes: list[int], data_dir: Path, work: Path) -> dict[str, Any]:
    largest = _documents.largest_fitting([PrivateKey.generate()])
    results: dict[str, Any] = {"largest_fitting_pinsets": largest, "sizes": {}}
    publish_timings: dict[str, float] = {}
    checkpoints = (0, 1_000, 10_000, 50_000, 99_000)
    for size in sorted(sizes):
        print(f"filling the store to {size} versions", flush=True)
        filled = fill(data_dir, size, checkpoints=tuple(c for c in checkpoints if c < size - 100))
        publish_timings.update(filled["publish_ms_at_stored_versions"])
        print(f"auditing {size} versions", flush=True)
        row: dict[str, Any] = {
            "fill_seconds": filled["seconds"],
            "audit_core": audit_core(data_dir),
            **measure_served(data_dir, work, latest=size),
        }
        results["sizes"][str(size)] = row
        print(json.dumps(row, indent=1), flush=True)
    results["store_publish_ms_at_stored_versions"] = publish_timings

    # Memory: the largest manifest the cap admits becomes the latest version.
    publisher = Publisher(data_dir)
    publisher.publish(publisher.sign_next(largest))
    publisher.close()
    results["memory_large"] = measure_memory(data_dir, work, "large")
    small = work / "small"
    publisher = Publisher(small)
    publisher.publish(publisher.sign_next(10))
    publisher.close()
    results["memory_small"] = measure_memory(small, work, "small")
    print(json.dumps({k: results[k] for k in ("memory_large", "memory_small")}, indent=1))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument(
        "--keep", type=Path, default=None, help="grow (or reuse) the store in this directory"
    )
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    with temp_dir("bench-history-") as work:
        data_dir = args.keep or work / "store"
        results = run(sizes, data_dir, work)
    write_results("history", results)


if __name__ == "__main__":
    main()
