"""gunicorn access log as one JSON object per line.

Fields: time, remote, method, path, query, status, bytes, duration_ms, user_agent,
pid. Never the Authorization header or any other credential.

Successful polls (``GET``/``HEAD /v1/manifest.json`` answered 200 or 304) are not
logged unless ``PINSERVER_ACCESS_LOG_POLLS=1``: they are almost all of the traffic,
``/metrics`` counts them (``pinserver_polls_total``), and writing a line for each cost
about a quarter of the server's CPU per poll. Everything else is logged, polls that
failed included. The check runs before any field is built, so a skipped poll costs a
dictionary lookup and a comparison.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from typing import Any

from gunicorn.glogging import Logger

from pinserver.server.hotpath import MANIFEST_PATH

LOG_POLLS_SETTING = "PINSERVER_ACCESS_LOG_POLLS"
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"", "0", "false", "no", "off"})
_POLL_METHODS = frozenset({"GET", "HEAD"})
_POLL_STATUSES = frozenset({200, 304})


def log_polls_setting(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether successful polls are logged too; raises ValueError on an unclear value."""
    raw = environ.get(LOG_POLLS_SETTING, "")
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(f"{LOG_POLLS_SETTING}={raw!r}: use 1 to log every poll, 0 (default) to skip")


def is_successful_poll(environ: Mapping[str, Any], status_code: object) -> bool:
    """A poll the metrics count and the access log skips by default."""
    return (
        status_code in _POLL_STATUSES
        and environ.get("PATH_INFO") == MANIFEST_PATH
        and environ.get("REQUEST_METHOD") in _POLL_METHODS
    )


class JsonAccessLogger(Logger):  # type: ignore[misc]
    log_polls = False

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        self.log_polls = log_polls_setting()

    def access(self, resp: Any, req: Any, environ: dict[str, Any], request_time: Any) -> None:
        if not self.access_log_enabled:
            return
        if not self.log_polls and is_successful_poll(environ, getattr(resp, "status_code", None)):
            return
        status = resp.status
        if isinstance(status, str):
            status = status.split(None, 1)[0]
        record = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "remote": environ.get("REMOTE_ADDR", "-"),
            "method": environ.get("REQUEST_METHOD"),
            "path": environ.get("PATH_INFO"),
            "query": environ.get("QUERY_STRING") or None,
            "status": int(status) if str(status).isdigit() else status,
            "bytes": getattr(resp, "sent", None),
            "duration_ms": round(request_time.seconds * 1000 + request_time.microseconds / 1000, 3),
            "user_agent": environ.get("HTTP_USER_AGENT"),
            "pid": os.getpid(),
        }
        try:
            self.access_log.info(json.dumps(record, separators=(",", ":")))
        except Exception:  # a log line must never fail a request
            self.error("cannot write an access log line")
