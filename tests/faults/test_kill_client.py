"""SIGKILL of a client process in the middle of pin swaps, in a loop. Every time, the
state it left loads and re-verifies from the shipped root, holds a manifest the
server really published, and is never older than the last one the process reported
as accepted: the old state or the new one, never a mix or a corrupt file."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

import tests
from pinserver.client import PinClient
from pinserver.client.state import STATE_FILE
from tests.factory import Deployment
from tests.faults.conftest import FAULT_SECONDS, Publisher, record, wait_for
from tests.support.gunicorn import init_store, running_server

REPOSITORY = Path(tests.__file__).resolve().parent.parent


def _spawn(url: str, root_file: Path, state_dir: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.faults.client_loop", url, str(root_file), str(state_dir)],
        cwd=REPOSITORY,
        env={**os.environ, "PYTHONPATH": str(REPOSITORY)},
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )


def test_sigkill_of_a_client_during_swaps(
    fast_dir: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    deployment = Deployment()
    init_store(fast_dir / "data", deployment)
    root_file = tmp_path / "root-1.json"
    root_file.write_bytes(deployment.roots[0])
    state_dir = tmp_path / "state"  # on the real disk: fsync takes the time it takes
    publisher = Publisher(deployment)
    rng = random.Random(3)
    cycles = swaps_seen = 0
    with running_server(fast_dir / "data", workers=2) as url:
        publisher.start(url)
        deadline = time.monotonic() + FAULT_SECONDS
        while time.monotonic() < deadline or cycles < 5:
            child = _spawn(url, root_file, state_dir)
            accepted: list[int] = []
            reader = threading.Thread(target=_read_versions, args=(child, accepted))
            reader.start()
            wait_for(lambda accepted=accepted: len(accepted) >= 2, "the client swaps pins")
            time.sleep(rng.uniform(0, 0.05))  # land the kill anywhere within a swap
            child.send_signal(signal.SIGKILL)
            child.wait(10)
            reader.join(10)
            assert child.stdout is not None
            child.stdout.close()
            cycles += 1
            swaps_seen += len(accepted)

            survivor = PinClient(url, trusted_root=root_file, state_dir=state_dir)
            assert survivor.load_problem is None, survivor.load_problem
            version = survivor.manifest_version
            assert version is not None
            assert version >= accepted[-1]
            served = requests.get(f"{url}/v1/manifests/{version}.json", timeout=30)
            assert survivor.manifest is not None
            assert served.content == survivor._snapshot.manifest.raw  # type: ignore[union-attr]
            survivor.close()
        publisher.stop()
    assert (state_dir / STATE_FILE).exists()
    record(request, "fault:client kill cycles survived", cycles)
    record(request, "fault:swaps completed by killed clients", swaps_seen)


def _read_versions(child: subprocess.Popen[str], accepted: list[int]) -> None:
    assert child.stdout is not None
    for line in child.stdout:
        word, _, number = line.strip().partition(" ")
        if word == "accepted":
            accepted.append(int(number))
