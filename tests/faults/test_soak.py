"""A bounded soak on loopback: pollers, real clients, report senders and competing
publishers at once against gunicorn. Afterwards every published version is served
and the chain verifies end to end, and no request got a 5xx or lost its connection.

    PINSERVER_SOAK_SECONDS=60 PINSERVER_SOAK_REPORT=docs/reliability.md \\
        pytest tests/faults/test_soak.py -s

writes the figures (requests, errors, latency percentiles) to docs/reliability.md;
the normal run soaks for 20 s and only prints them.
"""

from __future__ import annotations

import json
import os
import platform
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest
import requests

from pinserver.client import PinClient
from pinserver.envelope import Envelope
from pinserver.errors import PinserverError
from tests.factory import Deployment, fake_pin, manifest_document, manifest_envelope, pinset
from tests.faults.conftest import JSON, record, verify_served, window
from tests.support.gunicorn import init_store, running_server

SOAK_SECONDS = float(os.environ.get("PINSERVER_SOAK_SECONDS") or 20)
REPORT_FILE = os.environ.get("PINSERVER_SOAK_REPORT")
POLLERS, CLIENTS, REPORTERS, PUBLISHERS = 4, 2, 2, 3
WORKERS = 2


@dataclass
class Tally:
    """What one kind of actor saw: status counts, failures and latencies."""

    statuses: Counter[int] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def timed(self, send: Callable[[], requests.Response]) -> requests.Response | None:
        start = time.perf_counter()
        try:
            response = send()
        except requests.RequestException as e:
            with self.lock:
                self.failures.append(f"{type(e).__name__}: {e}")
            return None
        elapsed = time.perf_counter() - start
        with self.lock:
            self.statuses[response.status_code] += 1
            self.latencies.append(elapsed)
        return response

    @property
    def requests(self) -> int:
        return sum(self.statuses.values()) + len(self.failures)

    @property
    def server_errors(self) -> int:
        return sum(n for status, n in self.statuses.items() if status >= 500)

    def percentile(self, p: float) -> float:
        ordered = sorted(self.latencies)
        if not ordered:
            return 0.0
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] * 1000


