"""Fixtures for the PostgreSQL-specific tests: fresh databases on the session's server."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from pinserver.store.postgres import PostgresStore
from tests.support.postgres import PostgresServer


@pytest.fixture
def database_url(postgres_server: PostgresServer) -> str:
    """An empty database of its own for each test."""
    return postgres_server.create_database("pgtest")


@pytest.fixture
def open_pg_store(database_url: str) -> Iterator[Callable[..., PostgresStore]]:
    """Opens stores on the test's database (each one is a 'replica'); closes them all."""
    opened: list[PostgresStore] = []

    def open_store(**kwargs: float) -> PostgresStore:
        store = PostgresStore(database_url, **kwargs)
        opened.append(store)
        return store

    yield open_store
    for store in opened:
        store.close()
