"""What only the PostgreSQL store has to get right: several replicas on one database.

Each ``PostgresStore`` here stands for one replica (its own connections). The shared
behaviour of every backend is in tests/store; these tests are about serialising
publishers across processes, telling replicas about publications, migrations started
at the same moment, and failing clearly when the database is not there.
"""

from __future__ import annotations

import select
import threading
import time
from collections.abc import Callable

import psycopg
import pytest

from pinserver.errors import PinserverError, StoreError, VersionConflictError
from pinserver.store.base import StoredManifest, StoredRoot, StoreHead
from pinserver.store.postgres import PostgresStore
from pinserver.trust import (
    ManifestFloor,
    VerifiedManifest,
    verify_anchor_root,
    verify_publication,
)
from tests.factory import NOW, Deployment
from tests.support.postgres import PostgresServer

OpenStore = Callable[..., PostgresStore]
WAIT_S = 10.0  # a liveness deadline for events, never a speed requirement


def publication(
    data: bytes, *, on_enter: Callable[[], None] | None = None
) -> Callable[[StoredRoot, StoredManifest | None], VerifiedManifest]:
    """The server's verification callback: the pure core judges, under the store's lock."""

    def verify(root: StoredRoot, latest: StoredManifest | None) -> VerifiedManifest:
        if on_enter is not None:
            on_enter()
        trusted = verify_anchor_root(root.envelope).root
        floor = ManifestFloor(latest.version, latest.payload_sha256) if latest else None
        return verify_publication(trusted, data, latest=floor, reference_time=NOW)

    return verify


def initialised(store: PostgresStore) -> Deployment:
    deployment = Deployment()
    assert store.install_first_root(verify_anchor_root(deployment.roots[0]), now=NOW)
    return deployment


def wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"gave up after {WAIT_S} s waiting for {what}")
        time.sleep(0.01)


def wait_for_notification(store: PostgresStore) -> None:
    """Block until the store's LISTEN socket has something to read."""
    watcher = store._watcher
    assert watcher is not None, "head() starts the listener"
    poller = select.poll()
    poller.register(watcher._conn.pgconn.socket, select.POLLIN)
    assert poller.poll(WAIT_S * 1000), "no notification arrived"


def test_racing_publishers_on_two_replicas_get_one_winner(open_pg_store: OpenStore) -> None:
    replicas = [open_pg_store(), open_pg_store()]
    deployment = initialised(replicas[0])
    # Eight different signed version-1 manifests, published at once, half through each.
    candidates = [deployment.next_manifest(poll_interval=600 + i) for i in range(8)]
    start = threading.Barrier(len(candidates))
    outcomes: list[StoredManifest | PinserverError] = []
    lock = threading.Lock()

    def publish(i: int) -> None:
        start.wait(WAIT_S)
        try:
            outcome: StoredManifest | PinserverError = replicas[i % 2].publish_manifest(
                publication(candidates[i]), now=NOW, source=f"publisher-{i}"
            )
        except PinserverError as e:
            outcome = e
        with lock:
            outcomes.append(outcome)

    threads = [threading.Thread(target=publish, args=(i,)) for i in range(len(candidates))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT_S)

    winners = [o for o in outcomes if isinstance(o, StoredManifest)]
    losers = [o for o in outcomes if not isinstance(o, StoredManifest)]
    assert len(winners) == 1
    assert len(losers) == len(candidates) - 1
    assert all(isinstance(e, VersionConflictError) and e.latest_version == 1 for e in losers)
    for replica in replicas:
        latest = replica.latest_manifest()
        assert latest is not None
        assert latest.envelope == winners[0].envelope
        assert [m.version for m in replica.manifests_after(0, 10)] == [1]


