"""The state directory: durable swaps, the multi-process lock, and processes sharing
one directory without rolling each other back."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pinserver.client.state import (
    LOCK_FILE,
    STATE_FILE,
    StateDir,
    StateFileError,
    StoredState,
    decode_state,
    encode_state,
)
from pinserver.errors import RollbackError
from tests.client.conftest import MakeClient
from tests.factory import NOW, Deployment
from tests.support.mirror import Mirror


def test_encode_decode_round_trip() -> None:
    state = StoredState(
        roots=((2, b"root-two"),), manifest=b"manifest", etags={"http://m": '"e"'}, time_floor=NOW
    )
    assert decode_state(encode_state(state)) == state
    assert decode_state(encode_state(StoredState())) == StoredState()


@pytest.mark.parametrize(
    "damage",
    [
        lambda b: b[: len(b) // 2],  # torn write
        lambda b: b.replace(b'"time_floor":"2026', b'"time_floor":"2025'),  # edited
        lambda b: b"",
        lambda b: b"[]",
    ],
)
def test_damaged_state_file_is_detected(damage: object) -> None:
    data = encode_state(StoredState(manifest=b"m", time_floor=NOW))
    with pytest.raises(StateFileError):
        decode_state(damage(data))  # type: ignore[operator]


def test_write_replaces_atomically_and_leaves_no_temp_files(tmp_path: Path) -> None:
    state_dir = StateDir(tmp_path / "s")
    (state_dir.path / f".{STATE_FILE}.stale.tmp").write_bytes(b"left by a killed writer")
    with state_dir.lock():
        state_dir.write(StoredState(manifest=b"one"))
        state_dir.write(StoredState(manifest=b"two"))
    assert decode_state(state_dir.read() or b"").manifest == b"two"
    assert sorted(p.name for p in state_dir.path.iterdir()) == sorted([LOCK_FILE, STATE_FILE])
    assert (state_dir.state_file.stat().st_mode & 0o777) == 0o600


def test_lock_excludes_other_processes(tmp_path: Path) -> None:
    state_dir = StateDir(tmp_path / "s")
    probe = textwrap.dedent(
        f"""
        import fcntl, os
        fd = os.open({str(state_dir.path / LOCK_FILE)!r}, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            print("acquired")
        except BlockingIOError:
            print("blocked")
        """
    )
    with state_dir.lock():
        held = subprocess.run([sys.executable, "-c", probe], capture_output=True, check=True)
    free = subprocess.run([sys.executable, "-c", probe], capture_output=True, check=True)
    assert held.stdout.strip() == b"blocked"
    assert free.stdout.strip() == b"acquired"


def test_a_second_client_on_the_same_directory_never_rolls_it_back(
    deployment: Deployment, mirror: Mirror, make_client: MakeClient, state_dir: Path
) -> None:
    """Client A holds manifest 1 in memory while client B (another process in real
    life) moves the shared directory to manifest 3. A lagging mirror then offers A
    manifest 2: A re-reads the directory under the lock, so it judges manifest 2
    against 3 (a rollback) instead of overwriting 3 with 2."""
    for _ in range(3):
        deployment.publish()
    mirror.serve_deployment(deployment, manifest_version=1)
    a = make_client()
    a.refresh()
    mirror.serve_deployment(deployment, manifest_version=3)
    b = make_client()
    b.refresh()
    mirror.serve_deployment(deployment, manifest_version=2)
    with pytest.raises(RollbackError):
        a.refresh()
    assert decode_state((state_dir / STATE_FILE).read_bytes()).manifest == deployment.manifests[2]
    assert a.manifest_version == 3  # and A has picked up B's newer state


def test_concurrent_refreshes_and_readers_in_one_process(
    deployment: Deployment, mirror: Mirror, make_client: MakeClient, state_dir: Path
) -> None:
    """Refreshes from several threads run one at a time; readers always see one whole
    snapshot (the pins of the version they see)."""
    import threading

    from tests.factory import fake_pin, pinset

    for version in range(1, 21):
        deployment.publish(pinsets=[pinset("h.example.com", [fake_pin(f"v{version}")])])
    client = make_client()
    errors: list[BaseException] = []
    done = threading.Event()

    def refresher(start: int) -> None:
        try:
            for version in range(start, 21, 4):
                mirror.serve_deployment(deployment, manifest_version=version)
                client.refresh()
        except BaseException as e:  # collected and re-raised below
            errors.append(e)

    def reader() -> None:
        while not done.is_set():
            manifest = client.manifest
            if manifest is not None:
                pins = manifest.pinsets[0].hashes
                if fake_pin(f"v{manifest.version}") not in pins:
                    errors.append(AssertionError(f"torn read at {manifest.version}"))

    threads = [threading.Thread(target=refresher, args=(s,)) for s in range(1, 5)]
    watcher = threading.Thread(target=reader)
    watcher.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    done.set()
    watcher.join(10)
    # Threads race on what the mirror serves, so some refreshes see older versions
    # (rollbacks) — those must be refused; nothing else may go wrong.
    assert all(isinstance(e, RollbackError) for e in errors), errors
    stored = decode_state((state_dir / STATE_FILE).read_bytes()).manifest
    assert stored == deployment.manifests[(client.manifest_version or 0) - 1]


def test_unwritable_state_file_is_a_store_error_and_nothing_is_swapped(
    deployment: Deployment, mirror: Mirror, make_client: MakeClient, state_dir: Path
) -> None:
    from pinserver.errors import StoreError

    deployment.publish()
    mirror.serve_deployment(deployment)
    state_dir.mkdir()
    (state_dir / STATE_FILE).mkdir()  # cannot be read or replaced, even by root
    client = make_client()
    assert client.load_problem is not None
    with pytest.raises(StoreError):
        client.refresh()
    assert client.manifest_version is None
    (state_dir / STATE_FILE).rmdir()
    assert client.refresh().manifest_version == 1
