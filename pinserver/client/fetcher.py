"""The network behind an interface: one GET, capped in bytes and in time.

:class:`Fetcher` is what the refresh orchestration talks to; the requests-based
implementation is private. Every failure (connection, TLS, HTTP status, size
cap, deadline) comes out as a :class:`~pinserver.errors.FetchError`, whose
``code`` and ``http_status`` say which. A fetch failure is about delivery, never
about content: the caller may try another mirror, whose answer is verified all
the same.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

import requests
import urllib3.exceptions
from requests.adapters import HTTPAdapter
from urllib3.poolmanager import PoolManager

from pinserver import __version__
from pinserver.envelope import MAX_ENVELOPE_BYTES
from pinserver.errors import FetchError

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 30.0
USER_AGENT = f"pinserver-client/{__version__}"
_READ_CHUNK = 64 * 1024
MAX_REDIRECTS = 5
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})


@dataclass(frozen=True)
class FetchResponse:
    """A successful GET: ``status`` is 200 (``body`` holds the bytes) or 304 (empty)."""

    status: int
    body: bytes
    etag: str | None

    @property
    def not_modified(self) -> bool:
        return self.status == 304


class Fetcher(ABC):
    """Fetches one URL. Subclasses implement :meth:`_fetch`; :meth:`fetch` guarantees
    that nothing but :class:`FetchError` escapes."""

    def fetch(
        self, url: str, *, etag: str | None = None, max_bytes: int = MAX_ENVELOPE_BYTES
    ) -> FetchResponse:
        """GET ``url`` (conditional on ``etag`` when given).

        Raises:
            FetchError: network failure, status other than 200/304 (``http_status``
                set; 404 included), more than ``max_bytes``, or the deadline passed.
        """
        try:
            return self._fetch(url, etag=etag, max_bytes=max_bytes)
        except FetchError:
            raise
        except (OSError, requests.RequestException, urllib3.exceptions.HTTPError) as e:
            raise FetchError(f"GET {url} failed: {e}") from e

    @abstractmethod
    def _fetch(self, url: str, *, etag: str | None, max_bytes: int) -> FetchResponse:
        """Do the GET; may raise any exception, :meth:`fetch` wraps it."""

    def close(self) -> None:  # noqa: B027 - optional hook, most fetchers hold nothing
        """Release connections."""


class _DeadlineAdapter(HTTPAdapter):
    """An HTTPAdapter that remembers which connections each thread has taken from its
    pools, so that a watchdog can cut them when the thread's deadline passes."""

    def __init__(self) -> None:
        self._in_use: dict[int, set[Any]] = {}
        self._in_use_lock = threading.Lock()
        super().__init__()

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self._install(self.poolmanager)

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> PoolManager:
        manager: PoolManager = super().proxy_manager_for(proxy, **proxy_kwargs)
        self._install(manager)
        return manager

    def _install(self, manager: PoolManager) -> None:
        adapter = self
        classes = dict(manager.pool_classes_by_scheme)
        for scheme, base in classes.items():
            if getattr(base, "_deadline_adapter", None) is self:
                continue

            def _get_conn(pool: Any, timeout: float | None = None, *, _base: Any = base) -> Any:
                conn = _base._get_conn(pool, timeout)
                adapter._track(conn)
                return conn

            classes[scheme] = type(
                f"Deadline{base.__name__}",
                (base,),
                {"_get_conn": _get_conn, "_deadline_adapter": self},
            )
        manager.pool_classes_by_scheme = classes

    def _track(self, conn: Any) -> None:
        with self._in_use_lock:
            tracked = self._in_use.get(threading.get_ident())
            if tracked is not None:
                tracked.add(conn)

    @contextlib.contextmanager
    def deadline(self, seconds: float) -> Iterator[threading.Event]:
        """Within the block, every connection this thread takes is shut down once
        ``seconds`` have passed; the event says whether that happened."""
        ident = threading.get_ident()
        fired = threading.Event()
        with self._in_use_lock:
            self._in_use[ident] = set()

        def cut() -> None:
            with self._in_use_lock:
                conns = list(self._in_use.get(ident, ()))
                fired.set()
            for conn in conns:
                sock = getattr(conn, "sock", None)
                if sock is not None:
                    with contextlib.suppress(OSError):
                        # The plain socket call, also for TLS sockets: it wakes a blocked
                        # read (handshake, headers or body) without touching TLS state.
                        socket.socket.shutdown(sock, socket.SHUT_RDWR)

        timer = threading.Timer(seconds, cut)
        timer.daemon = True
        timer.start()
        try:
            yield fired
        finally:
            timer.cancel()
            with self._in_use_lock:
                self._in_use.pop(ident, None)


