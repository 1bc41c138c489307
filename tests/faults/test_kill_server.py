"""SIGKILL of gunicorn workers, and of the whole service, in the middle of publishes,
in a loop. Afterwards (and after a restart) every version that got a 201 is served
byte for byte, the chain verifies end to end, and the store has no partial row."""

from __future__ import annotations

import os
import random
import signal
import time
from pathlib import Path

import pytest

from tests.factory import Deployment
from tests.faults.conftest import (
    FAULT_SECONDS,
    Publisher,
    assert_store_intact,
    record,
    verify_served,
    wait_for,
)
from tests.support.gunicorn import ServerProcess, init_store, running_server_process

QUIET = {"PINSERVER_ACCESS_LOG": "off"}


def _new_store(data_dir: Path) -> Deployment:
    deployment = Deployment()
    init_store(data_dir, deployment)
    return deployment


def _progress(publisher: Publisher, since: int) -> bool:
    return len(publisher.committed) > since or publisher.interrupted > 0


def test_sigkill_of_workers_during_publishes(
    fast_dir: Path, request: pytest.FixtureRequest
) -> None:
    data_dir = fast_dir / "data"
    deployment = _new_store(data_dir)
    publisher = Publisher(deployment)
    rng = random.Random(6)
    cycles = 0
    with running_server_process(data_dir, workers=2, env=QUIET) as server:
        publisher.start(server.base_url)
        deadline = time.monotonic() + FAULT_SECONDS
        while time.monotonic() < deadline or cycles < 10:
            wait_for(lambda: len(server.worker_pids()) >= 2, "gunicorn has two workers")
            done = len(publisher.committed)
            wait_for(lambda done=done: len(publisher.committed) > done, "publishes go on")
            time.sleep(rng.uniform(0, 0.02))  # land the kill anywhere within a publish
            victims = server.worker_pids()
            if victims:
                os.kill(rng.choice(victims), signal.SIGKILL)
                cycles += 1
        wait_for(lambda: len(server.worker_pids()) >= 2, "gunicorn replaces the workers")
        publisher.stop()
        publisher.settle(publisher.version + 1)
        live_latest = verify_served(server.base_url, deployment, publisher.acknowledged)

    assert_store_intact(data_dir)
    with running_server_process(data_dir, workers=2, env=QUIET) as server:
        assert verify_served(server.base_url, deployment, publisher.acknowledged) == live_latest
    assert publisher.server_errors == []
    assert len(publisher.acknowledged) >= cycles
    record(request, "fault:worker kill cycles survived", cycles)
    record(request, "fault:publishes interrupted by a kill", publisher.interrupted)
    record(request, "fault:versions acknowledged", len(publisher.acknowledged))


def _kill_service(server: ServerProcess, *, whole_group: bool) -> None:
    """SIGKILL the master; the workers too at once (a power cut), or let them notice
    their parent is gone (a master crash) and then make sure none lingers."""
    workers = server.worker_pids()
    if whole_group:
        os.killpg(server.pid, signal.SIGKILL)
    else:
        os.kill(server.pid, signal.SIGKILL)
    server.process.wait(10)
    wait_for(lambda: not any(_alive(pid) for pid in workers), "the orphaned workers exit", 15)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def test_sigkill_of_the_master_during_publishes(
    fast_dir: Path, request: pytest.FixtureRequest
) -> None:
    data_dir = fast_dir / "data"
    deployment = _new_store(data_dir)
    publisher = Publisher(deployment)
    rng = random.Random(9)
    cycles = 0
    deadline = time.monotonic() + FAULT_SECONDS
    while time.monotonic() < deadline or cycles < 3:
        # A restart must find the store intact and serve all that was acknowledged.
        with running_server_process(data_dir, workers=2, env=QUIET) as server:
            publisher.url = server.base_url
            if publisher.pending:
                publisher.settle(publisher.version + 1)
            verify_served(server.base_url, deployment, publisher.acknowledged)
            publisher.start(server.base_url)
            done = len(publisher.committed)
            wait_for(lambda done=done: len(publisher.committed) > done + 2, "publishes go on")
            time.sleep(rng.uniform(0, 0.02))
            _kill_service(server, whole_group=cycles % 2 == 0)
            cycles += 1
            publisher.stop()
        assert_store_intact(data_dir)

    with running_server_process(data_dir, workers=2, env=QUIET) as server:
        publisher.url = server.base_url
        if publisher.pending:
            publisher.settle(publisher.version + 1)
        verify_served(server.base_url, deployment, publisher.acknowledged)
    assert publisher.server_errors == []
    record(request, "fault:master kill cycles survived", cycles)
    record(request, "fault:publishes interrupted by a kill", publisher.interrupted)
    record(request, "fault:versions acknowledged", len(publisher.acknowledged))
