"""Against a real gunicorn with two workers on 127.0.0.1: the must-shows of the service,
each on both store backends (``service``: SQLite in the data directory, or a fresh
PostgreSQL database on the session's throwaway server).

Deadlines below are upper bounds for waiting on another process, never speed claims.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Callable
from datetime import timedelta

import pytest
import requests

from pinserver.documents import Root
from pinserver.envelope import Envelope
from pinserver.trust import (
    ManifestFloor,
    accept_manifest,
    verify_anchor_root,
    verify_next_root,
    verify_publication,
)
from tests.factory import Deployment
from tests.server.conftest import JSON, Service, next_manifest, now, publish

DEADLINE = 10.0


def wait_for(check: Callable[[], bool], what: str, deadline: float = DEADLINE) -> None:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if check():
            return
        time.sleep(0.02)
    raise AssertionError(f"not within {deadline} s: {what}")


def fresh_get(url: str, **kwargs: object) -> requests.Response:
    """A new connection per request, so that requests spread over the workers."""
    return requests.get(
        url, headers={"Connection": "close", **kwargs.pop("headers", {})}, timeout=30, **kwargs
    )  # type: ignore[arg-type]


def post(url: str, body: bytes, **headers: str) -> requests.Response:
    return requests.post(
        url, data=body, headers={**JSON, "Connection": "close", **headers}, timeout=30
    )


def verify_chain(service: Service, d: Deployment) -> list[int]:
    """The stored history, re-verified from root 1 with the client's own rules."""
    store = service.open_store()
    try:
        store.check_integrity()
        roots = [verify_anchor_root(store.get_root(1).envelope)]  # type: ignore[union-attr]
        for stored in store.roots()[1:]:
            roots.append(verify_next_root(roots[-1].root, stored.envelope))
        floor = None
        versions = []
        for m in store.manifests_after(0, 10_000):
            root = roots[m.root_version - 1].root
            accepted = accept_manifest(root, m.envelope, floor=floor, reference_time=now())
            floor = ManifestFloor(accepted.version, accepted.payload_sha256)
            versions.append(m.version)
        return versions
    finally:
        store.close()


def pids_serving(log: str, path: str, status: int = 200) -> set[int]:
    pids = set()
    for line in log.splitlines():
        if line.startswith("{"):
            record = json.loads(line)
            if record["path"] == path and record["status"] == status:
                pids.add(record["pid"])
    return pids


def test_publish_is_served_by_every_worker_at_once(
    service: Service, deployment: Deployment
) -> None:
    # Polls are logged only on request; the log is how this test sees which worker served.
    with service.running(workers=2, env={"PINSERVER_ACCESS_LOG_POLLS": "1"}) as server:
        url = server.base_url
        first = fresh_get(url + "/v1/manifest.json")
        assert first.content == deployment.manifests[0]
        body = publish(deployment)
        created = post(url + "/v1/manifests", body)
        assert created.status_code == 201, created.text
        assert created.json()["version"] == 2
        # Visible on the very next request to any worker (the generation file; with
        # PostgreSQL also the NOTIFY, which is what other replicas go by).
        seen_by: set[int] = set()
        end = time.monotonic() + DEADLINE
        while len(seen_by) < 2 and time.monotonic() < end:
            response = fresh_get(url + "/v1/manifest.json")
            assert response.content == body
            assert response.headers["X-Pinserver-Manifest-Version"] == "2"
            seen_by = pids_serving(server.log(), "/v1/manifest.json")
        assert len(seen_by) >= 2, "both workers should have served the poll"


def test_etag_and_304(service: Service, deployment: Deployment) -> None:
    with service.running() as server:
        url = server.base_url
        first = fresh_get(url + "/v1/manifest.json")
        etag = first.headers["ETag"]
        assert etag.startswith('"')
        assert not etag.startswith("W/")
        assert "max-age" in first.headers["Cache-Control"]
        for header in (etag, f"W/{etag}", f'"other", {etag}', "*"):
            again = fresh_get(url + "/v1/manifest.json", headers={"If-None-Match": header})
            assert again.status_code == 304
            assert again.content == b""
            assert again.headers["ETag"] == etag
        assert (
            fresh_get(url + "/v1/manifest.json", headers={"If-None-Match": '"stale"'}).status_code
            == 200
        )
        head = requests.head(url + "/v1/manifest.json", headers={"Connection": "close"}, timeout=30)
        assert head.status_code == 200
        assert int(head.headers["Content-Length"]) == len(first.content)
        assert post(url + "/v1/manifests", publish(deployment)).status_code == 201
        changed = fresh_get(url + "/v1/manifest.json", headers={"If-None-Match": etag})
        assert changed.status_code == 200
        assert changed.headers["ETag"] != etag


