"""Pin-validation failure reports, sent in the background and rate-limited.

A report never blocks the request that triggered it: it is posted from a daemon
thread. At most one report per (host, observed chain) per hour leaves a client,
as SPEC section 7 asks, so a misconfigured host cannot turn every client into a
flood against the report endpoint.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

import requests

from pinserver.client.fetcher import USER_AGENT, send_without_redirects
from pinserver.documents import format_timestamp

logger = logging.getLogger(__name__)

REPORT_INTERVAL = timedelta(hours=1)
REPORT_TIMEOUT = 10.0
MAX_REPORTS_IN_FLIGHT = 8


def build_report(
    *,
    host: str,
    port: int,
    observed: Sequence[str],
    manifest_version: int | None,
    mode: str,
    time: datetime,
) -> dict[str, Any]:
    """The JSON body of ``POST /v1/reports``."""
    return {
        "host": host,
        "port": port,
        "observed": list(observed),
        "manifest_version": manifest_version,
        "mode": mode,
        "time": format_timestamp(time.replace(microsecond=0)),
    }


class Reporter:
    """Posts reports from background threads; remembers what it sent for an hour."""

    def __init__(
        self,
        *,
        clock: Callable[[], datetime],
        interval: timedelta = REPORT_INTERVAL,
        timeout: float = REPORT_TIMEOUT,
    ) -> None:
        self._clock = clock
        self._interval = interval
        self._timeout = timeout
        self._sent: dict[tuple[str, tuple[str, ...]], datetime] = {}
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    def submit(
        self, report_uri: str, *, host: str, port: int, observed: Sequence[str], **fields: Any
    ) -> bool:
        """Queue a report unless one for this host and chain went out within the hour.

        Returns True when a report was queued.
        """
        now = self._clock()
        key = (host, tuple(observed))
        with self._lock:
            last = self._sent.get(key)
            if last is not None and now - last < self._interval:
                return False
            self._threads = [t for t in self._threads if t.is_alive()]
            if len(self._threads) >= MAX_REPORTS_IN_FLIGHT:
                # A stalled report endpoint must not pile up threads without end.
                logger.warning(
                    "%d pin reports still in flight; report for %s dropped",
                    len(self._threads),
                    host,
                )
                return False
            self._sent[key] = now
            for stale in [k for k, t in self._sent.items() if now - t >= self._interval]:
                del self._sent[stale]
            body = build_report(host=host, port=port, observed=observed, time=now, **fields)
            thread = threading.Thread(
                target=self._post, args=(report_uri, body), name="pinserver-report", daemon=True
            )
            self._threads.append(thread)
        thread.start()
        return True

    def _post(self, report_uri: str, body: dict[str, Any]) -> None:
        try:
            with requests.Session() as session:
                # Only the status is wanted: the answer's body is never read and
                # redirects are not followed (a hostile endpoint could otherwise
                # stream into memory or bounce the report elsewhere).
                response = send_without_redirects(
                    session,
                    "POST",
                    report_uri,
                    json=body,
                    timeout=self._timeout,
                    headers={"User-Agent": USER_AGENT},
                )
                response.close()
            if response.status_code >= 300:
                logger.warning(
                    "pin report to %s answered HTTP %s", report_uri, response.status_code
                )
        except Exception as e:  # a report must never take the application down
            logger.warning("could not send pin report to %s: %s", report_uri, e)

    def flush(self, timeout: float = REPORT_TIMEOUT) -> None:
        """Wait (up to ``timeout`` seconds each) for reports still being sent."""
        with self._lock:
            threads = list(self._threads)
        for thread in threads:
            thread.join(timeout)
