"""What every store backend promises, whatever it is built on."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest

from pinserver.documents import Root
from pinserver.envelope import Envelope
from pinserver.errors import ForkError, SignatureError, VersionConflictError
from pinserver.store.base import NotInitialisedError, Store, StoredManifest, StoredRoot
from pinserver.trust import (
    ManifestFloor,
    VerifiedManifest,
    verify_anchor_root,
    verify_publication,
    verify_root_rotation,
)
from tests.factory import NOW, Deployment
from tests.store.conftest import StoreFactory


def _root(stored: StoredRoot) -> Root:
    return Root.from_bytes(Envelope.from_bytes(stored.envelope).payload)


def publisher(body: bytes):  # type: ignore[no-untyped-def]
    """The verification callback the service passes, built from the pure core."""

    def verify(root: StoredRoot, latest: StoredManifest | None) -> VerifiedManifest:
        floor = ManifestFloor(latest.version, latest.payload_sha256) if latest else None
        return verify_publication(_root(root), body, latest=floor, reference_time=NOW)

    return verify


def initialised(store: Store, deployment: Deployment) -> Store:
    assert store.install_first_root(verify_anchor_root(deployment.roots[0]), now=NOW)
    return store


def snapshot(store: Store) -> tuple[object, ...]:
    return (store.head(), store.roots(), store.manifests_after(0, 1000), store.reports())


def test_empty_store_has_nothing(store: Store) -> None:
    assert store.head().root_version == 0
    assert store.head().manifest_version == 0
    assert store.latest_root() is None
    assert store.latest_manifest() is None
    assert store.get_manifest(1) is None
    assert store.manifests_after(0, 10) == []
    store.check_integrity()


def test_first_root_installs_once_and_refuses_another(store: Store) -> None:
    d = Deployment()
    initialised(store, d)
    assert not store.install_first_root(verify_anchor_root(d.roots[0]), now=NOW)
    other = Deployment()
    with pytest.raises(VersionConflictError):
        store.install_first_root(verify_anchor_root(other.roots[0]), now=NOW)
    assert store.get_root(1).envelope == d.roots[0]  # type: ignore[union-attr]
    assert store.head().root_version == 1


def test_publish_without_root_is_refused(store: Store) -> None:
    d = Deployment()
    with pytest.raises(NotInitialisedError):
        store.publish_manifest(publisher(d.next_manifest()), now=NOW)


def test_publish_stores_exact_bytes_and_event(store: Store) -> None:
    d = Deployment()
    initialised(store, d)
    body = d.publish()
    stored = store.publish_manifest(publisher(body), now=NOW, source="10.0.0.1", reason="drill")
    assert stored.version == 1
    again = store.get_manifest(1)
    assert again == store.latest_manifest()
    assert again is not None
    assert again.envelope == body
    assert again.source == "10.0.0.1"
    assert again.reason == "drill"
    assert again.keyids == (d.publisher_keys[0].keyid,)
    assert again.published_at == NOW
    assert again.root_version == 1
    assert store.head().manifest_version == 1


@pytest.mark.parametrize(
    ("make", "error"),
    [
        ("skip_version", VersionConflictError),
        ("replay_version", VersionConflictError),
        ("wrong_previous", VersionConflictError),
        ("unsigned", SignatureError),
    ],
)
def test_rejected_publication_changes_nothing(store: Store, make: str, error: type) -> None:
    d = Deployment()
    initialised(store, d)
    first = d.publish()
    store.publish_manifest(publisher(first), now=NOW)
    if make == "skip_version":
        d.publish()
        body = d.next_manifest()
    elif make == "replay_version":
        body = first
    elif make == "wrong_previous":
        d.manifests[-1] = Deployment().publish(poll_interval=7200)  # a foreign payload
        body = d.next_manifest()
    else:
        body = d.next_manifest(signers=[])
    before = snapshot(store)
    with pytest.raises(error):
        store.publish_manifest(publisher(body), now=NOW)
    assert snapshot(store) == before


def test_a_verifier_exception_rolls_back(store: Store) -> None:
    d = Deployment()
    initialised(store, d)
    before = snapshot(store)

    def refuse(root: StoredRoot, latest: StoredManifest | None) -> VerifiedManifest:
        raise ForkError("refused inside the transaction")

    with pytest.raises(ForkError):
        store.publish_manifest(refuse, now=NOW)
    assert snapshot(store) == before


def test_history_pages_in_order(store: Store) -> None:
    d = Deployment()
    initialised(store, d)
    for _ in range(7):
        store.publish_manifest(publisher(d.publish()), now=NOW)
    assert [m.version for m in store.manifests_after(0, 3)] == [1, 2, 3]
    assert [m.version for m in store.manifests_after(3, 3)] == [4, 5, 6]
    assert [m.version for m in store.manifests_after(6, 3)] == [7]
    assert store.manifests_after(7, 3) == []
    assert [m.envelope for m in store.manifests_after(0, 100)] == d.manifests


def test_root_rotation_appends_and_checks_the_version(store: Store) -> None:
    d = Deployment()
    initialised(store, d)
    new_root = d.rotate_root()
    stored = store.rotate_root(
        lambda current: verify_root_rotation(_root(current), new_root, reference_time=NOW),
        now=NOW,
        source="admin",
    )
    assert stored.version == 2
    assert [r.envelope for r in store.roots()] == d.roots
    with pytest.raises(VersionConflictError):
        store.rotate_root(
            lambda current: verify_root_rotation(_root(current), new_root, reference_time=NOW),
            now=NOW,
        )
    assert store.head().root_version == 2


def test_manifests_after_rotation_name_the_new_root(store: Store) -> None:
    d = Deployment()
    initialised(store, d)
    store.publish_manifest(publisher(d.publish()), now=NOW)
    rotated = d.rotate_publisher()
    store.rotate_root(
        lambda current: verify_root_rotation(_root(current), rotated, reference_time=NOW), now=NOW
    )
    stored = store.publish_manifest(publisher(d.publish()), now=NOW)
    assert (stored.version, stored.root_version) == (2, 2)


def test_reports_round_trip(store: Store) -> None:
    first = store.add_report(client_address="192.0.2.1", body=b'{"a":1}', now=NOW)
    second = store.add_report(
        client_address="192.0.2.2", body=b'{"b":2}', now=NOW + timedelta(seconds=1)
    )
    assert second > first
    reports = store.reports()
    assert [(r.client_address, r.body) for r in reports] == [
        ("192.0.2.1", b'{"a":1}'),
        ("192.0.2.2", b'{"b":2}'),
    ]
    assert [r.id for r in store.reports(after=first)] == [second]
    assert len(store.reports(limit=1)) == 1


def test_concurrent_publishers_of_one_version_get_one_success(
    store_factory: StoreFactory,
) -> None:
    d = Deployment()
    initialised(store_factory(), d)
    body = d.publish()
    handles = [store_factory() for _ in range(8)]
    barrier = threading.Barrier(len(handles))
    outcomes: list[str] = []
    lock = threading.Lock()

    def attempt(handle: Store) -> None:
        barrier.wait()
        try:
            handle.publish_manifest(publisher(body), now=NOW)
            result = "ok"
        except VersionConflictError:
            result = "conflict"
        with lock:
            outcomes.append(result)

    threads = [threading.Thread(target=attempt, args=(h,)) for h in handles]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["conflict"] * 7 + ["ok"]
    handles[0].check_integrity()
    assert [m.envelope for m in handles[0].manifests_after(0, 10)] == [body]


def test_a_new_handle_sees_committed_data(store_factory: StoreFactory) -> None:
    d = Deployment()
    writer = initialised(store_factory(), d)
    writer.publish_manifest(publisher(d.publish()), now=NOW)
    writer.close()
    reader = store_factory()
    assert reader.head().manifest_version == 1
    assert reader.get_manifest(1).envelope == d.manifests[0]  # type: ignore[union-attr]