def test_verification_runs_while_other_replicas_wait(
    open_pg_store: OpenStore, postgres_server: PostgresServer, database_url: str
) -> None:
    first, second = open_pg_store(), open_pg_store()
    deployment = initialised(first)
    ours = deployment.next_manifest(poll_interval=600)
    theirs = deployment.next_manifest(poll_interval=900)
    inside, release = threading.Event(), threading.Event()
    results: dict[str, object] = {}

    def hold_the_lock() -> None:
        inside.set()
        assert release.wait(WAIT_S)

    def run(name: str, store: PostgresStore, verify: Callable[..., VerifiedManifest]) -> None:
        try:
            results[name] = store.publish_manifest(verify, now=NOW)
        except PinserverError as e:
            results[name] = e

    a = threading.Thread(target=run, args=("a", first, publication(ours, on_enter=hold_the_lock)))
    a.start()
    assert inside.wait(WAIT_S)
    b = threading.Thread(target=run, args=("b", second, publication(theirs)))
    b.start()
    with psycopg.connect(database_url, autocommit=True) as admin:

        def second_is_waiting() -> bool:
            row = admin.execute(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
            ).fetchone()
            return row is not None and row[0] == 1

        wait_until(second_is_waiting, "the second publisher to queue on the write lock")
    assert "b" not in results  # still blocked behind the first publisher's verification
    release.set()
    a.join(WAIT_S)
    b.join(WAIT_S)

    assert isinstance(results["a"], StoredManifest)
    assert isinstance(results["b"], VersionConflictError)
    assert results["b"].latest_version == 1
    assert second.get_manifest(1) == results["a"]


def test_a_replica_learns_of_a_publication_by_notification(open_pg_store: OpenStore) -> None:
    writer = open_pg_store()
    # An hour-long TTL: only the notification can make this replica look again.
    reader = open_pg_store(head_ttl=3600.0)
    deployment = initialised(writer)
    assert reader.head() == StoreHead(root_version=1, manifest_version=0)

    writer.publish_manifest(publication(deployment.publish()), now=NOW)
    wait_for_notification(reader)

    assert reader.head() == StoreHead(root_version=1, manifest_version=1)


def test_without_news_the_head_is_answered_from_memory(
    open_pg_store: OpenStore, database_url: str
) -> None:
    """A row written behind the store's back (no NOTIFY) stays unseen until the TTL:
    proof that polls do not query the database."""
    reader = open_pg_store(head_ttl=3600.0)
    initialised(reader)
    assert reader.head().root_version == 1
    with psycopg.connect(database_url, autocommit=True) as sneaky:
        sneaky.execute(
            "INSERT INTO roots (version, payload_sha256, published_at, keyids, envelope)"
            " SELECT 2, payload_sha256, published_at, keyids, envelope FROM roots"
        )
    assert reader.head().root_version == 1
    assert open_pg_store(head_ttl=0.0).head().root_version == 2


def test_a_lost_listener_is_replaced_and_the_head_rechecked(
    open_pg_store: OpenStore, database_url: str
) -> None:
    writer = open_pg_store()
    reader = open_pg_store(head_ttl=3600.0)
    deployment = initialised(writer)
    assert reader.head().manifest_version == 0
    assert reader._watcher is not None
    listener_pid = reader._watcher._conn.info.backend_pid
    with psycopg.connect(database_url, autocommit=True) as admin:
        row = admin.execute("SELECT pg_terminate_backend(%s, 5000)", (listener_pid,)).fetchone()
        assert row == (True,)
    writer.publish_manifest(publication(deployment.publish()), now=NOW)

    assert reader.head().manifest_version == 1
    assert reader._watcher is None  # dropped; the next call opens a new one
    assert reader.head().manifest_version == 1
    assert reader._watcher is not None
    assert reader._watcher._conn.info.backend_pid != listener_pid


def test_replicas_starting_together_migrate_once(database_url: str) -> None:
    start = threading.Barrier(4)
    stores: list[PostgresStore] = []
    errors: list[BaseException] = []

    def open_one() -> None:
        start.wait(WAIT_S)
        try:
            stores.append(PostgresStore(database_url))
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=open_one) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT_S)
    try:
        assert errors == []
        assert len(stores) == 4
        assert {s.schema_version() for s in stores} == {1}
        with psycopg.connect(database_url, autocommit=True) as admin:
            assert admin.execute("SELECT count(*) FROM schema_version").fetchone() == (1,)
    finally:
        for store in stores:
            store.close()


