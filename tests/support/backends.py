"""The store backends the service tests run against, as one parametrised fixture.

    def test_something(store_backend: Backend, tmp_path: Path) -> None:
        app = create_app({"DATA_DIR": str(tmp_path), **store_backend.app_config()})
        with running_server(tmp_path, env=store_backend.server_env()) as url: ...

``sqlite`` keeps everything in the data directory; ``postgres`` gets an empty database
of its own on the session's throwaway server (and skips, saying why, where PostgreSQL
cannot be had). The data directory is still used by both (metrics, generation file).

A test about SQLite itself (its file on disk, WAL, tmpfs placement) says so with
``@sqlite_only``, which narrows the parametrisation to ``[sqlite]``; ``@postgres_only``
likewise for what only PostgreSQL does.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pinserver.store import open_store
from pinserver.store.base import Store

BACKEND_NAMES = ["sqlite", "postgres"]

sqlite_only = pytest.mark.parametrize("store_backend", ["sqlite"], indirect=True)
"""Marks a test that is about SQLite itself: it runs on the SQLite backend only."""

postgres_only = pytest.mark.parametrize("store_backend", ["postgres"], indirect=True)
"""Marks a test about what only PostgreSQL does (notifications between replicas)."""


@dataclass(frozen=True)
class Backend:
    name: str
    database_url: str | None = None

    @property
    def is_postgres(self) -> bool:
        return self.database_url is not None

    def open_store(self, data_dir: str | os.PathLike[str]) -> Store:
        """A handle on this backend's store (SQLite in ``data_dir``, or the database)."""
        return open_store(Path(data_dir), self.database_url)

    def app_config(self) -> dict[str, Any]:
        """``create_app`` settings that select this backend."""
        return {"DATABASE_URL": self.database_url} if self.database_url else {}

    def server_env(self) -> dict[str, str]:
        """Environment for a gunicorn replica on this backend, with the service's own
        defaults otherwise (PostgreSQL: every poll consults the notification-driven head,
        docs/scaling.md)."""
        return {"PINSERVER_DATABASE_URL": self.database_url} if self.database_url else {}

    def cli_args(self) -> list[str]:
        """``pinserver init/serve/export`` options that select this backend."""
        return ["--database-url", self.database_url] if self.database_url else []


@pytest.fixture(params=BACKEND_NAMES)
def store_backend(request: pytest.FixtureRequest) -> Backend:
    if request.param == "postgres":
        server = request.getfixturevalue("postgres_server")
        return Backend("postgres", server.create_database("service"))
    if request.param != "sqlite":
        raise pytest.UsageError(f"unknown store backend {request.param!r}")
    return Backend("sqlite")
