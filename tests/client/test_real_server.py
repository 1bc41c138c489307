"""The client against the real service under gunicorn: the conditional poll (strong
ETag, 304), a publication followed by a root rotation, and a pin report accepted by
``POST /v1/reports``."""

from __future__ import annotations

from pathlib import Path

import requests

from tests.client.conftest import Clock, MakeClient
from tests.factory import Deployment, fake_pin, pinset
from tests.support.gunicorn import init_store, running_server
from tests.support.tls_server import Pki, TlsServer

ADMIN_TOKEN = "client-tests-admin-token"
JSON = {"Content-Type": "application/json"}


def _post(url: str, body: bytes) -> None:
    response = requests.post(url, data=body, headers=JSON, timeout=10)
    assert response.status_code == 201, response.text


def test_refresh_and_report_against_gunicorn(
    *,
    tmp_path: Path,
    deployment: Deployment,
    make_client: MakeClient,
    clock: Clock,
    pki: Pki,
    tls_server: TlsServer,
) -> None:
    init_store(tmp_path / "data", deployment, now=clock())
    env = {"PINSERVER_ADMIN_TOKEN": ADMIN_TOKEN}
    with running_server(tmp_path / "data", workers=1, env=env) as base_url:
        report_uri = base_url + "/v1/reports"
        watched = pinset("localhost", [fake_pin("x")], mode="report")
        _post(base_url + "/v1/manifests", deployment.publish(report_uri=report_uri))
        client = make_client(base_url=base_url)
        first = client.refresh()
        assert (first.root_version, first.manifest_version) == (1, 1)
        assert client.refresh().not_modified

        deployment.rotate_publisher()
        _post(base_url + "/v1/roots", deployment.roots[-1])
        _post(
            base_url + "/v1/manifests",
            deployment.publish(pinsets=[watched], report_uri=report_uri),
        )
        result = client.refresh()
        assert (result.root_version, result.manifest_version) == (2, 2)
        assert client.refresh().not_modified

        with client.session() as session:
            url = tls_server.url_for("localhost")
            assert session.get(url, timeout=10, verify=str(pki.ca_file)).status_code == 200
        client.flush_reports()
        listed = requests.get(
            report_uri, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=10
        )
        assert listed.status_code == 200, listed.text
        reports = [item["report"] for item in listed.json()["items"]]
        assert len(reports) == 1
        assert reports[0]["host"] == "localhost"
        assert reports[0]["manifest_version"] == 2
        assert reports[0]["observed"] == [pki.leaf_pin, pki.intermediate_pin, pki.root_pin]