def access_log(server_log: str) -> list[tuple[str, str, int]]:
    """(method, path, status) of every access log line, in order."""
    records = [json.loads(line) for line in server_log.splitlines() if line.startswith("{")]
    return [(r["method"], r["path"], r["status"]) for r in records]


def test_the_access_log_skips_successful_polls_only(
    empty_service: Service, deployment: Deployment
) -> None:
    """By default a poll answered 200 or 304 leaves no log line (the metrics count it);
    a failed poll, a publication and every other request do."""
    empty_service.init(deployment)  # root 1, no manifest yet: the poll path answers 404
    with empty_service.running(workers=1) as server:
        url = server.base_url
        manifest = url + "/v1/manifest.json"
        assert fresh_get(manifest).status_code == 404
        assert post(url + "/v1/manifests", publish(deployment)).status_code == 201
        etag = fresh_get(manifest).headers["ETag"]
        assert fresh_get(manifest, headers={"If-None-Match": etag}).status_code == 304
        assert requests.head(manifest, headers={"Connection": "close"}, timeout=30).ok
        assert fresh_get(manifest + "?cache-buster=1").status_code == 200
        assert fresh_get(url + "/v1/manifests/1.json").status_code == 200
        assert fresh_get(url + "/v1/roots/9.json").status_code == 404
        deleted = requests.delete(manifest, headers={"Connection": "close"}, timeout=30)
        assert deleted.status_code == 405
        metrics = fresh_get(url + "/metrics").text
        wait_for(lambda: ("GET", "/metrics", 200) in access_log(server.log()), "the last log line")
        logged = access_log(server.log())
    assert 'pinserver_polls_total{status="200"} 3' in metrics
    assert 'pinserver_polls_total{status="304"} 1' in metrics
    assert [line for line in logged if line[1] != "/healthz"] == [
        ("GET", "/v1/manifest.json", 404),
        ("POST", "/v1/manifests", 201),
        ("GET", "/v1/manifests/1.json", 200),
        ("GET", "/v1/roots/9.json", 404),
        ("DELETE", "/v1/manifest.json", 405),
        ("GET", "/metrics", 200),
    ]


def test_a_commit_without_the_generation_file_shows_within_the_bound(
    service: Service, deployment: Deployment
) -> None:
    """As if the publishing worker died between commit and notice, or another replica
    published: the head check (SQLite: every 1 s; PostgreSQL: the NOTIFY, else the
    store's 1 s head TTL) still brings every worker up to date."""
    with service.running() as server:
        url = server.base_url
        assert fresh_get(url + "/v1/manifest.json").content == deployment.manifests[0]
        body = publish(deployment)
        store = service.open_store()
        try:
            store.publish_manifest(
                lambda root, latest: verify_publication(
                    Root.from_bytes(Envelope.from_bytes(root.envelope).payload),
                    body,
                    latest=ManifestFloor(latest.version, latest.payload_sha256) if latest else None,
                    reference_time=now(),
                ),
                now=now(),
            )
        finally:
            store.close()
        wait_for(
            lambda: all(fresh_get(url + "/v1/manifest.json").content == body for _ in range(4)),
            "a direct commit reaches every worker",
            deadline=1.0 + 4.0,  # the documented bound plus generous scheduling slack
        )


def test_history_paging(service: Service, deployment: Deployment) -> None:
    with service.running() as server:
        url = server.base_url
        for _ in range(4):
            assert post(url + "/v1/manifests", publish(deployment)).status_code == 201
        versions, after = [], 0
        while after is not None:
            page = fresh_get(url + f"/v1/history?after={after}&limit=2").json()
            versions += [item["version"] for item in page["items"]]
            after = page["next_after"]
        assert versions == [1, 2, 3, 4, 5]
        for n, body in enumerate(deployment.manifests, start=1):
            assert fresh_get(url + f"/v1/manifests/{n}.json").content == body


