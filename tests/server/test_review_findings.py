"""Findings of an adversarial review of the service and its stores, one test each.

Each test failed before its fix: a chunked body over the cap answered 400 instead of
413; an already-expired root N+1 was accepted (freezing every later publication); a
mistyped database URL was echoed with its password; reports from one IPv6 /64 were
rate-limited per address, so an attacker rotating addresses filled the store; a
non-ASCII digit in a version path was served as a second URL for the same document.
"""

from __future__ import annotations

import io
import socket
from datetime import timedelta

import pytest
from flask.testing import FlaskClient

from pinserver.envelope import MAX_ENVELOPE_BYTES
from pinserver.server.reports import RateLimiter, rate_limit_key
from pinserver.store import open_store, redact_database_url
from tests.factory import Deployment, root_document, root_envelope
from tests.server.conftest import JSON, Service, next_manifest, now
from tests.support.backends import sqlite_only


def _error(response: object) -> dict[str, object]:
    body = response.get_json()  # type: ignore[attr-defined]
    assert isinstance(body, dict), body
    assert set(body) == {"error"}, body
    error: dict[str, object] = body["error"]
    return error


# --- request bodies without Content-Length -------------------------------------------------


def test_a_chunked_body_over_the_cap_is_413_not_a_truncated_400(client: FlaskClient) -> None:
    """With chunked transfer encoding there is no Content-Length to refuse up front, and
    Werkzeug stops reading silently at MAX_CONTENT_LENGTH: the view must still see that
    the body went past the cap (SPEC 7: 413 before anything else)."""
    body = b'{"payloadType": "' + b"a" * (MAX_ENVELOPE_BYTES + 10) + b'"}'
    response = client.post(
        "/v1/manifests",
        input_stream=io.BytesIO(body),
        headers={"Content-Type": "application/json", "Transfer-Encoding": "chunked"},
        environ_overrides={"wsgi.input_terminated": True},
    )
    assert response.status_code == 413, response.get_data()
    assert _error(response)["code"] == "too_large"


def test_a_chunked_report_over_its_cap_is_413(client: FlaskClient) -> None:
    response = client.post(
        "/v1/reports",
        input_stream=io.BytesIO(b"x" * (64 * 1024)),
        headers={"Content-Type": "application/json", "Transfer-Encoding": "chunked"},
        environ_overrides={"wsgi.input_terminated": True},
    )
    assert response.status_code == 413
    assert _error(response)["code"] == "too_large"


def test_a_chunked_valid_publication_is_accepted(
    client: FlaskClient, deployment: Deployment
) -> None:
    """The bounded read must not break honest chunked uploads."""
    body = next_manifest(deployment)
    response = client.post(
        "/v1/manifests",
        input_stream=io.BytesIO(body),
        headers={"Content-Type": "application/json", "Transfer-Encoding": "chunked"},
        environ_overrides={"wsgi.input_terminated": True},
    )
    assert response.status_code == 201, response.get_data()


@sqlite_only
def test_gunicorn_answers_413_to_a_chunked_upload_over_the_cap(service: Service) -> None:
    """The same through real gunicorn, which de-chunks the body (wsgi.input_terminated)."""
    with service.running(workers=1) as server:
        host, port = server.base_url.removeprefix("http://").split(":")
        piece = b"a" * 65536
        with socket.create_connection((host, int(port)), timeout=30) as conn:
            conn.sendall(
                b"POST /v1/manifests HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
            )
            try:
                for _ in range(MAX_ENVELOPE_BYTES // len(piece) + 4):
                    conn.sendall(b"%x\r\n" % len(piece) + piece + b"\r\n")
                conn.sendall(b"0\r\n\r\n")
            except OSError:
                pass  # the server may answer and close before reading it all
            answer = b""
            while chunk := conn.recv(65536):
                answer += chunk
    status_line = answer.split(b"\r\n", 1)[0]
    assert b" 413 " in status_line, answer[:300]
    assert b'"too_large"' in answer


# --- root rotation ------------------------------------------------------------------------


def test_an_already_expired_root_is_refused_422_and_the_store_is_unchanged(
    client: FlaskClient, service: Service, deployment: Deployment
) -> None:
    """Accepting it would freeze publication (every manifest is then `root_expired`),
    and the roots table is append-only: the mistake could only be undone by root N+2."""
    t = now()
    expired = root_document(
        2,
        deployment.root_keys,
        deployment.publisher_keys,
        issued_at=t - timedelta(days=30),
        expires=t - timedelta(days=1),
    )
    body = root_envelope(expired, deployment.root_keys)
    before = service.state()
    response = client.post("/v1/roots", data=body, headers=JSON)
    assert response.status_code == 422, response.get_data()
    assert _error(response)["code"] == "root_expired"
    assert service.state() == before


def test_a_fresh_root_rotation_is_still_accepted(
    client: FlaskClient, deployment: Deployment
) -> None:
    response = client.post("/v1/roots", data=deployment.rotate_publisher(), headers=JSON)
    assert response.status_code == 201, response.get_data()


# --- secrets in messages ------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "postgresq://admin:hunter2@db.internal/pins",
        "jdbc:postgresql://admin:hunter2@db.internal:5432/pins",
        "mysql://admin:hunter2@db.internal/pins",
    ],
)
def test_a_mistyped_database_url_is_refused_without_its_password(url: str) -> None:
    with pytest.raises(ValueError) as caught:
        open_store(None, url)
    assert "hunter2" not in str(caught.value)
    assert "db.internal" in str(caught.value)  # still says which URL was wrong


