"""Issue 8: a client polling an exported tree on an untrusted static mirror (nginx, or
Python's http.server where nginx is absent) ends in the same state as a client of the
service, and a tampered file on the mirror is rejected with nothing changed."""

from __future__ import annotations

import functools
import http.server
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests

from pinserver.client import PinClient
from pinserver.envelope import Envelope
from pinserver.errors import SignatureError
from pinserver.export import export
from pinserver.store.sqlite import SQLiteStore
from tests.factory import Deployment
from tests.server.conftest import now, window
from tests.support.gunicorn import init_store, running_server
from tests.support.nginx import nginx_binary, running_nginx


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def _python_static(www: Path) -> Iterator[str]:
    handler = functools.partial(_QuietHandler, directory=str(www))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(params=["nginx", "http.server"])
def static_mirror(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    www = tmp_path / "www"
    www.mkdir()
    if request.param == "nginx":
        if nginx_binary() is None:
            pytest.skip("nginx is not installed (apt-get install nginx); http.server covers this")
        with running_nginx(www) as url:
            yield url, www
    else:
        with _python_static(www) as url:
            yield url, www


JSON = {"Content-Type": "application/json", "Connection": "close"}


def _grow_through_the_service(url: str, deployment: Deployment) -> None:
    """Manifest 1, a publisher rotation to root 2, manifest 2 under it: over HTTP."""
    for path, body in (
        ("/v1/manifests", deployment.publish(**window())),
        ("/v1/roots", deployment.rotate_publisher()),
        ("/v1/manifests", deployment.publish(**window())),
    ):
        response = requests.post(url + path, data=body, headers=JSON, timeout=30)
        assert response.status_code == 201, response.text


def _client(url: str, anchor: Path, state: Path) -> PinClient:
    return PinClient(url, trusted_root=str(anchor), state_dir=str(state))


def test_a_client_of_the_mirror_ends_where_a_client_of_the_service_does(
    static_mirror: tuple[str, Path], tmp_path: Path
) -> None:
    mirror_url, www = static_mirror
    deployment = Deployment()
    data = tmp_path / "data"
    init_store(data, deployment)
    anchor = tmp_path / "root-1.json"
    anchor.write_bytes(deployment.roots[0])
    with running_server(data, workers=1) as service_url:
        _grow_through_the_service(service_url, deployment)
        of_service = _client(service_url, anchor, tmp_path / "service-state")
        service_result = of_service.refresh()
    store = SQLiteStore(data)
    try:
        export(store, www)
    finally:
        store.close()

    of_mirror = _client(mirror_url, anchor, tmp_path / "mirror-state")
    mirror_result = of_mirror.refresh()
    assert (mirror_result.root_version, mirror_result.manifest_version) == (2, 2)
    assert (service_result.root_version, service_result.manifest_version) == (2, 2)
    assert of_mirror.manifest == of_service.manifest
    host = "updates.example.com"
    assert of_mirror.pins_for(host) == of_service.pins_for(host) is not None
    # The second poll of the mirror is one conditional request answered 304.
    assert of_mirror.refresh().updated is False


@pytest.mark.parametrize(
    "tamper",
    ["flip a payload byte", "flip a signature byte", "a manifest signed by another key"],
)
def test_a_tampered_file_on_the_mirror_is_rejected_and_changes_nothing(
    static_mirror: tuple[str, Path], tmp_path: Path, tamper: str
) -> None:
    mirror_url, www = static_mirror
    deployment = Deployment()
    data = tmp_path / "data"
    deployment.publish(**window())
    init_store(data, deployment, publish=True, now=now())
    store = SQLiteStore(data)
    try:
        export(store, www)
    finally:
        store.close()
    anchor = tmp_path / "root-1.json"
    anchor.write_bytes(deployment.roots[0])
    client = _client(mirror_url, anchor, tmp_path / "state")
    assert client.refresh().manifest_version == 1
    state_file = tmp_path / "state" / "state.json"
    before = state_file.read_bytes()
    pins_before = client.pins_for("updates.example.com")

    served = www / "v1" / "manifest.json"
    genuine = Envelope.from_bytes(deployment.next_manifest(**window()))
    if tamper == "flip a payload byte":
        payload = bytearray(genuine.payload)
        payload[10] ^= 0x01
        forged = Envelope(genuine.payload_type, bytes(payload), genuine.signatures)
    elif tamper == "flip a signature byte":
        sig = genuine.signatures[0]
        forged = Envelope(
            genuine.payload_type,
            genuine.payload,
            (type(sig)(sig.keyid, bytes([sig.sig[0] ^ 0x01]) + sig.sig[1:]),),
        )
    else:
        attacker = Deployment()
        forged = Envelope.from_bytes(attacker.next_manifest(**window()))
    mtime = served.stat().st_mtime + 10
    served.write_bytes(forged.to_bytes())
    # The attacker's file gets a new mtime, so nginx's ETag (mtime-size) changes and the
    # client's conditional request is answered with the forged body, not a 304.
    os.utime(served, (mtime, mtime))

    with pytest.raises(SignatureError):
        client.refresh()
    assert state_file.read_bytes() == before
    assert client.manifest_version == 1
    assert client.pins_for("updates.example.com") == pins_before
