"""Static export of the read API: the same paths as files, for nginx, S3 or a CDN.

Clients trust signatures, not the transport, so a mirror needs no secret and can be
served by anything that serves files. Written (relative to the output directory):

    v1/manifest.json            latest manifest envelope (the polling path)
    v1/manifests/{N}.json       every manifest envelope (immutable)
    v1/roots/{N}.json           every root envelope (immutable)
    healthz                     {"status": "ok", "root_version": R, "manifest_version": N}

Each file is written to a temporary name in its directory, fsynced and renamed into
place, and only if its bytes changed, so a web server never serves a half-written
file and unchanged files keep their mtime (and so nginx's ETag). An immutable path
that already holds *other* bytes is refused: the directory mirrors another store.

A rewritten file gets a whole-second mtime strictly later than the one it replaces
(``max(now, previous + 1 s)``). nginx's ETag is ``"<mtime in seconds>-<size>"``, and
consecutive manifests are often the same size: with the wall-clock mtime, two exports
within one second would give the new ``v1/manifest.json`` the old one's ETag, and a
polling client would get 304 and keep the old pins until the next publication.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pinserver.errors import PinserverError
from pinserver.store.base import Store, StoreHead


class ExportConflictError(PinserverError):
    """An immutable file in the export directory differs from the store's version."""

    code = "export_conflict"
    status = 409


@dataclass
class ExportResult:
    head: StoreHead
    written: list[str] = field(default_factory=list)
    unchanged: int = 0


def next_mtime(previous: float | None, now: float) -> int:
    """A whole-second mtime after ``previous`` (the replaced file's), ``now`` if later:
    a rewritten file never keeps its predecessor's mtime, so never its nginx ETag."""
    current = int(now)
    if previous is None:
        return current
    return max(current, int(previous) + 1)


def _write_atomic(path: Path, data: bytes, *, mtime: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.utime(f.fileno(), (mtime, mtime))  # before the rename: served with it at once
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _read(path: Path) -> tuple[bytes, float] | tuple[None, None]:
    """The file's bytes and mtime, or ``(None, None)`` when there is no such file."""
    try:
        with path.open("rb") as f:
            return f.read(), os.fstat(f.fileno()).st_mtime
    except FileNotFoundError:
        return None, None


def export(
    store: Store, out_dir: str | Path, *, clock: Callable[[], float] = time.time
) -> ExportResult:
    """Bring ``out_dir`` up to date with ``store``; returns what was (re)written.
    ``clock`` gives the time (epoch seconds) written files take as their mtime."""
    out = Path(out_dir)
    head = store.head()
    result = ExportResult(head=head)

    def put(relative: str, data: bytes, *, immutable: bool) -> None:
        path = out / relative
        existing, existing_mtime = _read(path)
        if existing == data:
            result.unchanged += 1
            return
        if existing is not None and immutable:
            raise ExportConflictError(
                f"{path} holds other bytes than the store's; export into an empty directory"
                " or the one this store exported to before"
            )
        _write_atomic(path, data, mtime=next_mtime(existing_mtime, clock()))
        result.written.append(relative)

    # Immutable versions first, the moving pointer last: a client that sees a new
    # manifest.json can already fetch every root it names.
    for root in store.roots():
        put(f"v1/roots/{root.version}.json", root.envelope, immutable=True)
    after = 0
    latest = None
    while True:
        batch = store.manifests_after(after, 500)
        if not batch:
            break
        for manifest in batch:
            put(f"v1/manifests/{manifest.version}.json", manifest.envelope, immutable=True)
            latest = manifest
        after = batch[-1].version
    if latest is not None:
        put("v1/manifest.json", latest.envelope, immutable=False)
    health = {
        "status": "ok",
        "root_version": head.root_version,
        "manifest_version": head.manifest_version,
    }
    put("healthz", json.dumps(health).encode() + b"\n", immutable=False)
    return result


def watch(
    store: Store,
    out_dir: str | Path,
    *,
    interval: float = 1.0,
    on_export: Callable[[ExportResult], None] | None = None,
    should_stop: Callable[[], bool] = lambda: False,
) -> None:
    """Export now, then again whenever the store's head moves (checked every ``interval``)."""
    last: StoreHead | None = None
    while not should_stop():
        head = store.head()
        if head != last:
            result = export(store, out_dir)
            last = result.head
            if on_export is not None:
                on_export(result)
        time.sleep(interval)
