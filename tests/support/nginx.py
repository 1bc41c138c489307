"""A throwaway nginx on 127.0.0.1 serving a directory as a static mirror, the way
docs/scaling.md configures one; None when nginx is not installed."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import requests

from tests.support.gunicorn import free_port

_CONFIG = """
daemon off;
worker_processes 1;
pid {run}/nginx.pid;
error_log {run}/error.log;
{user}
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {run}/body;
    proxy_temp_path {run}/proxy;
    fastcgi_temp_path {run}/fastcgi;
    uwsgi_temp_path {run}/uwsgi;
    scgi_temp_path {run}/scgi;
    types {{ application/json json; }}
    server {{
        listen 127.0.0.1:{port};
        root {www};
        etag on;
        location = /v1/manifest.json {{
            add_header Cache-Control "public, max-age=60, must-revalidate";
        }}
        location /v1/ {{
            add_header Cache-Control "public, max-age=31536000, immutable";
        }}
    }}
}}
"""


def nginx_binary() -> str | None:
    return shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx",) if os.access(p, os.X_OK)), None
    )


@contextmanager
def running_nginx(www: Path) -> Iterator[str]:
    """Serve ``www`` with nginx; yields the base URL."""
    binary = nginx_binary()
    if binary is None:
        raise RuntimeError("nginx is not installed")
    run = Path(tempfile.mkdtemp(prefix="pinserver-nginx-"))
    port = free_port()
    user = "user root;" if os.geteuid() == 0 else ""
    config = run / "nginx.conf"
    config.write_text(_CONFIG.format(run=run, port=port, www=www, user=user))
    process = subprocess.Popen(
        [binary, "-c", str(config), "-p", str(run)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                requests.get(url + "/", timeout=1)
                break
            except requests.ConnectionError:
                if process.poll() is not None or time.monotonic() > deadline:
                    log = (run / "error.log").read_text() if (run / "error.log").exists() else ""
                    raise RuntimeError(f"nginx did not start: {log}") from None
                time.sleep(0.05)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)
        shutil.rmtree(run, ignore_errors=True)
