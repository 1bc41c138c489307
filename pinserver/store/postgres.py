"""PostgreSQL store: one database shared by several stateless server replicas.

Same tables and semantics as the SQLite store. What changes with several machines:

- **Publication is serialised by the database.** Every write that moves the head
  (installing root 1, rotating the root, publishing a manifest) runs in one
  transaction that first takes a transaction-scoped advisory lock, then reads the
  current root and latest manifest, runs the caller's verification, inserts and
  commits. Two replicas racing on the same version therefore get one success and one
  ``VersionConflictError`` (HTTP 409) from the pure verification; the primary keys on
  ``version`` are a backstop that maps to the same error.
- **Replicas learn of a publication without a per-poll query.** Each write sends
  ``NOTIFY pinserver_head`` inside its transaction (delivered at commit). Every store
  keeps a LISTEN connection and, on each ``head()`` call, drains it without blocking
  (a non-blocking read of a socket, no round trip); only when a notification arrived,
  or ``head_ttl`` seconds passed since the last check (the safety net should the
  listening connection die silently), does it run the one cheap head query. Staleness
  is therefore the notification latency (milliseconds on a LAN) and never more than
  ``head_ttl`` (default 1 s); see docs/scaling.md for the measurement.
- **Threads.** Gunicorn's gthread workers call the store from several threads, so
  each thread gets its own connection (``threading.local``); the listener is shared
  under a lock. After ``fork`` the inherited connections are abandoned, not reused.
- **Migrations** are numbered, recorded in ``schema_version`` and applied under an
  advisory lock, so replicas starting at the same moment migrate exactly once.

Requires psycopg 3 (``pip install 'pinserver[postgres]'``).
"""

from __future__ import annotations

import hashlib
import logging
import os
import select
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, TypeVar, cast

try:
    import psycopg
    from psycopg import errors as pg_errors
    from psycopg.conninfo import conninfo_to_dict
except ImportError as e:  # pragma: no cover - exercised only without the extra installed
    raise ImportError(
        "the PostgreSQL store needs psycopg 3: pip install 'pinserver[postgres]'"
    ) from e

from pinserver.envelope import Envelope
from pinserver.errors import FormatError, PinserverError, StoreError, VersionConflictError
from pinserver.store.base import (
    ManifestVerifier,
    NotInitialisedError,
    RootVerifier,
    StoredManifest,
    StoredReport,
    StoredRoot,
    StoreHead,
)
from pinserver.trust import VerifiedRoot

log = logging.getLogger(__name__)

NOTIFY_CHANNEL = "pinserver_head"
DEFAULT_HEAD_TTL = 1.0

# Advisory lock keys (per database): one serialises every write that moves the head,
# the other serialises schema migrations. The values spell "pinw" and "pinm".
_WRITE_LOCK = 0x70696E77
_MIGRATE_LOCK = 0x70696E6D

_CONNECT_TIMEOUT_S = 10
_MAX_DRAIN_ROUNDS = 8

