"""The embedded store: one SQLite file in the data directory, in WAL mode.

Writes use ``BEGIN IMMEDIATE``: the write lock is taken before the latest version is
read, so the verification callback runs while no other process (gunicorn worker) can
publish, and concurrent publishers of the same version get one success and
``VersionConflictError`` for the rest. Readers are never blocked (WAL). Rows of
``roots`` and ``manifests`` are append-only, enforced by triggers, so a bug cannot
rewrite history. Each thread gets its own connection (gthread workers).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

from pinserver.documents import format_timestamp, parse_timestamp
from pinserver.envelope import Envelope
from pinserver.errors import FormatError, StoreError, VersionConflictError
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

DATABASE_FILE = "pinserver.sqlite3"
BUSY_TIMEOUT_MS = 15_000

# Each entry upgrades the schema by one version; never edit a released entry, append.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE roots (
        version        INTEGER PRIMARY KEY,
        payload_sha256 TEXT    NOT NULL,
        published_at   TEXT    NOT NULL,
        keyids         TEXT    NOT NULL,
        source         TEXT,
        envelope       BLOB    NOT NULL
    );
    CREATE TABLE manifests (
        version        INTEGER PRIMARY KEY,
        root_version   INTEGER NOT NULL REFERENCES roots(version),
        payload_sha256 TEXT    NOT NULL,
        published_at   TEXT    NOT NULL,
        keyids         TEXT    NOT NULL,
        source         TEXT,
        reason         TEXT,
        envelope       BLOB    NOT NULL
    );
    CREATE TABLE reports (
        id             INTEGER PRIMARY KEY AUTOINCREMENT,
        received_at    TEXT    NOT NULL,
        client_address TEXT    NOT NULL,
        body           BLOB    NOT NULL
    );
    CREATE INDEX reports_by_address ON reports (client_address, received_at);
    CREATE TRIGGER roots_append_only_u BEFORE UPDATE ON roots
        BEGIN SELECT RAISE(ABORT, 'roots are append-only'); END;
    CREATE TRIGGER roots_append_only_d BEFORE DELETE ON roots
        BEGIN SELECT RAISE(ABORT, 'roots are append-only'); END;
    CREATE TRIGGER manifests_append_only_u BEFORE UPDATE ON manifests
        BEGIN SELECT RAISE(ABORT, 'manifests are append-only'); END;
    CREATE TRIGGER manifests_append_only_d BEFORE DELETE ON manifests
        BEGIN SELECT RAISE(ABORT, 'manifests are append-only'); END;
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)

_ROOT_COLUMNS = "version, envelope, payload_sha256, published_at"
_MANIFEST_COLUMNS = (
    "version, root_version, payload_sha256, published_at, keyids, envelope, source, reason"
)


def _corrupt(path: Path, error: Exception) -> StoreError:
    return StoreError(
        f"the store {path} is damaged ({error}); restore it from a backup or from an"
        " export (`pinserver export`)",
        code="store_corrupt",
    )


def _root(row: sqlite3.Row) -> StoredRoot:
    return StoredRoot(
        version=row[0],
        envelope=bytes(row[1]),
        payload_sha256=row[2],
        published_at=parse_timestamp(row[3], field="published_at"),
    )


def _manifest(row: sqlite3.Row) -> StoredManifest:
    return StoredManifest(
        version=row[0],
        root_version=row[1],
        payload_sha256=row[2],
        published_at=parse_timestamp(row[3], field="published_at"),
        keyids=tuple(json.loads(row[4])),
        envelope=bytes(row[5]),
        source=row[6],
        reason=row[7],
    )


class SQLiteStore:
    """:class:`pinserver.store.base.Store` on one SQLite file (``DATA_DIR/pinserver.sqlite3``)."""

    def __init__(self, data_dir: str | Path, *, create: bool = True) -> None:
        self.data_dir = Path(data_dir)
        self.path = self.data_dir / DATABASE_FILE
        if not create and not self.path.exists():
            raise NotInitialisedError(
                f"no store at {self.path}; create one with `pinserver init --root ROOT"
                f" --data {self.data_dir}`"
            )
        if self.path.exists() and self.path.stat().st_size == 0:
            # SQLite writes the header before anything else, so an existing empty file
            # is a truncated store, not a new one: starting afresh would drop history.
            raise _corrupt(self.path, sqlite3.DatabaseError("the file is empty (truncated?)"))
        if not self.data_dir.exists():
            # The store holds client addresses (reports, publish events): not for
            # every local user to read.
            self.data_dir.mkdir(parents=True, mode=0o750)
        new_store = not self.path.exists()
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._migrate()
        if new_store:
            for path in (self.path, *self.data_dir.glob(DATABASE_FILE + "-*")):
                path.chmod(0o640)

    # --- connections and transactions ---------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            try:
                conn = sqlite3.connect(
                    self.path,
                    timeout=BUSY_TIMEOUT_MS / 1000,
                    isolation_level=None,
                    check_same_thread=False,
                )
                conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
                conn.execute("PRAGMA journal_mode = WAL")
                conn.execute("PRAGMA synchronous = FULL")
                conn.execute("PRAGMA foreign_keys = ON")
            except (sqlite3.DatabaseError, UnicodeDecodeError) as e:
                raise _corrupt(self.path, e) from e
            self._local.conn = conn
            with self._lock:
                self._connections.append(conn)
        return conn

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction holding SQLite's write lock from its first statement."""
        conn = self._connection()
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.DatabaseError as e:
            raise StoreError(f"cannot start a write transaction: {e}") from e
        try:
            yield conn
        except sqlite3.DatabaseError as e:
            _rollback(conn)
            raise StoreError(f"the store {self.path} cannot be written: {e}") from e
        except BaseException:
            _rollback(conn)
            raise
        try:
            conn.execute("COMMIT")
        except sqlite3.DatabaseError as e:
            # SQLite may already have rolled back (SQLITE_FULL does): nothing to undo then.
            _rollback(conn)
            raise StoreError(f"the store {self.path} cannot be written: commit failed: {e}") from e

    def _read(self, sql: str, params: tuple[object, ...] = ()) -> list[sqlite3.Row]:
        try:
            return self._connection().execute(sql, params).fetchall()
        except (sqlite3.DatabaseError, UnicodeDecodeError) as e:
            raise _corrupt(self.path, e) from e

    def _migrate(self) -> None:
        try:
            current = (
                self._connection()
                .execute("SELECT name FROM sqlite_master WHERE name = 'schema_version'")
                .fetchone()
                and self._connection()
                .execute("SELECT MAX(version) FROM schema_version")
                .fetchone()[0]
            )
            if current == SCHEMA_VERSION:
                return  # the common case: no write transaction at all
            with self._write() as conn:
                conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
                row = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
                current = row[0] or 0
                if current > SCHEMA_VERSION:
                    raise StoreError(
                        f"the store {self.path} has schema version {current}, newer than this"
                        f" pinserver knows ({SCHEMA_VERSION}); upgrade pinserver",
                        code="store_too_new",
                    )
                for version in range(current + 1, SCHEMA_VERSION + 1):
                    for statement in _statements(MIGRATIONS[version - 1]):
                        conn.execute(statement)
                    conn.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))
        except (sqlite3.DatabaseError, UnicodeDecodeError) as e:
            raise _corrupt(self.path, e) from e

    def schema_version(self) -> int:
        return int(self._read("SELECT MAX(version) FROM schema_version")[0][0])

    def close(self) -> None:
        with self._lock:
            for conn in self._connections:
                conn.close()
            self._connections.clear()
        self._local = threading.local()

    # --- reads --------------------------------------------------------------------------

    def head(self) -> StoreHead:
        row = self._read(
            "SELECT (SELECT COALESCE(MAX(version), 0) FROM roots),"
            " (SELECT COALESCE(MAX(version), 0) FROM manifests)"
        )[0]
        return StoreHead(root_version=row[0], manifest_version=row[1])

    def latest_root(self) -> StoredRoot | None:
        rows = self._read(f"SELECT {_ROOT_COLUMNS} FROM roots ORDER BY version DESC LIMIT 1")  # noqa: S608 (constant column list)
        return _root(rows[0]) if rows else None

    def get_root(self, version: int) -> StoredRoot | None:
        rows = self._read(f"SELECT {_ROOT_COLUMNS} FROM roots WHERE version = ?", (version,))  # noqa: S608 (constant column list)
        return _root(rows[0]) if rows else None

    def roots(self) -> list[StoredRoot]:
        return [_root(r) for r in self._read(f"SELECT {_ROOT_COLUMNS} FROM roots ORDER BY version")]  # noqa: S608 (constant column list)

    def latest_manifest(self) -> StoredManifest | None:
        rows = self._read(
            f"SELECT {_MANIFEST_COLUMNS} FROM manifests ORDER BY version DESC LIMIT 1"  # noqa: S608 (constant column list)
        )
        return _manifest(rows[0]) if rows else None

    def get_manifest(self, version: int) -> StoredManifest | None:
        rows = self._read(
            f"SELECT {_MANIFEST_COLUMNS} FROM manifests WHERE version = ?",  # noqa: S608
            (version,),
        )
        return _manifest(rows[0]) if rows else None

    def manifests_after(self, after: int, limit: int) -> list[StoredManifest]:
        rows = self._read(
            f"SELECT {_MANIFEST_COLUMNS} FROM manifests WHERE version > ? ORDER BY version LIMIT ?",  # noqa: S608 (constant column list)
            (after, limit),
        )
        return [_manifest(r) for r in rows]

    def reports(self, *, after: int = 0, limit: int = 100) -> list[StoredReport]:
        rows = self._read(
            "SELECT id, received_at, client_address, body FROM reports WHERE id > ?"
            " ORDER BY id LIMIT ?",
            (after, limit),
        )
        return [
            StoredReport(
                id=r[0],
                received_at=parse_timestamp(r[1], field="received_at"),
                client_address=r[2],
                body=bytes(r[3]),
            )
            for r in rows
        ]

    # --- writes -------------------------------------------------------------------------

    def install_first_root(self, root: VerifiedRoot, *, now: datetime) -> bool:
        if root.version != 1:
            raise ValueError(f"the first root must be version 1, not {root.version}")
        with self._write() as conn:
            row = conn.execute("SELECT payload_sha256 FROM roots WHERE version = 1").fetchone()
            if row is not None:
                if row[0] == root.envelope.payload_sha256:
                    return False
                raise VersionConflictError(
                    f"the store {self.path} already has a different root 1"
                    f" (payload sha256 {row[0]}); a store serves one trust root",
                    latest_version=1,
                )
            conn.execute(
                "INSERT INTO roots (version, payload_sha256, published_at, keyids, source,"
                " envelope) VALUES (1, ?, ?, ?, ?, ?)",
                (
                    root.envelope.payload_sha256,
                    format_timestamp(now),
                    json.dumps(sorted(root.envelope.keyids)),
                    "init",
                    root.raw,
                ),
            )
        return True

    def _current_root(self, conn: sqlite3.Connection) -> StoredRoot:
        row = conn.execute(
            f"SELECT {_ROOT_COLUMNS} FROM roots ORDER BY version DESC LIMIT 1"  # noqa: S608 (constant column list)
        ).fetchone()
        if row is None:
            raise NotInitialisedError(
                "the store has no root yet; install root 1 with `pinserver init --root ROOT`"
            )
        return _root(row)

    def rotate_root(
        self, verify: RootVerifier, *, now: datetime, source: str | None = None
    ) -> StoredRoot:
        with self._write() as conn:
            current = self._current_root(conn)
            verified = verify(current)
            if verified.version != current.version + 1:
                raise VersionConflictError(
                    f"root {verified.version} is not the next root after {current.version}",
                    latest_version=current.version,
                )
            stored = StoredRoot(
                version=verified.version,
                envelope=verified.raw,
                payload_sha256=verified.envelope.payload_sha256,
                published_at=now,
            )
            conn.execute(
                "INSERT INTO roots (version, payload_sha256, published_at, keyids, source,"
                " envelope) VALUES (?, ?, ?, ?, ?, ?)",
                (
                    stored.version,
                    stored.payload_sha256,
                    format_timestamp(now),
                    json.dumps(sorted(verified.envelope.keyids)),
                    source,
                    stored.envelope,
                ),
            )
        return stored

    def publish_manifest(
        self,
        verify: ManifestVerifier,
        *,
        now: datetime,
        source: str | None = None,
        reason: str | None = None,
    ) -> StoredManifest:
        with self._write() as conn:
            root = self._current_root(conn)
            row = conn.execute(
                f"SELECT {_MANIFEST_COLUMNS} FROM manifests ORDER BY version DESC LIMIT 1"  # noqa: S608 (constant column list)
            ).fetchone()
            latest = _manifest(row) if row else None
            verified = verify(root, latest)
            latest_version = latest.version if latest else 0
            if verified.version != latest_version + 1:
                raise VersionConflictError(
                    f"manifest {verified.version} is not the next version after {latest_version}",
                    latest_version=latest_version,
                )
            stored = StoredManifest(
                version=verified.version,
                root_version=verified.manifest.root_version,
                payload_sha256=verified.payload_sha256,
                published_at=now,
                keyids=tuple(sorted(verified.signed_by)),
                envelope=verified.raw,
                source=source,
                reason=reason,
            )
            conn.execute(
                f"INSERT INTO manifests ({_MANIFEST_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",  # noqa: S608 (constant column list)
                (
                    stored.version,
                    stored.root_version,
                    stored.payload_sha256,
                    format_timestamp(now),
                    json.dumps(list(stored.keyids)),
                    stored.envelope,
                    source,
                    reason,
                ),
            )
        return stored

    def add_report(self, *, client_address: str, body: bytes, now: datetime) -> int:
        with self._write() as conn:
            cursor = conn.execute(
                "INSERT INTO reports (received_at, client_address, body) VALUES (?, ?, ?)",
                (format_timestamp(now), client_address, body),
            )
            return int(cursor.lastrowid or 0)

    # --- integrity ----------------------------------------------------------------------

    def check_integrity(self) -> None:
        try:
            result = self._read("PRAGMA integrity_check")
            if [tuple(r) for r in result] != [("ok",)]:
                detail = "; ".join(str(r[0]) for r in result[:5])
                raise _corrupt(self.path, sqlite3.DatabaseError(detail))
            for table in ("roots", "manifests"):
                expected = 1
                for version, digest, envelope in self._connection().execute(
                    f"SELECT version, payload_sha256, envelope FROM {table} ORDER BY version"  # noqa: S608
                ):
                    if version != expected:
                        raise StoreError(
                            f"{table} of {self.path} skip from version {expected - 1} to {version}",
                            code="store_corrupt",
                        )
                    payload = Envelope.from_bytes(bytes(envelope)).payload
                    if hashlib.sha256(payload).hexdigest() != digest:
                        raise StoreError(
                            f"{table} version {version} in {self.path} does not match its"
                            " recorded payload hash",
                            code="store_corrupt",
                        )
                    expected += 1
        except (sqlite3.DatabaseError, UnicodeDecodeError) as e:
            raise _corrupt(self.path, e) from e
        except FormatError as e:
            raise StoreError(
                f"a stored envelope in {self.path} no longer parses: {e.message}",
                code="store_corrupt",
            ) from e


def _rollback(conn: sqlite3.Connection) -> None:
    """Roll back if a transaction is still open; a failed COMMIT may have ended it."""
    if conn.in_transaction:
        conn.execute("ROLLBACK")


def _statements(script: str) -> Iterator[str]:
    """Split a migration into statements (``executescript`` would commit on its own)."""
    buffer = ""
    for line in script.splitlines(keepends=True):
        buffer += line
        if sqlite3.complete_statement(buffer):
            if buffer.strip():
                yield buffer.strip()
            buffer = ""
    if buffer.strip():
        yield buffer.strip()
