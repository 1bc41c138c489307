"""SQLite specifics: schema versions, append-only rows, damage detection."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from pinserver.errors import StoreError
from pinserver.store import open_store
from pinserver.store.base import NotInitialisedError
from pinserver.store.sqlite import DATABASE_FILE, SCHEMA_VERSION, SQLiteStore
from pinserver.trust import verify_anchor_root
from tests.factory import NOW, Deployment
from tests.store.test_store_contract import publisher


def seeded(data: Path, manifests: int = 2) -> Deployment:
    d = Deployment()
    store = SQLiteStore(data)
    store.install_first_root(verify_anchor_root(d.roots[0]), now=NOW)
    for _ in range(manifests):
        store.publish_manifest(publisher(d.publish()), now=NOW)
    store.close()
    return d


def test_open_store_defaults_to_sqlite_in_the_data_dir(tmp_path: Path) -> None:
    store = open_store(tmp_path / "d")
    try:
        assert isinstance(store, SQLiteStore)
        assert (tmp_path / "d" / DATABASE_FILE).exists()
        assert store.schema_version() == SCHEMA_VERSION
        mode = sqlite3.connect(tmp_path / "d" / DATABASE_FILE).execute("PRAGMA journal_mode")
        assert mode.fetchone()[0] == "wal"
    finally:
        store.close()


def test_open_store_can_refuse_to_create(tmp_path: Path) -> None:
    with pytest.raises(NotInitialisedError, match="pinserver init"):
        open_store(tmp_path / "missing", create=False)
    assert not (tmp_path / "missing").exists()


def test_reopening_keeps_data_and_does_not_migrate_again(tmp_path: Path) -> None:
    d = seeded(tmp_path)
    store = SQLiteStore(tmp_path)
    try:
        assert store.schema_version() == SCHEMA_VERSION
        assert [m.envelope for m in store.manifests_after(0, 10)] == d.manifests
        rows = store._read("SELECT COUNT(*) FROM schema_version")
        assert rows[0][0] == SCHEMA_VERSION
    finally:
        store.close()


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    seeded(tmp_path, 0)
    with sqlite3.connect(tmp_path / DATABASE_FILE) as conn:
        conn.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION + 1,))
    with pytest.raises(StoreError, match="upgrade pinserver") as info:
        SQLiteStore(tmp_path)
    assert info.value.code == "store_too_new"


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE manifests SET envelope = x'00' WHERE version = 1",
        "DELETE FROM manifests WHERE version = 2",
        "UPDATE roots SET source = 'x'",
        "DELETE FROM roots",
    ],
)
def test_history_rows_are_append_only(tmp_path: Path, statement: str) -> None:
    seeded(tmp_path)
    conn = sqlite3.connect(tmp_path / DATABASE_FILE)
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        conn.execute(statement)
    conn.close()


def test_integrity_check_finds_a_tampered_payload(tmp_path: Path) -> None:
    d = seeded(tmp_path)
    conn = sqlite3.connect(tmp_path / DATABASE_FILE)
    conn.execute("DROP TRIGGER manifests_append_only_u")  # what an intruder with the file can do
    conn.execute("UPDATE manifests SET envelope = ? WHERE version = 2", (d.manifests[0],))
    conn.commit()
    conn.close()
    store = SQLiteStore(tmp_path)
    try:
        with pytest.raises(StoreError, match="payload hash") as info:
            store.check_integrity()
        assert info.value.code == "store_corrupt"
    finally:
        store.close()


def test_a_truncated_file_is_reported_as_damaged(tmp_path: Path) -> None:
    seeded(tmp_path, 30)
    path = tmp_path / DATABASE_FILE
    # fold the WAL into the main file first so that truncation hits real pages
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    size = path.stat().st_size
    with path.open("r+b") as f:
        f.truncate(size // 2)
    with pytest.raises(StoreError) as info:
        _open_and_check(tmp_path)
    assert info.value.code == "store_corrupt"


def _open_and_check(data: Path) -> None:
    store = SQLiteStore(data)
    try:
        store.check_integrity()
    finally:
        store.close()