# Each entry migrates the schema from version N-1 to N, with the same tables and column
# meanings as the SQLite store. Never edit a shipped entry; append a new one.
_MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE roots (
        version        integer     PRIMARY KEY CHECK (version >= 1),
        payload_sha256 text        NOT NULL,
        published_at   timestamptz NOT NULL,
        keyids         text[]      NOT NULL,
        source         text,
        envelope       bytea       NOT NULL
    );
    CREATE TABLE manifests (
        version        integer     PRIMARY KEY CHECK (version >= 1),
        root_version   integer     NOT NULL REFERENCES roots (version),
        payload_sha256 text        NOT NULL,
        published_at   timestamptz NOT NULL,
        keyids         text[]      NOT NULL,
        source         text,
        reason         text,
        envelope       bytea       NOT NULL
    );
    CREATE TABLE reports (
        id             bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        received_at    timestamptz NOT NULL,
        client_address text        NOT NULL,
        body           bytea       NOT NULL
    );
    CREATE INDEX reports_by_address ON reports (client_address, received_at);
    CREATE FUNCTION pinserver_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN RAISE EXCEPTION '% are append-only', TG_TABLE_NAME; END $$;
    CREATE TRIGGER roots_append_only BEFORE UPDATE OR DELETE ON roots
        FOR EACH ROW EXECUTE FUNCTION pinserver_append_only();
    CREATE TRIGGER roots_no_truncate BEFORE TRUNCATE ON roots
        FOR EACH STATEMENT EXECUTE FUNCTION pinserver_append_only();
    CREATE TRIGGER manifests_append_only BEFORE UPDATE OR DELETE ON manifests
        FOR EACH ROW EXECUTE FUNCTION pinserver_append_only();
    CREATE TRIGGER manifests_no_truncate BEFORE TRUNCATE ON manifests
        FOR EACH STATEMENT EXECUTE FUNCTION pinserver_append_only();
    """,
)
SCHEMA_VERSION = len(_MIGRATIONS)

_SELECT_ROOT = "SELECT version, envelope, payload_sha256, published_at FROM roots"
_SELECT_MANIFEST = (
    "SELECT version, root_version, payload_sha256, published_at, keyids, envelope, source,"
    " reason FROM manifests"
)
_HEAD_QUERY = (
    "SELECT (SELECT coalesce(max(version), 0) FROM roots),"
    " (SELECT coalesce(max(version), 0) FROM manifests)"
)

T = TypeVar("T")


def describe_url(url: str) -> str:
    """``host:port/dbname`` of a connection URL, for messages: never the password."""
    try:
        params = conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "(unparsable PostgreSQL URL)"
    host = params.get("host") or "localhost"
    port = params.get("port") or "5432"
    return f"{host}:{port}/{params.get('dbname') or params.get('user') or ''}"


def _utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


def _root_from_row(row: Sequence[Any]) -> StoredRoot:
    return StoredRoot(
        version=row[0],
        envelope=bytes(row[1]),
        payload_sha256=row[2],
        published_at=_utc(row[3]),
    )


def _manifest_from_row(row: Sequence[Any]) -> StoredManifest:
    return StoredManifest(
        version=row[0],
        root_version=row[1],
        payload_sha256=row[2],
        published_at=_utc(row[3]),
        keyids=tuple(row[4]),
        envelope=bytes(row[5]),
        source=row[6],
        reason=row[7],
    )


class _HeadWatcher:
    """A LISTEN connection polled without blocking: has anyone published since?"""

    def __init__(self, url: str) -> None:
        self._conn = psycopg.connect(url, autocommit=True, connect_timeout=_CONNECT_TIMEOUT_S)
        self._conn.execute(f"LISTEN {NOTIFY_CHANNEL}")

    def has_news(self) -> bool:
        """Drain pending notifications; raises ``psycopg.OperationalError`` if broken."""
        pgconn = self._conn.pgconn
        poller = select.poll()
        poller.register(pgconn.socket, select.POLLIN)
        # consume_input reads what the socket holds and never blocks. Read again while
        # more is waiting, so that a server-side close (an error, then end of file) is
        # seen as an error now rather than on the next call.
        for _ in range(_MAX_DRAIN_ROUNDS):
            pgconn.consume_input()
            if not poller.poll(0):
                break
        news = False
        while pgconn.notifies() is not None:
            news = True
        return news

    def close(self) -> None:
        self._conn.close()


class PostgresStore:
    """The :class:`~pinserver.store.base.Store` interface over one PostgreSQL database."""

    def __init__(self, url: str, *, head_ttl: float = DEFAULT_HEAD_TTL) -> None:
        if head_ttl < 0:
            raise ValueError("head_ttl must be >= 0")
        self.url = url
        self.head_ttl = head_ttl
        self._where = describe_url(url)
        self._pid = os.getpid()
        self._local = threading.local()
        self._connections: list[psycopg.Connection[Any]] = []
        self._inherited: list[object] = []
        self._connections_lock = threading.Lock()
        self._head_lock = threading.Lock()
        self._head: StoreHead | None = None
        self._last_head: StoreHead | None = None
        self._head_checked = 0.0
        self._watcher: _HeadWatcher | None = None
        self._watcher_retry_at = 0.0
        self._closed = False
        try:
            with self._errors("migrate the schema"):
                self._migrate()
        except BaseException:
            self.close()
            raise

    # --- connections ----------------------------------------------------------------

    def _connect(self) -> psycopg.Connection[Any]:
        try:
            return psycopg.connect(self.url, autocommit=True, connect_timeout=_CONNECT_TIMEOUT_S)
        except psycopg.Error as e:
            raise StoreError(
                f"cannot connect to PostgreSQL at {self._where}: {e}", code="store_unavailable"
            ) from e

    def _forget_inherited(self) -> None:
        """After fork the parent's sockets are not ours: drop them unused (closing would
        end the parent's sessions) and keep them referenced so they are never collected."""
        if self._pid == os.getpid():
            return
        with self._connections_lock:
            self._inherited.extend(self._connections)
            if self._watcher is not None:
                self._inherited.append(self._watcher)
            self._connections = []
            self._watcher = None
            self._head = None
            self._local = threading.local()
            self._pid = os.getpid()

    def _conn(self) -> psycopg.Connection[Any]:
        if self._closed:
            raise RuntimeError("the store is closed")
        self._forget_inherited()
        conn: psycopg.Connection[Any] | None = getattr(self._local, "conn", None)
        if conn is not None and not conn.closed and not conn.broken:
            return conn
        new = self._connect()
        with self._connections_lock:
            if conn is not None:
                conn.close()
                self._connections.remove(conn)
            self._connections.append(new)
        self._local.conn = new
        return new

    @contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        """Our own errors pass through; database failures become ``StoreError``."""
        try:
            yield
        except PinserverError:
            raise
        except psycopg.Error as e:
            raise StoreError(f"PostgreSQL at {self._where}: cannot {action}: {e}") from e

    def _read(self, action: str, fn: Callable[[psycopg.Connection[Any]], T]) -> T:
        with self._errors(action):
            return fn(self._conn())

    def close(self) -> None:
        """Close every connection this process opened (idempotent)."""
        with self._connections_lock:
            self._closed = True
            if self._pid != os.getpid():
                return
            for conn in self._connections:
                conn.close()
            self._connections = []
            if self._watcher is not None:
                self._watcher.close()
                self._watcher = None
        self._local = threading.local()

    # --- schema ---------------------------------------------------------------------

    def _migrate(self) -> None:
        conn = self._conn()
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATE_LOCK,))
            conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version integer NOT NULL)")
            current = int(
                _one(conn.execute("SELECT coalesce(max(version), 0) FROM schema_version"))[0]
            )
            if current > SCHEMA_VERSION:
                raise StoreError(
                    f"the database at {self._where} has schema version {current}, newer than"
                    f" this pinserver knows ({SCHEMA_VERSION}); upgrade pinserver",
                    code="store_too_new",
                )
            for version in range(current + 1, SCHEMA_VERSION + 1):
                conn.execute(_MIGRATIONS[version - 1].encode())
                conn.execute("INSERT INTO schema_version (version) VALUES (%s)", (version,))
                log.info("migrated %s to schema version %d", self._where, version)

    def schema_version(self) -> int:
        return self._read(
            "read the schema version",
            lambda conn: int(_one(conn.execute("SELECT max(version) FROM schema_version"))[0]),
        )

    # --- head (the hot path) --------------------------------------------------------

    def _query_head(self) -> StoreHead:
        def query(conn: psycopg.Connection[Any]) -> StoreHead:
            row = _one(conn.execute(_HEAD_QUERY))
            return StoreHead(root_version=int(row[0]), manifest_version=int(row[1]))

        return self._read("read the head", query)

    def _is_news(self, now: float) -> bool:
        """True if a publication may have happened since the last check, or if we cannot
        tell (no listener yet, or it broke): then a query decides."""
        if self._watcher is None:
            if now < self._watcher_retry_at:
                return False  # listener down: the TTL alone bounds staleness
            try:
                self._watcher = _HeadWatcher(self.url)
            except psycopg.Error as e:
                log.warning(
                    "cannot LISTEN at %s (%s); checking the head every %ss",
                    self._where,
                    e,
                    self.head_ttl,
                )
                self._watcher_retry_at = now + max(self.head_ttl, 1.0)
            return True  # a new listener may have missed notifications
        try:
            return self._watcher.has_news()
        except psycopg.Error as e:
            log.warning("LISTEN connection to %s lost (%s); reconnecting", self._where, e)
            self._watcher.close()
            self._watcher = None
            return True

    def head(self) -> StoreHead:
        """Latest root and manifest versions (0 when none). Answered from memory unless a
        notification arrived or ``head_ttl`` passed: a poll costs no database round trip.

        While the database cannot be reached, the last head seen is returned (and the
        database tried again every ``head_ttl``), so that polls keep being served what
        this replica already holds; with no head seen yet, ``StoreError`` is raised."""
        if self._closed:
            raise RuntimeError("the store is closed")
        self._forget_inherited()
        with self._head_lock:
            now = time.monotonic()
            news = self._is_news(now)
            if news or self._head is None or now - self._head_checked >= self.head_ttl:
                try:
                    self._head = self._query_head()
                except StoreError as e:
                    if self._last_head is None:
                        raise
                    log.warning("serving the last known head: %s", e.message)
                    self._head = self._last_head
                self._last_head = self._head
                self._head_checked = now
            return self._head

    def _invalidate_head(self) -> None:
        with self._head_lock:
            self._head = None

    # --- writes ---------------------------------------------------------------------

    @contextmanager
    def _write(self, action: str) -> Iterator[psycopg.Connection[Any]]:
        """One transaction holding the write lock; every replica is told at commit."""
        with self._errors(action):
            conn = self._conn()
            try:
                with conn.transaction():
                    conn.execute("SELECT pg_advisory_xact_lock(%s)", (_WRITE_LOCK,))
                    yield conn
                    conn.execute("NOTIFY " + NOTIFY_CHANNEL)
            except pg_errors.UniqueViolation as e:
                # Only reachable if a writer bypassed the advisory lock: the primary key
                # still refuses a second row for one version.
                head = self._query_head()
                is_root = e.diag.table_name == "roots"
                raise VersionConflictError(
                    f"that {'root' if is_root else 'manifest'} version is already stored"
                    f" ({e.diag.message_detail})",
                    latest_version=head.root_version if is_root else head.manifest_version,
                ) from e
            finally:
                self._invalidate_head()

    def install_first_root(self, root: VerifiedRoot, *, now: datetime) -> bool:
        """Install root 1. True if installed, False if the same payload was already there;
        ``VersionConflictError`` if a different root 1 is installed."""
        if root.version != 1:
            raise ValueError(f"the first root must be version 1, not {root.version}")
        with self._write("install root 1") as conn:
            existing = _fetch_root(conn, 1)
            if existing is not None:
                if existing.payload_sha256 == root.envelope.payload_sha256:
                    return False
                raise VersionConflictError(
                    f"the database at {self._where} already has a different root 1"
                    f" (payload sha256 {existing.payload_sha256}); a store serves one trust root",
                    latest_version=1,
                )
            _insert_root(conn, root, now, source="init")
        return True

    def rotate_root(
        self, verify: RootVerifier, *, now: datetime, source: str | None = None
    ) -> StoredRoot:
        with self._write("rotate the root") as conn:
            current = _current_root(conn)
            verified = verify(current)
            if verified.version != current.version + 1:
                raise VersionConflictError(
                    f"root {verified.version} is not the next root after {current.version}",
                    latest_version=current.version,
                )
            return _insert_root(conn, verified, now, source=source)

    def publish_manifest(
        self,
        verify: ManifestVerifier,
        *,
        now: datetime,
        source: str | None = None,
        reason: str | None = None,
    ) -> StoredManifest:
        with self._write("publish the manifest") as conn:
            root = _current_root(conn)
            latest = _fetch_manifest(conn, "ORDER BY version DESC LIMIT 1")
            verified = verify(root, latest)
            latest_version = latest.version if latest else 0
            if verified.version != latest_version + 1:
                raise VersionConflictError(
                    f"manifest {verified.version} is not the next version after {latest_version}",
                    latest_version=latest_version,
                )
            row = _one(
                conn.execute(
                    "INSERT INTO manifests (version, root_version, payload_sha256, published_at,"
                    " keyids, envelope, source, reason) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
                    " RETURNING version, root_version, payload_sha256, published_at, keyids,"
                    " envelope, source, reason",
                    (
                        verified.version,
                        verified.manifest.root_version,
                        verified.payload_sha256,
                        now,
                        sorted(verified.signed_by),
                        verified.raw,
                        source,
                        reason,
                    ),
                )
            )
            return _manifest_from_row(row)

    def add_report(self, *, client_address: str, body: bytes, now: datetime) -> int:
        def insert(conn: psycopg.Connection[Any]) -> int:
            cursor = conn.execute(
                "INSERT INTO reports (received_at, client_address, body)"
                " VALUES (%s, %s, %s) RETURNING id",
                (now, client_address, body),
            )
            return int(_one(cursor)[0])

        return self._read("store the report", insert)

    # --- reads ----------------------------------------------------------------------

    def latest_root(self) -> StoredRoot | None:
        return self._read(
            "read the latest root",
            lambda conn: _fetch_root_where(conn, "ORDER BY version DESC LIMIT 1"),
        )

    def get_root(self, version: int) -> StoredRoot | None:
        return self._read(f"read root {version}", lambda conn: _fetch_root(conn, version))

    def roots(self) -> list[StoredRoot]:
        def query(conn: psycopg.Connection[Any]) -> list[StoredRoot]:
            rows = conn.execute(_SELECT_ROOT + " ORDER BY version").fetchall()
            return [_root_from_row(r) for r in rows]

        return self._read("read the roots", query)

    def latest_manifest(self) -> StoredManifest | None:
        return self._read(
            "read the latest manifest",
            lambda conn: _fetch_manifest(conn, "ORDER BY version DESC LIMIT 1"),
        )

    def get_manifest(self, version: int) -> StoredManifest | None:
        return self._read(
            f"read manifest {version}",
            lambda conn: _fetch_manifest(conn, "WHERE version = %s", (version,)),
        )

    def manifests_after(self, after: int, limit: int) -> list[StoredManifest]:
        def query(conn: psycopg.Connection[Any]) -> list[StoredManifest]:
            rows = conn.execute(
                _SELECT_MANIFEST + " WHERE version > %s ORDER BY version LIMIT %s",
                (after, max(limit, 0)),
            ).fetchall()
            return [_manifest_from_row(r) for r in rows]

        return self._read("read manifests", query)

    def reports(self, *, after: int = 0, limit: int = 100) -> list[StoredReport]:
        def query(conn: psycopg.Connection[Any]) -> list[StoredReport]:
            rows = conn.execute(
                "SELECT id, received_at, client_address, body FROM reports WHERE id > %s"
                " ORDER BY id LIMIT %s",
                (after, max(limit, 0)),
            ).fetchall()
            return [
                StoredReport(
                    id=int(r[0]), received_at=_utc(r[1]), client_address=r[2], body=bytes(r[3])
                )
                for r in rows
            ]

        return self._read("read reports", query)

    # --- integrity ------------------------------------------------------------------

    def check_integrity(self) -> None:
        """Versions contiguous from 1 and every stored payload re-hashed to its recorded
        digest. (PostgreSQL checks its own pages; run ``amcheck`` for the indexes.)"""

        def check(conn: psycopg.Connection[Any]) -> None:
            for table, query in (
                ("roots", "SELECT version, payload_sha256, envelope FROM roots ORDER BY version"),
                (
                    "manifests",
                    "SELECT version, payload_sha256, envelope FROM manifests ORDER BY version",
                ),
            ):
                expected = 1
                for version, digest, envelope in conn.execute(query):
                    if version != expected:
                        raise StoreError(
                            f"{table} at {self._where} skip from version {expected - 1} to"
                            f" {version}",
                            code="store_corrupt",
                        )
                    try:
                        payload = Envelope.from_bytes(bytes(envelope)).payload
                    except FormatError as e:
                        raise StoreError(
                            f"{table} version {version} at {self._where} no longer parses:"
                            f" {e.message}",
                            code="store_corrupt",
                        ) from e
                    if hashlib.sha256(payload).hexdigest() != digest:
                        raise StoreError(
                            f"{table} version {version} at {self._where} does not match its"
                            " recorded payload hash",
                            code="store_corrupt",
                        )
                    expected += 1

        self._read("check integrity", check)


