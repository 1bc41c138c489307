"""The state directory: durable swaps, the multi-process lock, and processes sharing
one directory without rolling each other back."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from pinserver.client import PinClient
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


def test_a_state_file_tampered_between_two_polls_is_caught_on_the_next_poll(
    deployment: Deployment, mirror: Mirror, make_client: MakeClient, state_dir: Path
) -> None:
    """Another process rewrites state.json in place between two polls of a live client:
    same inode, same size, same mtime, valid checksum; only a signature differs. The
    next poll sees other bytes than the ones it wrote, verifies them in full, refuses
    them and keeps the pins it holds."""
    deployment.publish()
    mirror.serve_deployment(deployment)
    client = make_client()
    client.refresh()
    assert client.refresh().not_modified
    assert client.load_problem is None

    path = state_dir / STATE_FILE
    before = path.stat()
    stored = decode_state(path.read_bytes())
    assert stored.manifest is not None
    sig = json.loads(stored.manifest)["signatures"][0]["sig"]
    forged_sig = ("B" if sig[0] == "A" else "A") + sig[1:]
    tampered = encode_state(
        StoredState(
            roots=stored.roots,
            manifest=stored.manifest.replace(sig.encode(), forged_sig.encode()),
            etags=stored.etags,
            time_floor=stored.time_floor,
        )
    )
    assert len(tampered) == before.st_size
    with path.open("r+b") as f:  # in place: the inode stays
        f.write(tampered)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = path.stat()
    assert (after.st_ino, after.st_size, after.st_mtime_ns) == (
        before.st_ino,
        before.st_size,
        before.st_mtime_ns,
    )

    result = client.refresh()
    assert result.not_modified
    assert client.load_problem is not None
    assert "SignatureError" in client.load_problem
    assert client.manifest_version == 1  # the verified pins in memory stay in force
    assert client.pins_for("updates.example.com") is not None
    assert make_client().load_problem is not None  # and a new process refuses it too


def test_state_is_verified_when_its_bytes_change_and_only_then(
    deployment: Deployment,
    mirror: Mirror,
    make_client: MakeClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Verifying the state depends only on its bytes and the shipped root, so a client
    that wrote or verified these very bytes does not verify them again: not on the
    first poll after loading, not after its own update. Another process's write is
    verified in full."""
    verified: list[bytes] = []
    real = PinClient._verify_stored

    def counting(self: PinClient, raw: bytes) -> Any:
        verified.append(raw)
        return real(self, raw)

    monkeypatch.setattr(PinClient, "_verify_stored", counting)
    for _ in range(3):
        deployment.publish()
    mirror.serve_deployment(deployment, manifest_version=1)
    make_client().refresh()
    assert verified == []  # nothing on disk yet; then it wrote the state itself

    client = make_client()  # a cold start loads and verifies once
    assert len(verified) == 1
    assert client.refresh().not_modified
    mirror.serve_deployment(deployment, manifest_version=2)
    assert client.refresh().updated
    assert client.refresh().not_modified
    assert len(verified) == 1

    other = make_client()  # another process moves the directory on
    mirror.serve_deployment(deployment, manifest_version=3)
    other.refresh()
    verified.clear()
    assert client.refresh().not_modified
    assert len(verified) == 1
    assert client.manifest_version == 3


def test_the_file_format_is_the_canonical_json_of_its_parts() -> None:
    """encode_state serialises the body once; the bytes are those of the canonical
    JSON of the whole file, as earlier versions wrote it."""
    state = StoredState(
        roots=((2, b"root\xff"),), manifest=b"m" * 1000, etags={"http://m": '"é\\"'}, time_floor=NOW
    )
    body = {
        "roots": [{"version": 2, "envelope": base64.b64encode(b"root\xff").decode()}],
        "manifest": base64.b64encode(b"m" * 1000).decode(),
        "etags": {"http://m": '"é\\"'},
        "time_floor": "2026-12-03T12:00:00Z",
    }
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    whole = {"format": 1, "sha256": hashlib.sha256(canonical.encode()).hexdigest(), "state": body}
    expected = json.dumps(whole, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    assert encode_state(state) == expected.encode() + b"\n"
