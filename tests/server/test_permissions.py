"""A new SQLite store is private to its owner's group: it holds client addresses
(reports, publish events), which are not for every local user to read."""

from __future__ import annotations

import stat
from pathlib import Path

from pinserver.store.sqlite import SQLiteStore


def test_a_new_store_directory_and_file_are_not_world_readable(tmp_path: Path) -> None:
    data = tmp_path / "fresh" / "data"
    SQLiteStore(data).close()
    assert stat.S_IMODE(data.stat().st_mode) == 0o750
    database_files = [p for p in data.iterdir() if p.name.startswith("pinserver.sqlite")]
    assert database_files
    for path in database_files:
        assert stat.S_IMODE(path.stat().st_mode) & 0o007 == 0, path


def test_an_existing_directory_keeps_the_mode_its_owner_chose(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    SQLiteStore(data).close()
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
