"""Shared machinery of the fault-injection tests: a publisher that survives crashes
and knows exactly which versions were acknowledged, an end-to-end check of what a
server serves, a bounded time budget, and a summary line per test that says how many
kill cycles were survived (printed at the end of every run)."""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests

from pinserver.store.sqlite import SQLiteStore
from pinserver.trust import (
    ManifestFloor,
    verify_history_entry,
    verify_manifest_signatures,
    verify_root_chain,
)
from tests.factory import Deployment

JSON = {"Content-Type": "application/json"}
FAULT_SECONDS = float(os.environ.get("PINSERVER_FAULT_SECONDS") or 6)
"""Wall-clock budget of each kill loop (each also has a minimum number of cycles)."""


def window(**extra: Any) -> dict[str, Any]:
    t = datetime.now(UTC).replace(microsecond=0)
    return {"issued_at": t - timedelta(hours=1), "expires": t + timedelta(days=30), **extra}


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    """Poll until ``condition()`` holds (an event we wait for, never time we move)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting until {what}")


@pytest.fixture
def fast_dir(tmp_path: Path) -> Iterator[Path]:
    """A directory on tmpfs when there is one: killing processes, not disks, is the
    fault here, and the page cache survives a SIGKILL exactly like a disk would."""
    shm = Path("/dev/shm")
    if not (shm.is_dir() and os.access(shm, os.W_OK)):
        yield tmp_path
        return
    path = Path(tempfile.mkdtemp(prefix="pinserver-fault-", dir=shm))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@dataclass
class Publisher:
    """Publishes the next manifest again and again. A 201 is an acknowledgement; an
    interrupted request (the worker died) has an unknown outcome, settled by asking
    the server for that version: committed bytes are adopted, a 404 is retried."""

    deployment: Deployment
    url: str = ""
    acknowledged: dict[int, bytes] = field(default_factory=dict)
    committed: dict[int, bytes] = field(default_factory=dict)
    interrupted: int = 0
    conflicts: int = 0
    server_errors: list[str] = field(default_factory=list)
    pending: bytes | None = None
    _down: bool = False
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    @property
    def version(self) -> int:
        return self.deployment.manifest_version

    def step(self) -> None:
        """One attempt to publish (or settle) the next version."""
        if self.pending is None:
            self.pending = self.deployment.next_manifest(**window())
        version = self.version + 1
        try:
            response = requests.post(
                self.url + "/v1/manifests", data=self.pending, headers=JSON, timeout=30
            )
        except requests.RequestException:
            if not self._down:  # count each outage once, not every refused retry
                self.interrupted += 1
            self._down = True
            self.settle(version)
            self._stop.wait(0.005 if self._down else 0)
            return
        self._down = False
        if response.status_code == 201:
            self.acknowledged[version] = self.pending
            self._adopt(version)
        elif response.status_code >= 500:
            self.server_errors.append(f"{response.status_code} {response.text}")
        elif response.status_code == 409:
            self.conflicts += 1
            self.settle(version)
        else:
            raise AssertionError(f"publish answered {response.status_code}: {response.text}")

    def settle(self, version: int) -> None:
        """Did ``version`` commit? Adopt it if the server has our bytes."""
        try:
            response = requests.get(f"{self.url}/v1/manifests/{version}.json", timeout=30)
        except requests.RequestException:
            return  # the server is down; settle on the next attempt
        self._down = False
        if response.status_code == 200:
            assert response.content == self.pending, "another version took our place"
            self._adopt(version)
        elif response.status_code != 404:
            self.server_errors.append(f"{response.status_code} {response.text}")

    def _adopt(self, version: int) -> None:
        assert self.pending is not None
        self.committed[version] = self.pending
        self.deployment.manifests.append(self.pending)
        self.pending = None

    def start(self, url: str) -> None:
        self.url = url
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.step()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(60)
            assert not self._thread.is_alive()


def fetch(url: str) -> requests.Response:
    return requests.get(url, timeout=30, headers={"Cache-Control": "no-cache"})


def verify_served(url: str, deployment: Deployment, acknowledged: dict[int, bytes]) -> int:
    """Everything the server serves verifies end to end from root 1 (the root chain,
    then each manifest under the root it names and chained to its predecessor), and
    every acknowledged version is served byte for byte. Returns the latest version."""
    roots: list[bytes] = []
    while (response := fetch(f"{url}/v1/roots/{len(roots) + 1}.json")).status_code == 200:
        roots.append(response.content)
    assert roots[0] == deployment.roots[0]
    chain = verify_root_chain(roots[0], roots[1:])
    listed: dict[int, int] = {}  # version -> the root it was published under
    after: int | None = 0
    while after is not None:
        page = fetch(f"{url}/v1/history?after={after}&limit=1000").json()
        listed.update({item["version"]: item["root_version"] for item in page["items"]})
        after = page["next_after"]
    latest = int(fetch(url + "/healthz").json()["manifest_version"])
    assert sorted(listed) == list(range(1, latest + 1))
    assert set(acknowledged) <= set(listed)
    previous: ManifestFloor | None = None
    for version in range(1, latest + 1):
        body = fetch(f"{url}/v1/manifests/{version}.json").content
        if version in acknowledged:
            assert body == acknowledged[version], f"version {version} is not what got a 201"
        verified = verify_manifest_signatures(chain[listed[version] - 1].root, body)
        verify_history_entry(verified, version=version, previous=previous)
        previous = ManifestFloor(version, verified.payload_sha256)
    if latest:
        newest = fetch(url + "/v1/manifest.json").content
        assert newest == fetch(f"{url}/v1/manifests/{latest}.json").content
    return latest


def assert_store_intact(data_dir: Path) -> None:
    """No partial row: the store's own check (SQLite integrity, contiguous versions,
    every payload re-hashed) on the file as the crash left it."""
    store = SQLiteStore(data_dir, create=False)
    try:
        store.check_integrity()
    finally:
        store.close()


def record(request: pytest.FixtureRequest, name: str, value: object) -> None:
    """Shown in the run's summary (see ``pytest_terminal_summary`` below)."""
    request.node.user_properties.append((name, value))


def pytest_terminal_summary(terminalreporter: Any) -> None:
    lines = []
    for report in terminalreporter.stats.get("passed", []):
        for name, value in getattr(report, "user_properties", []):
            if name.startswith("fault:"):
                lines.append(f"{report.nodeid.split('::')[-1]}: {name[6:]} = {value}")
    if lines:
        terminalreporter.section("fault injection")
        for line in lines:
            terminalreporter.write_line(line)
