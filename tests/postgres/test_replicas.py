"""Two gunicorn replicas on different ports sharing one PostgreSQL database.

Publishers race on both replicas at once: the database lets exactly one of them win
each version (201) and every other gets 409. Then every poll on either replica serves
the winner once the documented staleness bound has passed since the 201 (see
docs/scaling.md): the replicas are run as that document recommends for PostgreSQL
(``PINSERVER_HEAD_CHECK=0``: each poll consults the store's notification-driven head).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests

from pinserver.store.postgres import DEFAULT_HEAD_TTL, PostgresStore
from pinserver.trust import verify_anchor_root
from tests.factory import Deployment
from tests.support.gunicorn import running_server
from tests.support.postgres import PostgresServer

PUBLISHERS_PER_REPLICA = 3
VERSIONS = 3
# The documented worst case for a replica to serve a publication made on another one,
# even if no notification ever arrived: the store's head TTL (the server's own cache
# interval is 0 here). With notifications it is milliseconds; that is measured in
# bench/replica_staleness.py, not asserted here.
STALENESS_BOUND_S = DEFAULT_HEAD_TTL
POLLS_PER_REPLICA = 12  # each on a new connection, so they spread over the workers


@dataclass
class Replicas:
    database_url: str
    deployment: Deployment
    urls: list[str]


def replica_env(database_url: str) -> dict[str, str]:
    return {"PINSERVER_DATABASE_URL": database_url, "PINSERVER_HEAD_CHECK": "0"}


@pytest.fixture
def replicas(postgres_server: PostgresServer, tmp_path: Path) -> Iterator[Replicas]:
    url = postgres_server.create_database("replicas")
    deployment = Deployment()
    store = PostgresStore(url)
    try:
        now = datetime.now(UTC).replace(microsecond=0)
        store.install_first_root(verify_anchor_root(deployment.roots[0]), now=now)
    finally:
        store.close()
    with (
        running_server(tmp_path / "replica-a", workers=2, env=replica_env(url)) as a,
        running_server(tmp_path / "replica-b", workers=2, env=replica_env(url)) as b,
    ):
        yield Replicas(url, deployment, [a, b])


def poll(base_url: str) -> requests.Response:
    """One client poll on a fresh connection (so gunicorn may hand it to any worker)."""
    response = requests.get(
        base_url + "/v1/manifest.json", timeout=10, headers={"Connection": "close"}
    )
    assert response.status_code == 200, response.text
    return response


def race(urls: list[str], candidates: list[bytes]) -> dict[int, int]:
    """POST every candidate at the same moment, alternating replicas; index -> status."""
    start = threading.Barrier(len(candidates))
    statuses: dict[int, int] = {}

    def publish(i: int) -> None:
        start.wait(10)
        response = requests.post(
            urls[i % len(urls)] + "/v1/manifests",
            data=candidates[i],
            headers={"Content-Type": "application/json"},
            timeout=30,
        )
        statuses[i] = response.status_code

    threads = [threading.Thread(target=publish, args=(i,)) for i in range(len(candidates))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return statuses


def test_racing_publishes_on_two_replicas_get_one_winner_each_version(
    replicas: Replicas, tmp_path: Path
) -> None:
    deployment, urls = replicas.deployment, replicas.urls
    for version in range(1, VERSIONS + 1):
        now = datetime.now(UTC).replace(microsecond=0)
        # Different signed manifests for the same version, half sent to each replica.
        candidates = [
            deployment.next_manifest(
                issued_at=now - timedelta(minutes=5),
                expires=now + timedelta(days=7),
                poll_interval=600 + i,
            )
            for i in range(PUBLISHERS_PER_REPLICA * len(urls))
        ]
        statuses = race(urls, candidates)
        answered = time.monotonic()  # every commit happened before its 201 was sent

        assert sorted(statuses.values()) == [201] + [409] * (len(candidates) - 1), statuses
        winner = candidates[next(i for i, s in statuses.items() if s == 201)]
        deployment.manifests.append(winner)

        # Wait out the bound (a real TTL, not a simulated clock), then every poll on
        # either replica, whichever worker answers it, must serve the winner.
        time.sleep(max(0.0, answered + STALENESS_BOUND_S - time.monotonic()))
        for url in urls:
            for _ in range(POLLS_PER_REPLICA):
                response = poll(url)
                assert response.headers["X-Pinserver-Manifest-Version"] == str(version)
                assert response.content == winner

    # Both replicas serve the same history, byte for byte.
    for url in urls:
        for version, envelope in enumerate(deployment.manifests, start=1):
            response = requests.get(f"{url}/v1/manifests/{version}.json", timeout=10)
            assert response.status_code == 200
            assert response.content == envelope

    # Replicas keep no state of their own: one started now serves the latest at once.
    with running_server(
        tmp_path / "replica-c", workers=1, env=replica_env(replicas.database_url)
    ) as late:
        assert poll(late).content == deployment.manifests[-1]
