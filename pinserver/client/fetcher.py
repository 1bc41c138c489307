"""The network behind an interface: one GET, capped in bytes and in time.

:class:`Fetcher` is what the refresh orchestration talks to; the requests-based
implementation is private. Every failure (connection, TLS, HTTP status, size
cap, deadline) comes out as a :class:`~pinserver.errors.FetchError`, whose
``code`` and ``http_status`` say which. A fetch failure is about delivery, never
about content: the caller may try another mirror, whose answer is verified all
the same.
"""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass

import requests
import urllib3.exceptions

from pinserver import __version__
from pinserver.envelope import MAX_ENVELOPE_BYTES
from pinserver.errors import FetchError

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 30.0
USER_AGENT = f"pinserver-client/{__version__}"
_READ_CHUNK = 64 * 1024


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


class _RequestsFetcher(Fetcher):
    """requests with streaming reads: the body is read in small pieces, each with the
    socket timeout set to what is left of the deadline, so a trickled body ends in a
    ``FetchError`` at ``timeout`` seconds rather than hanging (requests' own read
    timeout only bounds each single read)."""

    def __init__(self, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        self.timeout = timeout
        self._session = requests.Session()
        self._session.headers["User-Agent"] = USER_AGENT

    def close(self) -> None:
        self._session.close()

    def _fetch(self, url: str, *, etag: str | None, max_bytes: int) -> FetchResponse:
        deadline = time.monotonic() + self.timeout
        headers = {"Accept": "application/json", "Accept-Encoding": "identity"}
        if etag:
            headers["If-None-Match"] = etag
        try:
            response = self._session.get(
                url, headers=headers, stream=True, timeout=(self.timeout, self.timeout)
            )
        except requests.Timeout as e:
            raise FetchError(
                f"GET {url}: no answer within {self.timeout:g} s", code="fetch_timeout"
            ) from e
        with response:
            if response.status_code == 304:
                return FetchResponse(304, b"", response.headers.get("ETag") or etag)
            if response.status_code != 200:
                raise FetchError(
                    f"GET {url} answered HTTP {response.status_code}",
                    http_status=response.status_code,
                )
            body = _read_capped(response, url, deadline=deadline, max_bytes=max_bytes)
            return FetchResponse(200, body, response.headers.get("ETag"))


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