def test_root_rotation(service: Service, deployment: Deployment) -> None:
    old_keys = deployment.publisher_keys
    with service.running() as server:
        url = server.base_url
        new_root = deployment.rotate_publisher()
        response = post(url + "/v1/roots", new_root)
        assert response.status_code == 201, response.text
        assert response.json()["version"] == 2
        assert fresh_get(url + "/v1/roots/2.json").content == new_root
        assert fresh_get(url + "/healthz").json()["root_version"] == 2
        assert post(url + "/v1/roots", new_root).json()["error"]["code"] == "version_conflict"
        refused = post(url + "/v1/manifests", next_manifest(deployment, signers=old_keys))
        assert refused.status_code == 403
        accepted = post(url + "/v1/manifests", publish(deployment))
        assert accepted.status_code == 201
        latest = fresh_get(url + "/v1/manifest.json")
        assert latest.content == deployment.manifests[-1]
    assert verify_chain(service, deployment) == [1, 2]


def test_every_error_status_has_its_json_code(service: Service, deployment: Deployment) -> None:
    env = {
        "PINSERVER_PUBLISH_TOKEN": "pub-token",
        "PINSERVER_ADMIN_TOKEN": "adm-token",
        "PINSERVER_REPORT_BURST": "1",
    }
    auth = {"Authorization": "Bearer pub-token"}
    report = {
        "host": "api.example.com",
        "port": 443,
        "observed": ["AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE="],
        "manifest_version": 1,
        "mode": "enforce",
        "time": "2026-12-03T12:00:00Z",
    }
    with service.running(env=env) as server:
        url = server.base_url
        cases = [
            (post(url + "/v1/manifests", b"{", **auth), 400, "invalid_envelope"),
            (post(url + "/v1/manifests", next_manifest(deployment)), 401, "unauthorized"),
            (
                post(url + "/v1/manifests", next_manifest(deployment, signers=[]), **auth),
                403,
                "signature_threshold",
            ),
            (fresh_get(url + "/v1/manifests/7.json"), 404, "not_found"),
            (
                requests.delete(
                    url + "/v1/manifest.json", headers={"Connection": "close"}, timeout=30
                ),
                405,
                "method_not_allowed",
            ),
            (post(url + "/v1/manifests", deployment.manifests[0], **auth), 409, "version_conflict"),
            (post(url + "/v1/manifests", b"x" * ((1 << 20) + 1), **auth), 413, "too_large"),
            (
                requests.post(
                    url + "/v1/manifests",
                    data=next_manifest(deployment),
                    headers={"Content-Type": "text/plain", "Connection": "close", **auth},
                    timeout=30,
                ),
                415,
                "unsupported_media_type",
            ),
            (
                post(
                    url + "/v1/manifests",
                    next_manifest(deployment, not_before=now() + timedelta(days=2)),
                    **auth,
                ),
                422,
                "not_yet_valid",
            ),
            (fresh_get(url + "/v1/history?limit=0"), 400, "invalid_parameter"),
            (fresh_get(url + "/v1/reports"), 401, "unauthorized"),
        ]
        # the report limit is per worker: more reports than workers x burst must hit it
        statuses = [post(url + "/v1/reports", json.dumps(report).encode()) for _ in range(4)]
        cases.append((next(r for r in statuses if r.status_code != 202), 429, "rate_limited"))
        for response, status, code in cases:
            assert response.status_code == status, (status, response.text)
            assert response.headers["Content-Type"] == "application/json"
            assert response.json()["error"]["code"] == code
        reports = fresh_get(url + "/v1/reports", headers={"Authorization": "Bearer adm-token"})
        assert reports.status_code == 200
        assert 1 <= len(reports.json()["items"]) <= 2
        log = server.log()
    assert "pub-token" not in log
    assert "adm-token" not in log
    assert "Traceback" not in log


