"""Session-scoped pytest fixtures for the throwaway PostgreSQL server.

One server per test session (starting it costs about two seconds); every test that
needs isolation asks ``postgres_server.create_database()`` for an empty database.
Where PostgreSQL cannot be had the dependent tests skip, saying why.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.postgres import PostgresServer, PostgresUnavailableError, running_postgres


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    try:
        with running_postgres() as server:
            yield server
    except PostgresUnavailableError as e:
        pytest.skip(f"PostgreSQL unavailable: {e}")


@pytest.fixture(scope="session")
def postgres_url(postgres_server: PostgresServer) -> str:
    """URL of one database shared by the whole session (create your own for isolation)."""
    return postgres_server.create_database("session")