@dataclass
class Soak:
    url: str
    deployment: Deployment
    stop: threading.Event = field(default_factory=threading.Event)
    tallies: dict[str, Tally] = field(default_factory=dict)
    acknowledged: dict[int, bytes] = field(default_factory=dict)
    refreshes: Counter[str] = field(default_factory=Counter)
    client_errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def tally(self, kind: str) -> Tally:
        with self.lock:
            return self.tallies.setdefault(kind, Tally())

    def poller(self) -> None:
        """The one request of a poll: a conditional GET of the latest manifest."""
        tally = self.tally("poll (conditional GET)")
        session = requests.Session()
        etag = None
        while not self.stop.is_set():
            headers: dict[str, str] = {"If-None-Match": etag} if etag else {}
            response = tally.timed(
                lambda headers=headers: session.get(  # type: ignore[misc]
                    self.url + "/v1/manifest.json", headers=headers, timeout=30
                )
            )
            if response is not None and response.status_code == 200:
                etag = response.headers["ETag"]
        session.close()

    def client(self, state_dir: Path) -> None:
        """A real PinClient refreshing as fast as it can (verifying, swapping)."""
        with PinClient(self.url, trusted_root=self.deployment.roots[0], state_dir=state_dir) as c:
            while not self.stop.is_set():
                try:
                    result = c.refresh()
                except PinserverError as e:
                    with self.lock:
                        self.client_errors.append(f"{type(e).__name__}: {e}")
                    continue
                with self.lock:
                    self.refreshes["updated" if result.updated else "unchanged"] += 1

    def reporter(self, number: int) -> None:
        tally = self.tally("report (POST /v1/reports)")
        session = requests.Session()
        sent = 0
        while not self.stop.is_set():
            sent += 1
            body = json.dumps(
                {
                    "host": "api.example.com",
                    "port": 443,
                    "observed": [fake_pin(f"{number}-{sent}")],
                    "manifest_version": None,
                    "mode": "enforce",
                    "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                }
            )
            tally.timed(
                lambda body=body: session.post(
                    self.url + "/v1/reports", data=body, headers=JSON, timeout=30
                )
            )
        session.close()

    def publisher(self, number: int) -> None:
        """Competing publishers: read the latest, sign the next, race for it."""
        tally = self.tally("publish (POST /v1/manifests)")
        session = requests.Session()
        while not self.stop.is_set():
            latest = session.get(self.url + "/v1/manifest.json", timeout=30)
            if latest.status_code == 200:
                current = Envelope.from_bytes(latest.content)
                version = int(latest.headers["X-Pinserver-Manifest-Version"]) + 1
                previous: str | None = current.payload_sha256
            else:
                version, previous = 1, None
            body = manifest_envelope(
                manifest_document(
                    version,
                    previous=previous,
                    pinsets=[pinset("api.example.com", [fake_pin(f"{number}-{version}")])],
                    **window(),
                ),
                self.deployment.publisher_keys,
            )
            response = tally.timed(
                lambda body=body: session.post(
                    self.url + "/v1/manifests", data=body, headers=JSON, timeout=30
                )
            )
            if response is not None and response.status_code == 201:
                with self.lock:
                    assert version not in self.acknowledged
                    self.acknowledged[version] = body
        session.close()


def test_soak(fast_dir: Path, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    deployment = Deployment()
    deployment.publish(**window())  # polls find a manifest from the first request on
    init_store(fast_dir / "data", deployment, publish=True)
    env = {
        "PINSERVER_ACCESS_LOG": "off",
        "PINSERVER_REPORT_BURST": "1000000",
        "PINSERVER_REPORT_PER_HOUR": "1000000000",
    }
    with running_server(fast_dir / "data", workers=WORKERS, env=env) as url:
        soak = Soak(url, deployment, acknowledged={1: deployment.manifests[0]})
        actors = [threading.Thread(target=soak.poller) for _ in range(POLLERS)]
        actors += [
            threading.Thread(target=soak.client, args=(tmp_path / f"client-{i}",))
            for i in range(CLIENTS)
        ]
        actors += [threading.Thread(target=soak.reporter, args=(i,)) for i in range(REPORTERS)]
        actors += [threading.Thread(target=soak.publisher, args=(i,)) for i in range(PUBLISHERS)]
        started = time.monotonic()
        for actor in actors:
            actor.start()
        soak.stop.wait(SOAK_SECONDS)
        soak.stop.set()
        for actor in actors:
            actor.join(60)
        elapsed = time.monotonic() - started

        latest = verify_served(url, deployment, soak.acknowledged)
        for i in range(CLIENTS):
            with PinClient(
                url, trusted_root=deployment.roots[0], state_dir=tmp_path / f"client-{i}"
            ) as c:
                c.refresh()
                assert c.manifest_version == latest

    figures = _figures(soak, elapsed, latest)
    print("\n" + figures)
    for kind, tally in sorted(soak.tallies.items()):
        record(
            request,
            f"fault:soak {kind}",
            f"{tally.requests} requests, "
            f"{tally.server_errors} 5xx, {len(tally.failures)} failed, "
            f"p99 {tally.percentile(99):.1f} ms",
        )
    if REPORT_FILE:
        Path(REPORT_FILE).write_text(figures)

    assert set(soak.acknowledged) == set(range(1, latest + 1))
    assert soak.client_errors == []
    for kind, tally in soak.tallies.items():
        assert tally.server_errors == 0, (kind, tally.statuses)
        assert tally.failures == [], (kind, tally.failures[:3])
    assert soak.tally("report (POST /v1/reports)").statuses[202] > 0
    assert soak.tally("publish (POST /v1/manifests)").statuses[409] > 0  # they did race


def _figures(soak: Soak, elapsed: float, latest: int) -> str:
    rows = [
        "| traffic | requests | per second | statuses | 5xx | connection failures | p50 ms "
        "| p99 ms | max ms |",
        "|---|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    for kind, tally in sorted(soak.tallies.items()):
        statuses = ", ".join(f"{s}: {n}" for s, n in sorted(tally.statuses.items()))
        rows.append(
            f"| {kind} | {tally.requests} | {tally.requests / elapsed:.0f} | {statuses} "
            f"| {tally.server_errors} | {len(tally.failures)} | {tally.percentile(50):.1f} "
            f"| {tally.percentile(99):.1f} | {max(tally.latencies, default=0) * 1000:.1f} |"
        )
    return "\n".join(
        [
            f"Soak of {elapsed:.0f} s on 127.0.0.1 ({platform.machine()}, {os.cpu_count()} cores,"
            f" Python {platform.python_version()}): gunicorn with {WORKERS} gthread workers"
            f" on SQLite; {POLLERS} pollers, {CLIENTS} PinClients, {REPORTERS} report senders"
            f" and {PUBLISHERS} competing publishers, all in one test process.",
            "",
            *rows,
            "",
            f"PinClient refreshes: {soak.refreshes['updated']} updated,"
            f" {soak.refreshes['unchanged']} unchanged, {len(soak.client_errors)} errors.",
            f"Published and verified end to end afterwards: {latest} manifest versions"
            f" (every 201 served byte for byte; every 409 was a lost race).",
            "",
        ]
    )