def _one(cursor: psycopg.Cursor[Any]) -> Sequence[Any]:
    row = cursor.fetchone()
    if row is None:
        raise StoreError("the database returned no row where one was expected")
    return cast(Sequence[Any], row)


def _fetch_root_where(
    conn: psycopg.Connection[Any], clause: str, params: tuple[object, ...] = ()
) -> StoredRoot | None:
    row = conn.execute(_SELECT_ROOT + " " + clause, params).fetchone()
    return _root_from_row(row) if row else None


def _fetch_root(conn: psycopg.Connection[Any], version: int) -> StoredRoot | None:
    return _fetch_root_where(conn, "WHERE version = %s", (version,))


def _current_root(conn: psycopg.Connection[Any]) -> StoredRoot:
    root = _fetch_root_where(conn, "ORDER BY version DESC LIMIT 1")
    if root is None:
        raise NotInitialisedError(
            "the store has no root yet; install root 1 with `pinserver init --root ROOT`"
        )
    return root


def _fetch_manifest(
    conn: psycopg.Connection[Any], clause: str, params: tuple[object, ...] = ()
) -> StoredManifest | None:
    row = conn.execute(_SELECT_MANIFEST + " " + clause, params).fetchone()
    return _manifest_from_row(row) if row else None


def _insert_root(
    conn: psycopg.Connection[Any], root: VerifiedRoot, now: datetime, *, source: str | None
) -> StoredRoot:
    row = _one(
        conn.execute(
            "INSERT INTO roots (version, payload_sha256, published_at, keyids, source, envelope)"
            " VALUES (%s, %s, %s, %s, %s, %s)"
            " RETURNING version, envelope, payload_sha256, published_at",
            (
                root.version,
                root.envelope.payload_sha256,
                now,
                sorted(root.envelope.keyids),
                source,
                root.raw,
            ),
        )
    )
    return _root_from_row(row)