def test_redacting_a_database_url_keeps_everything_but_the_password() -> None:
    assert (
        redact_database_url("postgresql://admin:hunter2@db.internal:5432/pins?sslmode=require")
        == "postgresql://admin:***@db.internal:5432/pins?sslmode=require"
    )
    assert redact_database_url("postgresql://db.internal/pins") == "postgresql://db.internal/pins"
    assert "hunter2" not in redact_database_url("postgresql:///pins?password=hunter2")


# --- report rate limit --------------------------------------------------------------------


def test_ipv6_addresses_of_one_slash_64_share_a_report_bucket() -> None:
    """A single host on IPv6 typically owns a whole /64: keyed per address, it could
    send unlimited reports (each one a row in the store) by changing the low bits."""
    limiter = RateLimiter(burst=2, per_hour=0, clock=lambda: 0.0)
    addresses = [f"2001:db8:1:2::{i:x}" for i in range(1, 6)]
    allowed = [limiter.allow(rate_limit_key(a)) for a in addresses]
    assert allowed == [True, True, False, False, False]
    assert limiter.allow(rate_limit_key("2001:db8:1:3::1"))  # another /64: its own bucket


def test_rate_limit_keys_of_ipv4_and_odd_addresses() -> None:
    assert rate_limit_key("192.0.2.7") == "192.0.2.7"
    assert rate_limit_key("::ffff:192.0.2.7") == "192.0.2.7"  # v4-mapped is the v4 client
    assert rate_limit_key("2001:db8::1%eth0") == rate_limit_key("2001:db8::2")
    assert rate_limit_key("unknown") == "unknown"


def test_reports_from_one_ipv6_network_are_limited_through_the_api(
    service: Service,
) -> None:
    app = service.app(REPORT_BURST=2, REPORT_PER_HOUR=0)
    try:
        client = app.test_client()
        report = (
            b'{"host": "api.example.com", "port": 443,'
            b' "observed": ["47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="],'
            b' "manifest_version": 1, "mode": "enforce", "time": "2026-12-03T12:00:00Z"}'
        )
        statuses = [
            client.post(
                "/v1/reports",
                data=report,
                headers=JSON,
                environ_base={"REMOTE_ADDR": f"2001:db8:7:7::{i:x}"},
            ).status_code
            for i in range(1, 5)
        ]
    finally:
        app.extensions["pinserver"].store.close()
    assert statuses == [202, 202, 429, 429]


# --- version paths ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path", ["/v1/manifests/\uff11.json", "/v1/roots/\u0661.json", "/v1/manifests/01.json"]
)
def test_non_ascii_digits_are_not_a_second_url_for_a_version(
    client: FlaskClient, path: str
) -> None:
    """Werkzeug's int converter matches any Unicode digit: `/v1/manifests/１.json` served
    manifest 1, a URL the static export does not have and caches key separately."""
    response = client.get(path)
    assert response.status_code == 404
    assert _error(response)["code"] == "not_found"


def test_ascii_version_paths_still_work(client: FlaskClient) -> None:
    assert client.get("/v1/manifests/1.json").status_code == 200
    assert client.get("/v1/roots/1.json").status_code == 200
    assert client.get("/v1/roots/2.json").status_code == 404
