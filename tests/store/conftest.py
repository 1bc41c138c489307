"""Store fixtures, parametrised by backend: every contract test runs on each one.

Backends add themselves to ``BACKENDS`` with a factory taking pytest's ``tmp_path``
(or a fixture request) and returning a fresh, empty store.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pinserver.store.base import Store
from pinserver.store.sqlite import SQLiteStore

StoreFactory = Callable[[], Store]

BACKENDS = ["sqlite", "postgres"]


@pytest.fixture(params=BACKENDS)
def store_factory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreFactory]:
    """Makes handles on one fresh store of the parametrised backend; each call returns a
    new handle (connection) on the same store, closed at teardown."""
    opened: list[Store] = []
    if request.param == "sqlite":

        def make() -> Store:
            store = SQLiteStore(tmp_path / "data")
            opened.append(store)
            return store

    elif request.param == "postgres":
        # One fresh database on the session's throwaway server (skips, saying why, where
        # PostgreSQL cannot be had); every handle is another replica's connection.
        from pinserver.store.postgres import PostgresStore
        from tests.support.postgres import PostgresServer

        server: PostgresServer = request.getfixturevalue("postgres_server")
        url = server.create_database("store")

        def make() -> Store:
            store = PostgresStore(url)
            opened.append(store)
            return store

    else:  # pragma: no cover - other backends register their own branch
        raise pytest.UsageError(f"unknown store backend {request.param}")
    yield make
    for store in opened:
        store.close()


@pytest.fixture
def store(store_factory: StoreFactory) -> Store:
    return store_factory()
