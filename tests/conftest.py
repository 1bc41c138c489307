"""Fixtures shared by every test package."""

from __future__ import annotations

from tests.support.backends import store_backend
from tests.support.postgres_fixtures import postgres_server, postgres_url

__all__ = ["postgres_server", "postgres_url", "store_backend"]
