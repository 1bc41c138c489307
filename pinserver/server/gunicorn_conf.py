"""gunicorn settings for pinserver (``pinserver serve`` passes this file to ``-c``).

gthread workers: each request is short and CPU-bound (bytes from memory, or one SQLite
transaction), so a few processes per core with a few threads each keep every core busy
while a slow client or a publish holding the write lock ties up one thread only.
Every value can be changed through the environment variable named next to it.
"""

import multiprocessing
import os
import sys
from pathlib import Path
from typing import Any

from pinserver.server.accesslog import log_polls_setting
from pinserver.server.metrics import clear_directory
from pinserver.store import DEFAULT_DATA_DIR, check_store, open_store

bind = os.environ.get("PINSERVER_BIND", "127.0.0.1:8080")
worker_class = "gthread"
workers = int(os.environ.get("PINSERVER_WORKERS") or max(2, multiprocessing.cpu_count() * 2))
threads = int(os.environ.get("PINSERVER_THREADS") or 4)
timeout = int(os.environ.get("PINSERVER_TIMEOUT") or 30)  # a worker silent this long is killed
graceful_timeout = 20
keepalive = 5  # clients poll rarely; proxies and benchmarks reuse connections
backlog = 2048
limit_request_line = 4094
limit_request_fields = 50
limit_request_field_size = 8190
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None  # noqa: S108
_access = os.environ.get("PINSERVER_ACCESS_LOG", "-")
accesslog = None if _access in ("", "off", "none") else _access
try:  # PINSERVER_ACCESS_LOG_POLLS=1 logs successful polls too (read by the logger class)
    log_polls_setting()
except ValueError as _e:
    sys.exit(f"pinserver: {_e}")
errorlog = os.environ.get("PINSERVER_ERROR_LOG", "-")
loglevel = os.environ.get("PINSERVER_LOG_LEVEL", "info")
logger_class = "pinserver.server.accesslog.JsonAccessLogger"
proc_name = "pinserver"


def on_starting(server: Any) -> None:
    """Once, in the master: refuse to serve a damaged store; reset the metrics files."""
    data_dir = Path(os.environ.get("PINSERVER_DATA") or DEFAULT_DATA_DIR)
    store = open_store(data_dir, os.environ.get("PINSERVER_DATABASE_URL") or None)
    try:
        check_store(store)
    finally:
        store.close()
    clear_directory(data_dir / "metrics")


def worker_exit(server: Any, worker: Any) -> None:
    """Keep the counters of a worker that stops (restart, max_requests, shutdown)."""
    wsgi = sys.modules.get("pinserver.server.wsgi")
    if wsgi is not None:
        wsgi.app.extensions["pinserver"].metrics.flush()


# gunicorn >= 24 opens a control socket in $HOME by default: one fixed path that two
# services on one host would fight over, and a write into a home directory that a
# container's non-root user may not have. pinserver needs none of its commands.
control_socket_disable = True