class _RequestsFetcher(Fetcher):
    """requests with streaming reads under one deadline for the whole exchange.

    requests' own read timeout bounds each single read, so a mirror trickling its
    status line, headers, redirects or body could hold a refresh for ever. Here a
    watchdog shuts the connection down at ``timeout`` seconds, whatever stage the
    exchange is at, and the body is read in small pieces with the socket timeout set
    to what is left. Redirects are followed here, at most ``MAX_REDIRECTS``, to http
    or https only, and the body of a 3xx is never read (requests would read and
    decompress it whole, without cap)."""

    def __init__(self, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        self.timeout = timeout
        self._adapter = _DeadlineAdapter()
        self._session = requests.Session()
        self._session.headers["User-Agent"] = USER_AGENT
        self._session.mount("http://", self._adapter)
        self._session.mount("https://", self._adapter)

    def close(self) -> None:
        self._session.close()

    def _fetch(self, url: str, *, etag: str | None, max_bytes: int) -> FetchResponse:
        deadline = time.monotonic() + self.timeout
        with self._adapter.deadline(self.timeout) as fired:
            try:
                return self._fetch_by_deadline(
                    url, etag=etag, max_bytes=max_bytes, deadline=deadline
                )
            except FetchError:
                if fired.is_set():
                    raise self._timed_out(url) from None
                raise
            except (OSError, requests.RequestException, urllib3.exceptions.HTTPError) as e:
                if fired.is_set():
                    raise self._timed_out(url) from e
                raise

    def _timed_out(self, url: str) -> FetchError:
        return FetchError(
            f"GET {url}: no complete answer within {self.timeout:g} s; abandoned",
            code="fetch_timeout",
        )

    def _fetch_by_deadline(
        self, url: str, *, etag: str | None, max_bytes: int, deadline: float
    ) -> FetchResponse:
        headers = {"Accept": "application/json", "Accept-Encoding": "identity"}
        if etag:
            headers["If-None-Match"] = etag
        first_url = url
        for _ in range(MAX_REDIRECTS + 1):
            remaining = max(deadline - time.monotonic(), 0.001)
            try:
                response = send_without_redirects(
                    self._session, "GET", url, headers=headers, timeout=remaining
                )
            except requests.Timeout as e:
                raise self._timed_out(url) from e
            if response.status_code not in _REDIRECT_STATUSES:
                break
            location = response.headers.get("Location")
            response.close()  # never read a redirect's body
            if not location:
                raise FetchError(f"GET {url}: HTTP {response.status_code} without a Location")
            target = urljoin(url, location)
            if urlsplit(target).scheme not in ("http", "https"):
                raise FetchError(f"GET {url}: redirect to {target!r} refused (http/https only)")
            url = target
        else:
            raise FetchError(f"GET {first_url}: more than {MAX_REDIRECTS} redirects")
        with response:
            if response.status_code == 304:
                if not etag:
                    # Not an answer to an unconditional request: a broken or hostile
                    # mirror; another mirror may have the manifest.
                    raise FetchError(
                        f"GET {url} answered 304 to a request without If-None-Match",
                        http_status=304,
                    )
                return FetchResponse(304, b"", response.headers.get("ETag") or etag)
            if response.status_code != 200:
                raise FetchError(
                    f"GET {url} answered HTTP {response.status_code}",
                    http_status=response.status_code,
                )
            body = _read_capped(response, url, deadline=deadline, max_bytes=max_bytes)
            return FetchResponse(200, body, response.headers.get("ETag"))


def send_without_redirects(
    session: requests.Session,
    method: str,
    url: str,
    *,
    timeout: float,
    headers: dict[str, str] | None = None,
    json: Any = None,
) -> requests.Response:
    """One request through ``session``'s adapter, streamed, with the environment's
    proxy and CA settings, and without ``Session.send``: even with
    ``allow_redirects=False`` that reads (and decompresses) the whole body of a 3xx
    answer, without a cap, to prepare the redirect it will not follow."""
    prepared = session.prepare_request(
        requests.Request(method, url, headers=headers or {}, json=json)
    )
    target = prepared.url or url
    settings = session.merge_environment_settings(target, {}, True, None, None)
    return session.get_adapter(target).send(
        prepared,
        stream=True,
        timeout=(timeout, timeout),
        verify=settings["verify"],
        cert=settings["cert"],
        proxies=settings["proxies"],
    )


def _read_capped(
    response: requests.Response, url: str, *, deadline: float, max_bytes: int
) -> bytes:
    declared = response.headers.get("Content-Length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise FetchError(
            f"GET {url}: body of {declared} bytes is over the {max_bytes}-byte cap",
            code="response_too_large",
        )
    encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        # We asked for identity; a compressed body could expand past any cap.
        raise FetchError(f"GET {url}: unrequested Content-Encoding {encoding!r}")
    raw = response.raw
    chunks: list[bytes] = []
    total = 0
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise FetchError(
                f"GET {url}: body still arriving after the time cap; abandoned",
                code="fetch_timeout",
            )
        sock = getattr(raw.connection, "sock", None)
        if sock is not None:
            sock.settimeout(remaining)
        try:
            data = raw.read1(_READ_CHUNK, decode_content=False)
        except (urllib3.exceptions.ReadTimeoutError, TimeoutError) as e:
            raise FetchError(
                f"GET {url}: body still arriving after the time cap; abandoned",
                code="fetch_timeout",
            ) from e
        if not data:
            return b"".join(chunks)
        total += len(data)
        if total > max_bytes:
            raise FetchError(
                f"GET {url}: body is over the {max_bytes}-byte cap; abandoned",
                code="response_too_large",
            )
        chunks.append(data)
