"""Fixtures for the auditor view: a real SQLite store holding a small publication
history, the Flask app over it (fast page checks), and a real gunicorn plus headless
Chromium for the browser tests."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from pinserver.server import create_app
from tests.audit.browser import find_chromium
from tests.audit.history import History
from tests.factory import NOW


@pytest.fixture
def history(tmp_path: Path) -> History:
    """The story of tests/audit/history.py at the fixed instant ``NOW``."""
    return History(tmp_path / "data", NOW).build()


@pytest.fixture
def app(history: History, tmp_path: Path) -> Iterator[Flask]:
    app = create_app(
        {
            "DATA_DIR": str(history.data_dir),
            "PINSERVER_CLOCK": lambda: NOW,
            "PINSERVER_KEY_NAMES": str(history.write_key_names(tmp_path / "key-names.json")),
            "TESTING": True,
        }
    )
    yield app
    app.extensions["pinserver"].store.close()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture(scope="session")
def chromium() -> str:
    found = find_chromium()
    if found is None:
        pytest.skip(
            "Chromium is not installed: the browser tests need Debian's chromium package"
            " (apt-get install chromium; .ci/run installs it when it can)"
        )
    return found


@pytest.fixture
def live_history(tmp_path: Path) -> History:
    """The same story dated at the wall clock, for a real gunicorn (which uses it)."""
    return History(tmp_path / "live", datetime.now(UTC).replace(microsecond=0)).build()
