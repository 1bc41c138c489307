"""Storage of roots, manifests, publish events and client reports.

:mod:`pinserver.store.base` defines the interface; ``sqlite`` is the embedded
default and ``postgres`` serves several replicas. :func:`open_store` picks one.
"""

from __future__ import annotations

import os
from pathlib import Path

from pinserver.store.base import NotInitialisedError, Store

DEFAULT_DATA_DIR = "./pinserver-data"

__all__ = ["DEFAULT_DATA_DIR", "NotInitialisedError", "Store", "open_store"]


def open_store(
    data_dir: str | Path | None = None,
    database_url: str | None = None,
    *,
    create: bool = True,
) -> Store:
    """The store the settings name: PostgreSQL for a ``postgresql://`` URL, else the
    SQLite file in ``data_dir`` (default ``$PINSERVER_DATA`` or ``./pinserver-data``).

    ``create=False`` refuses to create a new SQLite store (``NotInitialisedError``), for
    commands that must find an existing one.
    """
    if database_url is None:
        database_url = os.environ.get("PINSERVER_DATABASE_URL") or None
    if database_url:
        if not database_url.startswith(("postgresql://", "postgres://")):
            raise ValueError(
                f"PINSERVER_DATABASE_URL must be a postgresql:// URL, not {database_url!r}"
            )
        # Imported lazily: psycopg is an optional dependency (the ``postgres`` extra).
        from pinserver.store.postgres import PostgresStore  # noqa: PLC0415

        return PostgresStore(database_url)
    from pinserver.store.sqlite import SQLiteStore  # noqa: PLC0415

    return SQLiteStore(
        data_dir or os.environ.get("PINSERVER_DATA") or DEFAULT_DATA_DIR, create=create
    )
