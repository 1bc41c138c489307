"""``pinserver export``: a static copy of the read API, served by a plain web server.

Exports are taken from both store backends (``service``); refusing a directory of
another store is about the export directory alone and runs once, on SQLite."""

from __future__ import annotations

import functools
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from pinserver.client import PinClient
from pinserver.export import ExportConflictError, export
from pinserver.store.sqlite import SQLiteStore
from tests.factory import Deployment
from tests.server.conftest import JSON, Service, publish
from tests.support.gunicorn import init_store

CLOSE = {"Connection": "close"}  # no kept-alive connection to delay gunicorn's stop
READ_PATHS = [
    "/v1/manifest.json",
    "/v1/manifests/1.json",
    "/v1/manifests/2.json",
    "/v1/roots/1.json",
    "/v1/roots/2.json",
]


@pytest.fixture
def static_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """Python's stdlib static file server on 127.0.0.1 (nothing pinserver-specific)."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", root
    finally:
        server.shutdown()
        server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


def _grown(service: Service, d: Deployment) -> None:
    """Rotate to root 2 and publish manifest 2 through the service (in process)."""
    app = service.app()
    try:
        client = app.test_client()
        assert client.post("/v1/roots", data=d.rotate_publisher(), headers=JSON).status_code == 201
        assert client.post("/v1/manifests", data=publish(d), headers=JSON).status_code == 201
    finally:
        app.extensions["pinserver"].store.close()


def test_export_serves_the_same_bytes_at_the_same_paths(
    service: Service, deployment: Deployment, static_server: tuple[str, Path]
) -> None:
    _grown(service, deployment)
    mirror_url, www = static_server
    store = service.open_store()
    try:
        result = export(store, www)
    finally:
        store.close()
    assert sorted(result.written) == sorted([*(p.lstrip("/") for p in READ_PATHS), "healthz"])
    with service.running(workers=1) as server:
        service_url = server.base_url
        for path in READ_PATHS:
            served = requests.get(service_url + path, headers=CLOSE, timeout=10)
            mirrored = requests.get(mirror_url + path, timeout=10)
            assert served.status_code == mirrored.status_code == 200
            assert served.content == mirrored.content, path
        # the walk ends the same way on both: root 3 does not exist
        assert requests.get(mirror_url + "/v1/roots/3.json", timeout=10).status_code == 404
        assert (
            requests.get(service_url + "/v1/roots/3.json", headers=CLOSE, timeout=10).status_code
            == 404
        )
    assert mirrored.content == deployment.roots[1]


def test_a_client_polls_the_mirror(
    service: Service, deployment: Deployment, static_server: tuple[str, Path], tmp_path: Path
) -> None:
    _grown(service, deployment)
    mirror_url, www = static_server
    store = service.open_store()
    try:
        export(store, www)
    finally:
        store.close()
    anchor = tmp_path / "root-1.json"
    anchor.write_bytes(deployment.roots[0])
    client = PinClient(mirror_url, trusted_root=str(anchor), state_dir=str(tmp_path / "state"))
    result = client.refresh()
    assert result.manifest_version == 2
    assert result.root_version == 2
    assert client.pins_for("updates.example.com") is not None


def test_export_rewrites_only_what_changed(
    service: Service, deployment: Deployment, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    store = service.open_store()
    try:
        first = export(store, out)
        assert "v1/manifest.json" in first.written
        stamp = (out / "v1/manifests/1.json").stat().st_mtime_ns
        again = export(store, out)
        assert again.written == []
        assert again.unchanged == len(first.written)
    finally:
        store.close()
    _grown(service, deployment)
    store = service.open_store()
    try:
        third = export(store, out)
    finally:
        store.close()
    assert sorted(third.written) == [
        "healthz",
        "v1/manifest.json",
        "v1/manifests/2.json",
        "v1/roots/2.json",
    ]
    assert (out / "v1/manifests/1.json").stat().st_mtime_ns == stamp
    assert (out / "v1/manifest.json").read_bytes() == deployment.manifests[-1]
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]


def test_export_refuses_a_directory_of_another_store(tmp_path: Path) -> None:
    for name in ("a", "b"):
        d = Deployment()
        publish(d)
        init_store(tmp_path / name, d, publish=True)
    store = SQLiteStore(tmp_path / "a")
    try:
        export(store, tmp_path / "out")
    finally:
        store.close()
    store = SQLiteStore(tmp_path / "b")
    try:
        with pytest.raises(ExportConflictError):
            export(store, tmp_path / "out")
    finally:
        store.close()


def _nginx_etag(path: Path) -> str:
    """The ETag nginx sends for a static file: hex mtime seconds and hex size."""
    st = path.stat()
    return f'"{int(st.st_mtime):x}-{st.st_size:x}"'


def test_a_new_manifest_of_the_same_size_never_keeps_the_nginx_etag(
    service: Service, deployment: Deployment, tmp_path: Path
) -> None:
    """Two exports within one second of different manifests of the same size: the
    second file gets a later whole-second mtime, so nginx gives it another ETag and a
    client polling with the first one gets the new manifest, not 304."""
    out = tmp_path / "out"
    instant = 1_800_000_000.25  # both exports happen within this second
    served = out / "v1/manifest.json"
    seen = []
    for _ in range(2):
        app = service.app()
        try:
            created = app.test_client().post(
                "/v1/manifests", data=publish(deployment), headers=JSON
            )
            assert created.status_code == 201
        finally:
            app.extensions["pinserver"].store.close()
        store = service.open_store()
        try:
            assert "v1/manifest.json" in export(store, out, clock=lambda: instant).written
        finally:
            store.close()
        assert served.read_bytes() == deployment.manifests[-1]
        seen.append((int(served.stat().st_mtime), _nginx_etag(served)))
    first, second = deployment.manifests[-2:]
    assert first != second
    assert len(first) == len(second)  # what made the ETags collide
    assert seen[0][0] == int(instant)
    assert seen[1][0] == int(instant) + 1
    assert seen[0][1] != seen[1][1]
    # Unchanged files keep their mtime; new ones take the clock's second.
    assert int((out / "v1/manifests/2.json").stat().st_mtime) == int(instant)
    # And with the real clock, back to back: strictly later again.
    app = service.app()
    try:
        client = app.test_client()
        assert (
            client.post("/v1/manifests", data=publish(deployment), headers=JSON).status_code == 201
        )
    finally:
        app.extensions["pinserver"].store.close()
    store = service.open_store()
    try:
        export(store, out)
    finally:
        store.close()
    assert int(served.stat().st_mtime) > seen[1][0]
