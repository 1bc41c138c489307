"""Fixtures for the service tests: a deployment with manifests valid *now* (the
service judges publications by its own clock), and the service's state on each store
backend (``store_backend``: SQLite in the data directory, or a fresh PostgreSQL
database of its own on the session's throwaway server)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from pinserver.server import create_app
from pinserver.store.base import Store
from tests.factory import Deployment
from tests.support.backends import Backend
from tests.support.gunicorn import ServerProcess, init_store, running_server_process

JSON = {"Content-Type": "application/json"}


def now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def window(**extra: Any) -> dict[str, Any]:
    """Manifest times around the real clock, which is what the service checks against."""
    t = now()
    return {"issued_at": t - timedelta(hours=1), "expires": t + timedelta(days=30), **extra}


def next_manifest(d: Deployment, **extra: Any) -> bytes:
    return d.next_manifest(**window(**extra))


def publish(d: Deployment, **extra: Any) -> bytes:
    return d.publish(**window(**extra))


@dataclass(frozen=True)
class Service:
    """Where one service under test keeps its state: a data directory (SQLite file,
    generation file, metrics) and a store backend (that file, or a database)."""

    data_dir: Path
    backend: Backend

    def open_store(self) -> Store:
        return self.backend.open_store(self.data_dir)

    def init(self, deployment: Deployment, *, publish: bool = False) -> None:
        """Install the deployment's root 1 (and with ``publish`` its history so far)."""
        init_store(
            self.data_dir, deployment, publish=publish, database_url=self.backend.database_url
        )

    def app(self, **config: Any) -> Flask:
        return create_app(
            {"DATA_DIR": str(self.data_dir), "TESTING": True, **self.backend.app_config(), **config}
        )

    def running(
        self, *, workers: int = 2, env: dict[str, str] | None = None
    ) -> AbstractContextManager[ServerProcess]:
        """A real gunicorn on this state (see tests.support.gunicorn)."""
        return running_server_process(
            self.data_dir,
            workers=workers,
            env={**self.backend.server_env(), **(env or {})},
        )

    def state(self) -> tuple[object, ...]:
        """Everything a rejected request must leave untouched."""
        store = self.open_store()
        try:
            return (store.head(), store.roots(), store.manifests_after(0, 1000), store.reports())
        finally:
            store.close()


@pytest.fixture
def deployment() -> Deployment:
    return Deployment()


@pytest.fixture
def fast_dir(tmp_path: Path) -> Iterator[Path]:
    """A directory on tmpfs when there is one: the same SQLite, without waiting for a
    virtual disk to fsync every commit (tests create hundreds of stores)."""
    shm = Path("/dev/shm")
    if not (shm.is_dir() and os.access(shm, os.W_OK)):
        yield tmp_path
        return
    path = Path(tempfile.mkdtemp(prefix="pinserver-test-", dir=shm))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def empty_service(fast_dir: Path, store_backend: Backend) -> Service:
    """A service whose store has nothing in it yet (not even root 1)."""
    data_dir = fast_dir / "data"
    data_dir.mkdir()
    return Service(data_dir, store_backend)


@pytest.fixture
def service(empty_service: Service, deployment: Deployment) -> Service:
    """A service whose store holds the deployment's root 1 and its first manifest."""
    publish(deployment)
    empty_service.init(deployment, publish=True)
    return empty_service


@pytest.fixture
def app(service: Service) -> Iterator[Flask]:
    app = service.app()
    yield app
    app.extensions["pinserver"].store.close()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()
