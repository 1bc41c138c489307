"""A real gunicorn serving pinserver on 127.0.0.1, for any test that needs the service.

    with running_server(data_dir, workers=2) as base_url:
        requests.get(base_url + "/v1/manifest.json")

``init_store(data_dir, deployment)`` installs a :class:`tests.factory.Deployment`'s
root 1 (and optionally publishes its manifests) straight into the store, as
``pinserver init`` does on the server host. Both take ``database_url=`` to use a
PostgreSQL database instead of the SQLite file in ``data_dir`` (which the server still
uses for its metrics and generation file).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import requests

import pinserver.server
from pinserver.documents import Root
from pinserver.envelope import Envelope
from pinserver.store import open_store
from pinserver.trust import (
    ManifestFloor,
    verify_anchor_root,
    verify_publication,
    verify_root_rotation,
)
from tests.factory import Deployment

GUNICORN_CONF = Path(pinserver.server.__file__).with_name("gunicorn_conf.py")
STARTUP_DEADLINE = 30.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerProcess:
    """A running gunicorn master: its URL, pid, log file and worker pids."""

    def __init__(self, process: subprocess.Popen[bytes], base_url: str, log_path: Path) -> None:
        self.process = process
        self.base_url = base_url
        self.log_path = log_path

    @property
    def pid(self) -> int:
        return self.process.pid

    def worker_pids(self) -> list[int]:
        """The master's children (the workers), from /proc."""
        children = Path(f"/proc/{self.pid}/task/{self.pid}/children")
        try:
            return [int(p) for p in children.read_text().split()]
        except OSError:
            return []

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""


@contextmanager
def running_server_process(
    data_dir: str | os.PathLike[str],
    *,
    workers: int = 2,
    threads: int = 4,
    env: Mapping[str, str] | None = None,
    database_url: str | None = None,
) -> Iterator[ServerProcess]:
    """Like :func:`running_server`, yielding the :class:`ServerProcess` (pids, log)."""
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    child_env = {
        **os.environ,
        "PINSERVER_DATA": str(data_dir),
        "PINSERVER_BIND": f"127.0.0.1:{port}",
        "PINSERVER_WORKERS": str(workers),
        "PINSERVER_THREADS": str(threads),
        "PINSERVER_ACCESS_LOG": "-",
        "PYTHONUNBUFFERED": "1",
        **({"PINSERVER_DATABASE_URL": database_url} if database_url else {}),
        **(env or {}),
    }
    log_path = data_dir / f"gunicorn-{port}.log"
    log = log_path.open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-c", str(GUNICORN_CONF), "pinserver.server.wsgi:app"],
        env=child_env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    server = ServerProcess(process, base_url, log_path)
    try:
        _wait_healthy(server, workers)
        yield server
    finally:
        _stop(process)
        log.close()


@contextmanager
def running_server(
    data_dir: str | os.PathLike[str],
    *,
    workers: int = 2,
    env: Mapping[str, str] | None = None,
    database_url: str | None = None,
) -> Iterator[str]:
    """Start ``python -m gunicorn`` with pinserver on a free 127.0.0.1 port, wait until
    ``/healthz`` answers and every worker is up, yield the base URL, stop it cleanly."""
    with running_server_process(
        data_dir, workers=workers, env=env, database_url=database_url
    ) as server:
        yield server.base_url


def _wait_healthy(server: ServerProcess, workers: int) -> None:
    deadline = time.monotonic() + STARTUP_DEADLINE
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"gunicorn exited with {server.process.returncode}:\n{server.log()}")
        try:
            response = requests.get(
                server.base_url + "/healthz", timeout=2, headers={"Connection": "close"}
            )
            # every worker must be booted before tests spread requests over them
            if response.status_code == 200 and len(server.worker_pids()) >= workers:
                booted = server.log().count("Booting worker")
                if booted >= workers:
                    return
        except requests.RequestException:
            pass  # not listening yet, or no worker free to answer within the timeout
        time.sleep(0.05)
    _stop(server.process)
    raise RuntimeError(f"gunicorn did not become healthy in {STARTUP_DEADLINE} s:\n{server.log()}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    # SIGTERM: gunicorn's graceful stop (a gthread worker lingers up to 2 s for any
    # kept-alive connection, hence "Connection: close" on the tests' own requests).
    # Not SIGINT: gunicorn 27's quick stop calls ThreadPoolExecutor.shutdown() from a
    # signal handler, which can deadlock a gthread worker until the graceful timeout.
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=5)


def init_store(
    data_dir: str | os.PathLike[str],
    deployment: Deployment,
    *,
    publish: bool = False,
    now: datetime | None = None,
    database_url: str | None = None,
) -> None:
    """Install ``deployment``'s root 1 in the store (as ``pinserver init`` does): the
    SQLite file in ``data_dir``, or the PostgreSQL database at ``database_url``. With
    ``publish=True`` also its later roots and its manifests so far, each checked by the
    trust core as the service would (at ``now``, default the clock)."""
    now = now or datetime.now(UTC).replace(microsecond=0)
    store = open_store(Path(data_dir), database_url)
    try:
        store.install_first_root(verify_anchor_root(deployment.roots[0]), now=now)
        if not publish:
            return
        for raw in deployment.roots[1:]:
            store.rotate_root(
                lambda current, raw=raw: verify_root_rotation(
                    _root_of(current.envelope), raw, reference_time=now
                ),
                now=now,
            )
        for raw in deployment.manifests:
            store.publish_manifest(
                lambda root, latest, raw=raw: verify_publication(
                    _root_of(root.envelope),
                    raw,
                    latest=ManifestFloor(latest.version, latest.payload_sha256) if latest else None,
                    reference_time=now,
                ),
                now=now,
                source="tests",
            )
    finally:
        store.close()


def _root_of(envelope: bytes) -> Root:
    return Root.from_bytes(Envelope.from_bytes(envelope).payload)