def test_a_newer_schema_is_refused(open_pg_store: OpenStore, database_url: str) -> None:
    open_pg_store()
    with psycopg.connect(database_url, autocommit=True) as admin:
        admin.execute("INSERT INTO schema_version (version) VALUES (99)")
    with pytest.raises(StoreError) as caught:
        PostgresStore(database_url)
    assert caught.value.code == "store_too_new"
    assert "upgrade pinserver" in caught.value.message


def test_an_unreachable_database_is_a_clear_store_error(postgres_server: PostgresServer) -> None:
    with socket_closed_port() as port:
        url = f"postgresql://pinserver:s3cret@127.0.0.1:{port}/pins?connect_timeout=5"
        with pytest.raises(StoreError) as caught:
            PostgresStore(url)
    assert caught.value.code == "store_unavailable"
    assert f"127.0.0.1:{port}/pins" in caught.value.message
    assert "s3cret" not in caught.value.message


def test_history_is_append_only(open_pg_store: OpenStore, database_url: str) -> None:
    store = open_pg_store()
    deployment = initialised(store)
    store.publish_manifest(publication(deployment.publish()), now=NOW)
    with psycopg.connect(database_url, autocommit=True) as admin:
        for statement in (
            "UPDATE manifests SET reason = 'rewritten'",
            "DELETE FROM manifests",
            "TRUNCATE roots CASCADE",
        ):
            with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
                admin.execute(statement)
    assert store.get_manifest(1) is not None


def test_integrity_check_finds_a_tampered_row(open_pg_store: OpenStore, database_url: str) -> None:
    store = open_pg_store()
    deployment = initialised(store)
    store.publish_manifest(publication(deployment.publish()), now=NOW)
    store.check_integrity()
    with psycopg.connect(database_url, autocommit=True) as admin, admin.transaction():
        admin.execute("ALTER TABLE manifests DISABLE TRIGGER manifests_append_only")
        admin.execute("UPDATE manifests SET payload_sha256 = repeat('0', 64)")
        admin.execute("ALTER TABLE manifests ENABLE TRIGGER manifests_append_only")
    with pytest.raises(StoreError) as caught:
        store.check_integrity()
    assert caught.value.code == "store_corrupt"
    assert "manifests version 1" in caught.value.message


def test_the_primary_key_backs_up_the_lock(open_pg_store: OpenStore) -> None:
    """A row that slipped in without the lock still cannot be stored twice."""
    store = open_pg_store()
    initialised(store)
    with pytest.raises(VersionConflictError) as caught, store._write("insert twice") as conn:
        conn.execute(
            "INSERT INTO roots (version, payload_sha256, published_at, keyids, envelope)"
            " SELECT 1, payload_sha256, published_at, keyids, envelope FROM roots"
        )
    assert caught.value.latest_version == 1
    assert [r.version for r in store.roots()] == [1]


class socket_closed_port:  # noqa: N801 - used as a context manager, reads as a phrase
    """A 127.0.0.1 port that refuses connections: bound, never listening."""

    def __enter__(self) -> int:
        import socket

        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind(("127.0.0.1", 0))
        return int(self._sock.getsockname()[1])

    def __exit__(self, *exc: object) -> None:
        self._sock.close()


def test_a_database_outage_keeps_the_last_head_and_fails_writes(
    open_pg_store: OpenStore, database_url: str
) -> None:
    """Polls keep being answered from what the replica holds; nothing else pretends."""
    store = open_pg_store(head_ttl=0.0)
    deployment = initialised(store)
    store.publish_manifest(publication(deployment.publish()), now=NOW)
    assert store.head() == StoreHead(root_version=1, manifest_version=1)
    name = database_url.rsplit("/", 1)[1]
    with psycopg.connect(database_url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as admin:
        admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        admin.execute(
            "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity WHERE datname = %s",
            (name,),
        )
        try:
            assert store.head() == StoreHead(root_version=1, manifest_version=1)
            with pytest.raises(StoreError):
                store.latest_manifest()
            with pytest.raises(StoreError):
                store.publish_manifest(publication(deployment.next_manifest()), now=NOW)
        finally:
            admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
    assert store.latest_manifest() is not None
    assert store.head() == StoreHead(root_version=1, manifest_version=1)
