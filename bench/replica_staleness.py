"""How stale can a replica be? Publication on one replica, polls on another.

Against a throwaway PostgreSQL (initdb/pg_ctl, as the tests start it) this measures:

* ``notify``: store level. Replica A's store commits a manifest; replica B's store calls
  ``head()`` in a tight loop until it reports the new version. The lag is the
  LISTEN/NOTIFY delivery (B's ``head_ttl`` is an hour, so only the notification can
  tell it);
* ``head_cost``: what a poll pays to ask whether anything changed: ``head()`` of the
  PostgreSQL store when nothing did (no database round trip) next to the SQLite
  store's (one query), in microseconds per call;
* ``replicas_check_0`` / ``replicas_check_1s``: two gunicorn replicas (2 workers each)
  sharing the database, with ``PINSERVER_HEAD_CHECK=0`` (each poll consults the store's
  head) and with the default 1 s cache interval. A manifest is published on A; from the
  moment its 201 arrives, B is polled on new connections until one poll serves it.

    python -m bench.replica_staleness [--samples 30]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import requests

from bench._common import calibrate, time_per_call, write_results
from pinserver.store.base import StoredManifest, StoredRoot
from pinserver.store.postgres import PostgresStore
from pinserver.store.sqlite import SQLiteStore
from pinserver.trust import ManifestFloor, VerifiedManifest, verify_anchor_root, verify_publication
from tests.factory import Deployment
from tests.support.gunicorn import running_server
from tests.support.postgres import PostgresServer, running_postgres


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def _next(deployment: Deployment) -> bytes:
    now = _now()
    return deployment.publish(issued_at=now - timedelta(minutes=5), expires=now + timedelta(days=7))


def _verifier(data: bytes) -> Callable[[StoredRoot, StoredManifest | None], VerifiedManifest]:
    def verify(root: StoredRoot, latest: StoredManifest | None) -> VerifiedManifest:
        floor = ManifestFloor(latest.version, latest.payload_sha256) if latest else None
        trusted = verify_anchor_root(root.envelope).root
        return verify_publication(trusted, data, latest=floor, reference_time=_now())

    return verify


def _stats_ms(lags: list[float]) -> dict[str, Any]:
    ordered = sorted(lags)
    return {
        "samples": len(ordered),
        "median_ms": round(statistics.median(ordered) * 1000, 3),
        "p90_ms": round(ordered[int(0.9 * (len(ordered) - 1))] * 1000, 3),
        "max_ms": round(ordered[-1] * 1000, 3),
    }


def measure_notify(server: PostgresServer, samples: int) -> dict[str, Any]:
    url = server.create_database("bench_notify")
    writer, reader = PostgresStore(url), PostgresStore(url, head_ttl=3600.0)
    try:
        deployment = Deployment()
        writer.install_first_root(verify_anchor_root(deployment.roots[0]), now=_now())
        reader.head()
        lags = []
        for version in range(1, samples + 1):
            writer.publish_manifest(_verifier(_next(deployment)), now=_now())
            committed = time.perf_counter()
            while reader.head().manifest_version != version:
                pass
            lags.append(time.perf_counter() - committed)
        return _stats_ms(lags)
    finally:
        writer.close()
        reader.close()


def measure_head_cost(server: PostgresServer) -> dict[str, float]:
    url = server.create_database("bench_head")
    postgres = PostgresStore(url)
    with tempfile.TemporaryDirectory() as tmp:
        sqlite = SQLiteStore(Path(tmp))
        try:
            result = {}
            for name, store in (("postgres", postgres), ("sqlite", sqlite)):
                store.head()
                number = calibrate(store.head)
                runs = [time_per_call(store.head, number=number) for _ in range(5)]
                result[f"{name}_us"] = round(statistics.median(runs) * 1e6, 2)
            return result
        finally:
            sqlite.close()
            postgres.close()


def measure_replicas(server: PostgresServer, samples: int, head_check: str) -> dict[str, Any]:
    url = server.create_database("bench_replicas")
    deployment = Deployment()
    store = PostgresStore(url)
    try:
        store.install_first_root(verify_anchor_root(deployment.roots[0]), now=_now())
    finally:
        store.close()
    env = {"PINSERVER_DATABASE_URL": url, "PINSERVER_HEAD_CHECK": head_check}
    with (
        tempfile.TemporaryDirectory() as tmp,
        running_server(Path(tmp) / "a", workers=2, env=env) as a,
        running_server(Path(tmp) / "b", workers=2, env=env) as b,
    ):
        lags = []
        for version in range(1, samples + 1):
            response = requests.post(
                a + "/v1/manifests",
                data=_next(deployment),
                headers={"Content-Type": "application/json"},
                timeout=30,
            )
            assert response.status_code == 201, response.text
            answered = time.perf_counter()
            while True:
                poll = requests.get(
                    b + "/v1/manifest.json", headers={"Connection": "close"}, timeout=10
                )
                if poll.headers.get("X-Pinserver-Manifest-Version") == str(version):
                    break
            lags.append(time.perf_counter() - answered)
        return _stats_ms(lags)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=30)
    args = parser.parse_args()
    with running_postgres() as server:
        results = {
            "notify": measure_notify(server, args.samples),
            "head_cost": measure_head_cost(server),
            "replicas_check_0": measure_replicas(server, args.samples, "0"),
            "replicas_check_1s": measure_replicas(server, max(10, args.samples // 3), "1"),
        }
    for name, value in results.items():
        print(f"{name}: {value}")
    write_results("replica_staleness", results)


if __name__ == "__main__":
    main()
