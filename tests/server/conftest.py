"""Fixtures for the service tests: a deployment with manifests valid *now* (the
service judges publications by its own clock), and a Flask app on a SQLite store."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from pinserver.server import create_app
from pinserver.store.sqlite import SQLiteStore
from tests.factory import Deployment
from tests.support.gunicorn import init_store

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
def data_dir(fast_dir: Path, deployment: Deployment) -> Path:
    """A store holding the deployment's root 1 and its first manifest."""
    publish(deployment)
    init_store(fast_dir / "data", deployment, publish=True)
    return fast_dir / "data"


def make_app(data_dir: Path, **config: Any) -> Flask:
    return create_app({"DATA_DIR": str(data_dir), "TESTING": True, **config})


@pytest.fixture
def app(data_dir: Path) -> Iterator[Flask]:
    app = make_app(data_dir)
    yield app
    app.extensions["pinserver"].store.close()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def store_state(data_dir: Path) -> tuple[object, ...]:
    """Everything a rejected request must leave untouched."""
    store = SQLiteStore(data_dir)
    try:
        return (store.head(), store.roots(), store.manifests_after(0, 1000), store.reports())
    finally:
        store.close()
