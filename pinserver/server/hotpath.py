"""The polling hot path: ``GET /v1/manifest.json`` from pre-serialised bytes.

Every client poll is one conditional request for the latest manifest, so this path
is answered by a thin WSGI layer in front of Flask: no request context, no database
query, no JSON encoding once warm. Each worker keeps the latest envelope bytes, a
strong ETag and ready-made header lists in :class:`ManifestCache`.

Staleness. A worker that accepts a publication rewrites a small *generation file*
in the data directory after the commit. Every poll ``stat()``\\ s that file (about
a microsecond), so on one machine a publication on any worker is served by every
worker from the next request on; when the file moved, the worker asks the store
itself (not a head the store may have memoised). As a backstop (a worker killed
between commit and rewrite, a file system with coarse timestamps, replicas on other
machines sharing a PostgreSQL store) each worker also asks the store for its head at
most once every ``check_interval`` seconds: 1 s with SQLite, where that is the
worst-case staleness bound; 0 with PostgreSQL, whose ``head()`` follows LISTEN
notifications without a round trip (milliseconds; at worst the store's ``head_ttl``).
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pinserver.store.base import Store, StoredManifest, StoreHead

logger = logging.getLogger(__name__)

MANIFEST_PATH = "/v1/manifest.json"
GENERATION_FILE = "generation"
# Latest manifest: caches may keep it briefly but must revalidate; an emergency pin
# rotation should reach clients within a minute of their next poll.
LATEST_CACHE_CONTROL = "public, max-age=60, must-revalidate"

_Stamp = tuple[int, int, int] | None


@dataclass(frozen=True)
class CachedManifest:
    """The latest manifest as ready-to-send bytes and headers."""

    head: StoreHead
    body: bytes | None
    etag: str | None
    headers_200: list[tuple[str, str]]
    headers_304: list[tuple[str, str]]


def etag_for(envelope: bytes) -> str:
    """A strong ETag over the exact bytes served (the export uses the same)."""
    return '"' + hashlib.sha256(envelope).hexdigest()[:32] + '"'


def _build(head: StoreHead, envelope: bytes | None, version: int) -> CachedManifest:
    if envelope is None:
        return CachedManifest(head, None, None, [], [])
    etag = etag_for(envelope)
    common = [
        ("ETag", etag),
        ("Cache-Control", LATEST_CACHE_CONTROL),
        ("X-Pinserver-Manifest-Version", str(version)),
    ]
    return CachedManifest(
        head=head,
        body=envelope,
        etag=etag,
        headers_200=[
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(envelope))),
            *common,
        ],
        headers_304=common,
    )


class ManifestCache:
    """Per-worker copy of the latest manifest, refreshed when the store moves on."""

    def __init__(
        self,
        store: Store,
        *,
        generation_file: Path | None,
        check_interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._generation_file = generation_file
        self._check_interval = check_interval
        self._clock = clock
        self._lock = threading.Lock()
        self._entry: CachedManifest | None = None
        self._stamp: _Stamp = None
        self._next_check = 0.0

    def _read_stamp(self) -> _Stamp:
        if self._generation_file is None:
            return None
        try:
            st = os.stat(self._generation_file)
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_ino, st.st_size)

    def current(self) -> CachedManifest:
        """The cached entry, reloaded first if the generation file or the TTL says so."""
        entry = self._entry
        if (
            entry is not None
            and self._clock() < self._next_check
            and self._read_stamp() == self._stamp
        ):
            return entry
        return self.refresh()

    def refresh(self, *, force: bool = False) -> CachedManifest:
        with self._lock:
            stamp = self._read_stamp()
            entry = self._entry
            if (
                not force
                and entry is not None
                and stamp == self._stamp
                and self._clock() < self._next_check
            ):
                return entry  # another thread refreshed while we waited for the lock
            latest: StoredManifest | None = None
            if entry is not None and stamp != self._stamp:
                # Another worker here committed: ask the store, not a memoised head.
                head, latest = self._query_store()
            else:
                head = self._store.head()
            if force or entry is None or head != entry.head:
                if latest is None and head.manifest_version:
                    latest = self._store.latest_manifest()
                entry = _build(
                    head,
                    latest.envelope if latest else None,
                    latest.version if latest else 0,
                )
                self._entry = entry
            self._stamp = stamp
            self._next_check = self._clock() + self._check_interval
            return entry

    def _query_store(self) -> tuple[StoreHead, StoredManifest | None]:
        latest = self._store.latest_manifest()
        root = self._store.latest_root()
        head = StoreHead(
            root_version=root.version if root else 0,
            manifest_version=latest.version if latest else 0,
        )
        return head, latest

    def bump(self) -> None:
        """Tell every worker on this machine that the store changed (after a commit)."""
        if self._generation_file is not None:
            head = self._store.head()
            tmp = self._generation_file.with_name(f".{GENERATION_FILE}.{os.getpid()}.tmp")
            try:
                tmp.write_text(f"{head.root_version} {head.manifest_version} {time.time_ns()}\n")
                os.replace(tmp, self._generation_file)
            except OSError:
                logger.warning(
                    "cannot write %s; other workers catch up within %.1f s",
                    self._generation_file,
                    self._check_interval,
                )
        self.refresh(force=True)


def _matches(if_none_match: str, etag: str) -> bool:
    """RFC 9110 weak comparison, as If-None-Match requires."""
    if if_none_match.strip() == "*":
        return True
    for raw in if_none_match.split(","):
        candidate = raw.strip()
        if candidate.startswith("W/"):
            candidate = candidate[2:]
        if candidate == etag:
            return True
    return False


class HotPathMiddleware:
    """Answers ``GET``/``HEAD /v1/manifest.json`` itself; everything else goes to Flask."""

    def __init__(
        self,
        app: Callable[..., Iterable[bytes]],
        cache: ManifestCache,
        *,
        on_poll: Callable[[bool], None] | None = None,
    ) -> None:
        self.app = app
        self.cache = cache
        self.on_poll = on_poll

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        if environ.get("PATH_INFO") != MANIFEST_PATH:
            return self.app(environ, start_response)
        method = environ.get("REQUEST_METHOD")
        if method not in ("GET", "HEAD"):
            return self.app(environ, start_response)
        try:
            entry = self.cache.current()
        except Exception:  # the Flask view reports store failures as JSON errors
            logger.exception("manifest cache refresh failed")
            return self.app(environ, start_response)
        if entry.body is None or entry.etag is None:
            return self.app(environ, start_response)  # no manifest yet: Flask's 404
        if_none_match = environ.get("HTTP_IF_NONE_MATCH")
        if if_none_match and _matches(if_none_match, entry.etag):
            if self.on_poll is not None:
                self.on_poll(True)
            start_response("304 Not Modified", entry.headers_304)
            return []
        if self.on_poll is not None:
            self.on_poll(False)
        start_response("200 OK", entry.headers_200)
        return [] if method == "HEAD" else [entry.body]
