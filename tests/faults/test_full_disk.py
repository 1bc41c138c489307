"""A full disk during a publish and during a client's pin swap: a clear error, nothing
half-written, and everything works again once there is room.

The disk is a real, small tmpfs volume mounted for the test (``mount -t tmpfs -o
size=4m``) and filled with a ballast file, so every write on it fails with ENOSPC,
exactly as on a full disk. Where mounting is not permitted (no CAP_SYS_ADMIN), the
same tests run with an injected EFBIG instead: RLIMIT_FSIZE lowered with prlimit(2)
on the server's processes, and in the client's process; SQLite reports both as
SQLITE_FULL and Python raises OSError for both."""

from __future__ import annotations

import errno
import os
import resource
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

import tests
from pinserver.client.state import STATE_FILE
from tests.factory import Deployment, fake_pin, pinset
from tests.faults.conftest import JSON, assert_store_intact, record, verify_served, window
from tests.support.gunicorn import init_store, running_server_process

REPOSITORY = Path(tests.__file__).resolve().parent.parent


@dataclass
class SmallVolume:
    """Where the files under test live, and how that place is made full."""

    path: Path
    how: str  # "tmpfs" or "rlimit"

    def fill(self, pids: list[int]) -> None:
        if self.how == "tmpfs":
            ballast = self.path / "ballast"
            with ballast.open("ab", buffering=0) as f:
                for chunk in (65536, 4096, 1):  # down to the last free byte
                    try:
                        while True:
                            f.write(b"\0" * chunk)
                    except OSError as e:
                        if e.errno != errno.ENOSPC:
                            raise
            return
        for pid in pids:  # no write past the first byte of any file: EFBIG
            resource.prlimit(pid, resource.RLIMIT_FSIZE, (1, resource.RLIM_INFINITY))

    def free(self, pids: list[int]) -> None:
        if self.how == "tmpfs":
            (self.path / "ballast").unlink()
            return
        for pid in pids:
            resource.prlimit(pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY,) * 2)


@pytest.fixture
def volume() -> Iterator[SmallVolume]:
    """A 4 MiB tmpfs if this process may mount one; otherwise (or with
    ``PINSERVER_FULL_DISK=rlimit``) a plain directory and the RLIMIT_FSIZE fallback."""
    mountpoint = Path(tempfile.mkdtemp(prefix="pinserver-full-"))
    command = ["mount", "-t", "tmpfs", "-o", "size=4m,mode=0700", "tmpfs", str(mountpoint)]
    if os.environ.get("PINSERVER_FULL_DISK") == "rlimit":
        command = ["false"]
    mounted = subprocess.run(command, capture_output=True, check=False)
    try:
        yield SmallVolume(mountpoint, "tmpfs" if mounted.returncode == 0 else "rlimit")
    finally:
        if mounted.returncode == 0:
            subprocess.run(["umount", "-l", str(mountpoint)], check=False)
        subprocess.run(["rm", "-rf", str(mountpoint)], check=False)


def test_full_disk_during_publish(volume: SmallVolume, request: pytest.FixtureRequest) -> None:
    data_dir = volume.path / "data"
    deployment = Deployment()
    init_store(data_dir, deployment)
    with running_server_process(data_dir, workers=1, env={"PINSERVER_ACCESS_LOG": "off"}) as server:
        url = server.base_url
        first = deployment.next_manifest(**window())
        assert requests.post(url + "/v1/manifests", data=first, headers=JSON, timeout=30).ok
        deployment.manifests.append(first)
        pids = [server.pid, *server.worker_pids()]

        volume.fill(pids)
        second = deployment.next_manifest(**window())
        refused = [
            requests.post(url + "/v1/manifests", data=second, headers=JSON, timeout=30)
            for _ in range(3)
        ]
        for response in refused:
            assert response.status_code == 503
            error = response.json()["error"]
            assert error["code"] == "store_error"
            assert "full" in error["message"] or "too large" in error["message"]
        health = requests.get(url + "/healthz", timeout=30).json()
        assert health["manifest_version"] == 1
        assert requests.get(url + "/v1/manifests/2.json", timeout=30).status_code == 404
        verify_served(url, deployment, {1: first})

        volume.free(pids)
        accepted = requests.post(url + "/v1/manifests", data=second, headers=JSON, timeout=30)
        assert accepted.status_code == 201, accepted.text
        deployment.manifests.append(second)
        verify_served(url, deployment, {1: first, 2: second})
    assert_store_intact(data_dir)
    record(request, "fault:full disk made by", volume.how)


CLIENT = """
import json, sys
from pinserver.client import PinClient
client = PinClient(sys.argv[1], trusted_root=sys.argv[2], state_dir=sys.argv[3], timeout=10)
try:
    client.refresh()
    outcome = {"error": None}
except Exception as e:
    outcome = {"error": type(e).__name__, "message": str(e)}
pins = client.pins_for("localhost")
outcome["version"] = client.manifest_version
outcome["pins"] = sorted(p.sha256 for p in pins.pins) if pins else None
print(json.dumps(outcome))
"""


def _client_refresh(url: str, root_file: Path, state_dir: Path, fsize: int | None) -> dict:  # type: ignore[type-arg]
    def limit() -> None:
        if fsize is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, resource.RLIM_INFINITY))

    done = subprocess.run(
        [sys.executable, "-c", CLIENT, url, str(root_file), str(state_dir)],
        env={**os.environ, "PYTHONPATH": str(REPOSITORY)},
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=limit,
        check=True,
    )
    import json

    return json.loads(done.stdout)  # type: ignore[no-any-return]


def test_full_disk_during_a_client_swap(
    volume: SmallVolume, fast_dir: Path, request: pytest.FixtureRequest
) -> None:
    deployment = Deployment()
    init_store(fast_dir / "data", deployment)
    root_file = fast_dir / "root-1.json"
    root_file.write_bytes(deployment.roots[0])
    state_dir = volume.path / "state"
    with running_server_process(fast_dir / "data", workers=1) as server:
        url = server.base_url

        def publish(label: str, hosts: int) -> None:
            sets = [pinset("localhost", [fake_pin(label)])]
            sets += [pinset(f"h{i}.example.com") for i in range(hosts)]
            body = deployment.next_manifest(pinsets=sets, **window())
            assert requests.post(url + "/v1/manifests", data=body, headers=JSON, timeout=30).ok
            deployment.manifests.append(body)

        publish("before", 1)
        first = _client_refresh(url, root_file, state_dir, None)
        assert first["error"] is None
        assert first["version"] == 1
        state_before = (state_dir / STATE_FILE).read_bytes()

        publish("after", 40)  # a bigger state file than the one on disk
        fsize = None
        if volume.how == "tmpfs":
            volume.fill([])
        else:
            fsize = 1
        failed = _client_refresh(url, root_file, state_dir, fsize)
        assert failed["error"] is not None
        assert "No space left" in failed["message"] or "too large" in failed["message"]
        assert failed["version"] == 1  # the old pins stay in force
        assert failed["pins"] == first["pins"]
        assert (state_dir / STATE_FILE).read_bytes() == state_before
        assert sorted(p.name for p in state_dir.iterdir()) == ["state.json", "state.lock"]

        if volume.how == "tmpfs":
            volume.free([])
        recovered = _client_refresh(url, root_file, state_dir, None)
        assert recovered["error"] is None
        assert recovered["version"] == 2
        assert recovered["pins"] != first["pins"]
    record(request, "fault:client full disk made by", volume.how)
    record(request, "fault:client error on a full disk", f"{failed['error']}: {failed['message']}")
