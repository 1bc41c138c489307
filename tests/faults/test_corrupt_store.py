"""A store file truncated or corrupted on disk is detected when the service starts,
with a clear error naming the file and what to do, and is never served."""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from pinserver.store.sqlite import DATABASE_FILE
from tests.factory import Deployment
from tests.faults.conftest import verify_served, window
from tests.support.gunicorn import init_store, running_server_process

PAGE = 4096


def _truncate_to(fraction: float) -> Callable[[Path], None]:
    def damage(path: Path) -> None:
        size = int(path.stat().st_size * fraction) // PAGE * PAGE if fraction else 0
        with path.open("r+b") as f:
            f.truncate(size)

    return damage


def _overwrite(offset_of: Callable[[bytes], int], data: bytes) -> Callable[[Path], None]:
    def damage(path: Path) -> None:
        content = bytearray(path.read_bytes())
        offset = offset_of(bytes(content))
        replacement = data if content[offset : offset + len(data)] != data else data.lower()
        content[offset : offset + len(data)] = replacement
        path.write_bytes(bytes(content))

    return damage


def _in_payload(content: bytes) -> int:
    return content.rindex(b'"payload":"') + len(b'"payload":"') + 20


def _in_signature(content: bytes) -> int:
    return content.rindex(b'"sig":"') + len(b'"sig":"') + 20


def _remove_a_manifest(path: Path) -> None:
    """What an intruder (or a bad restore) can do: history with a hole in it."""
    conn = sqlite3.connect(path)
    conn.execute("DROP TRIGGER manifests_append_only_d")
    conn.execute("DELETE FROM manifests WHERE version = 2")
    conn.commit()
    conn.close()


DAMAGE: dict[str, Callable[[Path], None]] = {
    "truncated to nothing": _truncate_to(0),
    "truncated to its first page": lambda p: _truncate_to(PAGE / p.stat().st_size)(p),
    "truncated to half": _truncate_to(0.5),
    "header overwritten": _overwrite(lambda c: 0, b"\0" * 100),
    "b-tree page header overwritten": _overwrite(lambda c: 2 * PAGE, b"\xff" * 12),
    "base64 changed inside a signed payload": _overwrite(_in_payload, b"AAAA"),
    "control bytes inside an envelope": _overwrite(_in_signature, b"\x01\x02"),
    "manifest row removed": _remove_a_manifest,
}


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Deployment]:
    """A store with roots and manifests, cleanly closed (no WAL left behind)."""
    deployment = Deployment()
    for _ in range(4):
        deployment.publish(**window())
    data_dir = tmp_path_factory.mktemp("pristine") / "data"
    init_store(data_dir, deployment, publish=True)
    assert sorted(p.name for p in data_dir.iterdir()) == [DATABASE_FILE]
    return data_dir, deployment


def _damaged_copy(pristine: Path, tmp_path: Path, damage: Callable[[Path], None]) -> Path:
    data_dir = tmp_path / "data"
    shutil.copytree(pristine, data_dir)
    damage(data_dir / DATABASE_FILE)
    return data_dir


@pytest.mark.parametrize("damage", DAMAGE.values(), ids=DAMAGE.keys())
def test_a_damaged_store_is_refused_at_start(
    pristine: tuple[Path, Deployment], tmp_path: Path, damage: Callable[[Path], None]
) -> None:
    data_dir = _damaged_copy(pristine[0], tmp_path, damage)
    before = (data_dir / DATABASE_FILE).read_bytes()
    with (
        pytest.raises(RuntimeError, match="gunicorn exited") as refused,
        running_server_process(data_dir, workers=1),
    ):
        pass
    log = str(refused.value)
    assert "pinserver.errors.StoreError: " in log  # the store's own diagnosis, not a crash
    assert str(data_dir / DATABASE_FILE) in log
    # Refusing is all it does: the evidence is left as it was found.
    assert (data_dir / DATABASE_FILE).read_bytes() == before


def test_the_pristine_copy_is_served(pristine: tuple[Path, Deployment], tmp_path: Path) -> None:
    """The control: the same copy, undamaged, starts and serves a verifying chain."""
    data_dir = _damaged_copy(pristine[0], tmp_path, lambda path: None)
    deployment = pristine[1]
    with running_server_process(data_dir, workers=1) as server:
        acknowledged = dict(enumerate(deployment.manifests, start=1))
        assert verify_served(server.base_url, deployment, acknowledged) == 4


def test_a_damaged_signature_is_refused_at_start(
    pristine: tuple[Path, Deployment], tmp_path: Path
) -> None:
    data_dir = _damaged_copy(pristine[0], tmp_path, _overwrite(_in_signature, b"AAAA"))
    with (
        pytest.raises(RuntimeError, match="gunicorn exited"),
        running_server_process(data_dir, workers=1),
    ):
        pass
