"""Storage of roots, manifests, publish events and client reports.

:mod:`pinserver.store.base` defines the interface; ``sqlite`` is the embedded
default and ``postgres`` serves several replicas. :func:`open_store` picks one.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from pinserver.errors import PinserverError, StoreError
from pinserver.store.base import NotInitialisedError, Store
from pinserver.trust import (
    ManifestFloor,
    verify_history_entry,
    verify_manifest_signatures,
    verify_root_chain,
)

DEFAULT_DATA_DIR = "./pinserver-data"

__all__ = [
    "DEFAULT_DATA_DIR",
    "DatabaseUrlError",
    "NotInitialisedError",
    "Store",
    "check_store",
    "open_store",
    "redact_database_url",
]


class DatabaseUrlError(StoreError, ValueError):
    """``PINSERVER_DATABASE_URL`` (``--database-url``) is not a PostgreSQL URL."""

    code = "invalid_database_url"


_URL_PASSWORD = re.compile(r"(//[^/:@]*):[^/]*@")
_QUERY_PASSWORD = re.compile(r"(?i)(password=)[^&]*")


def redact_database_url(url: str) -> str:
    """``url`` with any password replaced by ``***``, for messages and logs: a database
    URL is a secret as soon as it carries one (``postgresql://user:PASSWORD@host/db``,
    or ``?password=``), mistyped scheme or not."""
    return _QUERY_PASSWORD.sub(r"\1***", _URL_PASSWORD.sub(r"\1:***@", url))


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
            raise DatabaseUrlError(
                "PINSERVER_DATABASE_URL must be a postgresql:// URL, not"
                f" {redact_database_url(database_url)!r}; fix the setting (or unset it to"
                " use the SQLite store in the data directory)"
            )
        # Imported lazily: psycopg is an optional dependency (the ``postgres`` extra).
        from pinserver.store.postgres import PostgresStore  # noqa: PLC0415

        return PostgresStore(database_url)
    from pinserver.store.sqlite import SQLiteStore  # noqa: PLC0415

    return SQLiteStore(
        data_dir or os.environ.get("PINSERVER_DATA") or DEFAULT_DATA_DIR, create=create
    )


def check_store(store: Store) -> None:
    """What a service checks before it serves a store: the backend's own integrity check
    (contiguous versions, every payload re-hashed), then the trust core over what polls
    depend on: the whole root chain from root 1 and the latest manifest's signatures
    under the root it names, chained to the one before. A byte changed inside a stored
    signature is refused here (``store_corrupt``) instead of being served. Older
    manifests are not re-verified at start (linear in history); the auditor view and
    ``pinserver history`` check every one of them."""
    store.check_integrity()
    roots = store.roots()
    latest = store.latest_manifest()
    if not roots:
        return
    try:
        chain = verify_root_chain(roots[0].envelope, [r.envelope for r in roots[1:]])
        if latest is None:
            return
        if not 1 <= latest.root_version <= len(chain):
            raise StoreError(f"manifest {latest.version} names root {latest.root_version}")
        verified = verify_manifest_signatures(chain[latest.root_version - 1].root, latest.envelope)
        previous = store.get_manifest(latest.version - 1) if latest.version > 1 else None
        verify_history_entry(
            verified,
            version=latest.version,
            previous=ManifestFloor(previous.version, previous.payload_sha256) if previous else None,
        )
    except PinserverError as e:
        raise StoreError(
            f"the store does not verify: {e.message}; restore it from a backup or re-publish",
            code="store_corrupt",
        ) from e