def test_concurrent_publishers_get_one_201(service: Service, deployment: Deployment) -> None:
    with service.running(workers=2) as server:
        url = server.base_url
        for _ in range(2):
            body = publish(deployment)  # the same next version for every publisher
            barrier = threading.Barrier(10)
            statuses: list[int] = []
            lock = threading.Lock()

            def attempt(
                body: bytes = body,
                barrier: threading.Barrier = barrier,
                statuses: list[int] = statuses,
                lock: threading.Lock = lock,
            ) -> None:
                with requests.Session() as session:  # connected before the barrier
                    session.get(url + "/healthz", timeout=30)
                    barrier.wait()
                    response = session.post(
                        url + "/v1/manifests",
                        data=body,
                        headers={**JSON, "Connection": "close"},
                        timeout=30,
                    )
                assert response.json()  # every answer is JSON
                with lock:
                    statuses.append(response.status_code)

            threads = [threading.Thread(target=attempt) for _ in range(10)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert sorted(statuses) == [201] + [409] * 9
        assert fresh_get(url + "/v1/manifest.json").content == deployment.manifests[-1]
    assert verify_chain(service, deployment) == [1, 2, 3]


def test_data_survives_a_restart(service: Service, deployment: Deployment) -> None:
    with service.running() as server:
        url = server.base_url
        assert post(url + "/v1/manifests", publish(deployment)).status_code == 201
        etag = fresh_get(url + "/v1/manifest.json").headers["ETag"]
    with service.running() as server:
        url = server.base_url
        again = fresh_get(url + "/v1/manifest.json")
        assert again.content == deployment.manifests[-1]
        assert again.headers["ETag"] == etag  # same bytes, same ETag across restarts
        assert fresh_get(url + "/healthz").json()["manifest_version"] == 2
        assert post(url + "/v1/manifests", publish(deployment)).status_code == 201
    assert verify_chain(service, deployment) == [1, 2, 3]


def test_kill_9_of_a_worker_during_publishes_leaves_the_store_consistent(
    service: Service, deployment: Deployment
) -> None:
    with service.running(workers=2) as server:
        url = server.base_url
        for round_ in range(4):
            body = next_manifest(deployment)
            outcome: list[object] = []

            def send(body: bytes = body, outcome: list[object] = outcome) -> None:
                try:
                    outcome.append(post(url + "/v1/manifests", body).status_code)
                except requests.RequestException as e:
                    outcome.append(e)

            sender = threading.Thread(target=send)
            sender.start()
            victims = server.worker_pids()
            os.kill(victims[round_ % len(victims)], signal.SIGKILL)
            sender.join()
            # Whatever the client saw, the store holds the old chain or the new version.
            store = service.open_store()
            try:
                store.check_integrity()
                latest = store.latest_manifest()
            finally:
                store.close()
            assert latest is not None
            if latest.envelope == body:
                deployment.manifests.append(body)
            else:
                assert outcome != [201]
            wait_for(lambda: len(server.worker_pids()) >= 2, "gunicorn replaces the worker")
            expected = deployment.manifests[-1]
            wait_for(
                lambda expected=expected: fresh_get(url + "/v1/manifest.json").content == expected,
                "every worker serves the latest",
            )
        assert post(url + "/v1/manifests", publish(deployment)).status_code == 201
    assert verify_chain(service, deployment) == list(range(1, len(deployment.manifests) + 1))


def test_metrics_sum_every_worker(service: Service) -> None:
    with service.running(workers=2) as server:
        url = server.base_url
        etag = fresh_get(url + "/v1/manifest.json").headers["ETag"]
        for _ in range(9):
            fresh_get(url + "/v1/manifest.json", headers={"If-None-Match": etag})
        fresh_get(url + "/v1/nothing-here")

        def counted() -> bool:
            text = fresh_get(url + "/metrics").text
            return (
                'pinserver_polls_total{status="200"} 1\n' in text
                and 'pinserver_polls_total{status="304"} 9\n' in text
                and 'pinserver_rejections_total{code="not_found"} 1\n' in text
                and "pinserver_poll_not_modified_ratio 0.9\n" in text
            )

        wait_for(counted, "metrics from both workers add up")


def _damage(service: Service) -> None:
    """Damage the store behind the service's back, as a disk or an operator might."""
    if service.backend.database_url is None:
        for path in service.data_dir.glob("pinserver.sqlite3*"):
            path.unlink()
        (service.data_dir / "pinserver.sqlite3").write_bytes(b"SQLite format 3\x00" + b"\x00" * 50)
        return
    # The history tables are append-only, but a row can still be added out of order
    # by someone with database access: manifest 3 with no manifest 2.
    import psycopg  # the postgres extra; only this branch needs it

    with psycopg.connect(service.backend.database_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO manifests (version, root_version, payload_sha256, published_at,"
            " keyids, envelope) SELECT 3, root_version, payload_sha256, published_at, keyids,"
            " envelope FROM manifests WHERE version = 1"
        )


def test_a_damaged_store_stops_the_service_from_starting(service: Service) -> None:
    _damage(service)
    with (
        pytest.raises(RuntimeError, match=r"store_corrupt|damaged|skip from version"),
        service.running(),
    ):
        pass
