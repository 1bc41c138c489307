"""client.session() on real TLS handshakes with trustme chains (root, intermediate, leaf)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
import requests

from pinserver.client import PinClient
from pinserver.errors import PinMismatchError
from tests.client.conftest import Clock, MakeClient
from tests.factory import NOW, Deployment, fake_pin, pinset
from tests.support.mirror import Mirror
from tests.support.tls_server import Pki, TlsServer


def _client_with(
    deployment: Deployment, mirror: Mirror, make_client: MakeClient, *pinsets: object, **kw: object
) -> PinClient:
    deployment.publish(pinsets=list(pinsets), **kw)
    mirror.serve_deployment(deployment)
    client = make_client()
    client.refresh()
    return client


def _get(client: PinClient, pki: Pki, url: str) -> requests.Response:
    # verify per request: requests lets REQUESTS_CA_BUNDLE override session.verify.
    with client.session() as session:
        response = session.get(url, timeout=10, verify=str(pki.ca_file))
        response.close()
        return response


@pytest.mark.parametrize("position", ["leaf", "intermediate", "root"])
def test_a_pin_at_any_position_of_the_verified_chain_is_accepted(
    *,
    position: str,
    pki: Pki,
    tls_server: TlsServer,
    deployment: Deployment,
    mirror: Mirror,
    make_client: MakeClient,
) -> None:
    pin = {"leaf": pki.leaf_pin, "intermediate": pki.intermediate_pin, "root": pki.root_pin}
    client = _client_with(deployment, mirror, make_client, pinset("localhost", [pin[position]]))
    response = _get(client, pki, tls_server.url_for("localhost", "/ok"))
    assert response.status_code == 200
    assert tls_server.requests == ["/ok"]


def test_enforce_mismatch_raises_before_the_server_sees_a_request(
    pki: Pki, tls_server: TlsServer, deployment: Deployment, mirror: Mirror, make_client: MakeClient
) -> None:
    client = _client_with(deployment, mirror, make_client, pinset("localhost", [fake_pin("x")]))
    with pytest.raises(PinMismatchError) as raised:
        _get(client, pki, tls_server.url_for("localhost", "/secret"))
    assert not isinstance(raised.value, requests.RequestException)
    assert raised.value.host == "localhost"
    assert set(raised.value.observed) == {pki.leaf_pin, pki.intermediate_pin, pki.root_pin}
    assert tls_server.requests == []


def test_certificates_merely_sent_by_the_peer_never_match(
    pki: Pki, tmp_path: Path, deployment: Deployment, mirror: Mirror, make_client: MakeClient
) -> None:
    """CVE-2016-2402: the server appends a certificate whose key is pinned, but it is
    not on the verified path; the pin must not be satisfied by it."""
    other = Pki.create(tmp_path)
    client = _client_with(
        deployment, mirror, make_client, pinset("localhost", [other.intermediate_pin])
    )
    context = pki.server_context(tmp_path, extra=(other.intermediate.cert_pem.bytes(),))
    with TlsServer(context) as server:
        with pytest.raises(PinMismatchError):
            _get(client, pki, server.url_for("localhost"))
        assert server.requests == []


def test_report_mode_lets_the_request_through_and_reports_once_an_hour(
    *,
    pki: Pki,
    tls_server: TlsServer,
    deployment: Deployment,
    mirror: Mirror,
    make_client: MakeClient,
    clock: Clock,
) -> None:
    client = _client_with(
        deployment,
        mirror,
        make_client,
        pinset("localhost", [fake_pin("x")], mode="report"),
        report_uri=mirror.url + "/v1/reports",
    )
    url = tls_server.url_for("localhost", "/r")
    assert _get(client, pki, url).status_code == 200
    client.flush_reports()
    assert len(mirror.posts) == 1
    path, report = mirror.posts[0]
    assert path == "/v1/reports"
    assert report["host"] == "localhost"
    assert report["port"] == tls_server.port
    assert report["observed"] == [pki.leaf_pin, pki.intermediate_pin, pki.root_pin]
    assert report["manifest_version"] == 1
    assert report["mode"] == "report"

    _get(client, pki, url)  # a new session, a new connection, the same chain
    client.flush_reports()
    assert len(mirror.posts) == 1
    clock.advance(minutes=61)
    _get(client, pki, url)
    client.flush_reports()
    assert len(mirror.posts) == 2
    assert tls_server.requests == ["/r", "/r", "/r"]


@pytest.mark.usefixtures("fake_dns")
@pytest.mark.parametrize("include_subdomains", [True, False])
def test_include_subdomains_both_ways(
    *,
    include_subdomains: bool,
    pki: Pki,
    tls_server: TlsServer,
    deployment: Deployment,
    mirror: Mirror,
    make_client: MakeClient,
) -> None:
    client = _client_with(
        deployment,
        mirror,
        make_client,
        pinset("pinned.test", [fake_pin("x")], include_subdomains=include_subdomains),
    )
    with pytest.raises(PinMismatchError):
        _get(client, pki, tls_server.url_for("pinned.test"))
    sub = tls_server.url_for("deep.api.pinned.test", "/sub")
    if include_subdomains:
        with pytest.raises(PinMismatchError):
            _get(client, pki, sub)
        assert tls_server.requests == []
    else:
        assert _get(client, pki, sub).status_code == 200
        assert tls_server.requests == ["/sub"]


@pytest.mark.usefixtures("fake_dns")
def test_the_most_specific_pin_set_wins(
    pki: Pki, tls_server: TlsServer, deployment: Deployment, mirror: Mirror, make_client: MakeClient
) -> None:
    client = _client_with(
        deployment,
        mirror,
        make_client,
        pinset("pinned.test", [fake_pin("x")], include_subdomains=True),
        pinset("api.pinned.test", [pki.intermediate_pin]),
    )
    assert _get(client, pki, tls_server.url_for("api.pinned.test")).status_code == 200
    with pytest.raises(PinMismatchError):
        _get(client, pki, tls_server.url_for("deep.api.pinned.test"))


def test_expired_pin_set_is_not_enforced(
    *,
    pki: Pki,
    tls_server: TlsServer,
    deployment: Deployment,
    mirror: Mirror,
    make_client: MakeClient,
    clock: Clock,
) -> None:
    client = _client_with(
        deployment,
        mirror,
        make_client,
        pinset("localhost", [fake_pin("x")], expires=NOW + timedelta(days=1)),
    )
    with pytest.raises(PinMismatchError):
        _get(client, pki, tls_server.url_for("localhost"))
    clock.advance(days=2)
    assert _get(client, pki, tls_server.url_for("localhost")).status_code == 200


@pytest.mark.parametrize(("on_expiry", "enforced"), [("ca-only", False), ("fail-closed", True)])
def test_expired_manifest_follows_on_expiry(
    *,
    on_expiry: str,
    enforced: bool,
    pki: Pki,
    tls_server: TlsServer,
    deployment: Deployment,
    mirror: Mirror,
    make_client: MakeClient,
    clock: Clock,
) -> None:
    deployment.publish(
        pinsets=[pinset("localhost", [fake_pin("x")])], expires=NOW + timedelta(days=1)
    )
    mirror.serve_deployment(deployment)
    client = make_client(on_expiry=on_expiry)
    client.refresh()
    clock.advance(days=2)
    if enforced:
        with pytest.raises(PinMismatchError):
            _get(client, pki, tls_server.url_for("localhost"))
    else:
        assert _get(client, pki, tls_server.url_for("localhost")).status_code == 200


def test_unpinned_host_gets_plain_ca_validation(
    pki: Pki, tls_server: TlsServer, deployment: Deployment, mirror: Mirror, make_client: MakeClient
) -> None:
    client = _client_with(deployment, mirror, make_client, pinset("elsewhere.example.com"))
    assert _get(client, pki, tls_server.url_for("localhost")).status_code == 200
    # CA validation is still on: a session that does not trust the CA is refused.
    with client.session() as session, pytest.raises(requests.exceptions.SSLError):
        session.get(tls_server.url_for("localhost"), timeout=10)


def test_pinned_host_with_verification_off_fails_closed(
    pki: Pki, tls_server: TlsServer, deployment: Deployment, mirror: Mirror, make_client: MakeClient
) -> None:
    client = _client_with(deployment, mirror, make_client, pinset("localhost", [pki.leaf_pin]))
    with client.session() as session, pytest.raises(PinMismatchError, match="no verified chain"):
        session.get(tls_server.url_for("localhost"), timeout=10, verify=False)
    assert tls_server.requests == []


def test_session_follows_pins_swapped_by_a_later_refresh(
    pki: Pki, tls_server: TlsServer, deployment: Deployment, mirror: Mirror, make_client: MakeClient
) -> None:
    client = _client_with(deployment, mirror, make_client, pinset("localhost", [fake_pin("x")]))
    ca = str(pki.ca_file)
    with client.session() as session:
        with pytest.raises(PinMismatchError):
            session.get(tls_server.url_for("localhost"), timeout=10, verify=ca)
        deployment.publish(pinsets=[pinset("localhost", [pki.root_pin])])
        mirror.serve_deployment(deployment)
        client.refresh()
        response = session.get(tls_server.url_for("localhost"), timeout=10, verify=ca)
        assert response.status_code == 200
