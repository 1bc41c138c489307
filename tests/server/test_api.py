"""The HTTP API through Flask's test client: the bulk tables of bad input and every
refusal, each a JSON error with a stable code, the store unchanged, never a 500.
Every test runs on both store backends (the ``service`` fixture)."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

import pytest
from flask.testing import FlaskClient

from pinserver.documents import Pin, PinSet, Root
from pinserver.envelope import ROOT_TYPE, Envelope, sign
from pinserver.keys import PrivateKey
from pinserver.store.base import Store, StoredManifest, StoredRoot
from pinserver.trust import ManifestFloor, VerifiedManifest, verify_publication
from tests.factory import (
    Deployment,
    manifest_document,
    manifest_envelope,
    payload_hash,
    pinset,
)
from tests.server.conftest import JSON, Service, next_manifest, now, window
from tests.support.backends import postgres_only


def _envelope_dict(body: bytes) -> dict[str, object]:
    return json.loads(body)


def _with(body: bytes, **changes: object) -> bytes:
    obj = _envelope_dict(body)
    obj.update(changes)
    return json.dumps(obj).encode()


def _chained(d: Deployment, **changes: object) -> bytes:
    """The deployment's next manifest with ``changes``, validly signed."""
    fields = {
        "previous": payload_hash(d.manifests[-1]),
        "root_version": d.root_version,
        **window(),
        **changes,
    }
    doc = manifest_document(d.manifest_version + 1, **fields)  # type: ignore[arg-type]
    return manifest_envelope(doc, d.publisher_keys)


def _one_pin_manifest(d: Deployment) -> bytes:
    full = pinset("updates.example.com")
    broken = PinSet(
        host=full.host,
        include_subdomains=False,
        mode="enforce",
        expires=full.expires,
        pins=(Pin(full.pins[0].sha256, "primary"),),
    )
    return _chained(d, pinsets=[broken])


def _future_root(d: Deployment) -> bytes:
    return _chained(d, root_version=2)


@dataclass(frozen=True)
class Bad:
    name: str
    make: Callable[[Deployment], bytes]
    status: int
    code: str
    content_type: str | None = "application/json"


BAD_PUBLICATIONS = [
    Bad("not json", lambda d: b"this is not json", 400, "invalid_envelope"),
    Bad("empty body", lambda d: b"", 400, "invalid_envelope"),
    Bad("not utf-8", lambda d: b'{"payload": "\xff\xfe"}', 400, "invalid_envelope"),
    Bad("json array", lambda d: b"[1, 2, 3]", 400, "invalid_envelope"),
    Bad(
        "payload not a string",
        lambda d: _with(next_manifest(d), payload=5),
        400,
        "invalid_envelope",
    ),
    Bad(
        "signatures not a list",
        lambda d: _with(next_manifest(d), signatures={}),
        400,
        "invalid_envelope",
    ),
    Bad(
        "signature wrong type",
        lambda d: _with(next_manifest(d), signatures=[{"keyid": 1, "sig": []}]),
        400,
        "invalid_envelope",
    ),
    Bad(
        "bad base64 payload",
        lambda d: _with(next_manifest(d), payload="%%%not base64"),
        400,
        "invalid_envelope",
    ),
    Bad(
        "bad base64 signature",
        lambda d: _with(next_manifest(d), signatures=[{"keyid": "ab", "sig": "***"}]),
        400,
        "invalid_envelope",
    ),
    Bad(
        "unknown envelope field",
        lambda d: _with(next_manifest(d), extra=True),
        400,
        "invalid_envelope",
    ),
    Bad(
        "duplicate key",
        lambda d: b'{"payload": "", "payload": "", "payloadType": "x", "signatures": []}',
        400,
        "invalid_envelope",
    ),
    Bad("deeply nested", lambda d: b'{"a":' * 5000 + b"1" + b"}" * 5000, 400, "invalid_envelope"),
    Bad("truncated", lambda d: next_manifest(d)[:-40], 400, "invalid_envelope"),
    Bad(
        "NaN",
        lambda d: b'{"payload": NaN, "payloadType": "x", "signatures": []}',
        400,
        "invalid_envelope",
    ),
    Bad(
        "root payloadType",
        lambda d: _with(next_manifest(d), payloadType=ROOT_TYPE),
        400,
        "wrong_payload_type",
    ),
    Bad(
        "other payloadType",
        lambda d: _with(next_manifest(d), payloadType="text/plain"),
        400,
        "wrong_payload_type",
    ),
    Bad("huge", lambda d: b'{"payload": "' + b"A" * (1 << 20) + b'"}', 413, "too_large"),
    Bad("unsigned", lambda d: next_manifest(d, signers=[]), 403, "signature_threshold"),
    Bad(
        "signed by a stranger",
        lambda d: next_manifest(d, signers=[PrivateKey.generate()]),
        403,
        "signature_threshold",
    ),
    Bad(
        "signature over other bytes",
        lambda d: _with(next_manifest(d), payload=base64.b64encode(b'{"x":1}').decode()),
        403,
        "signature_threshold",
    ),
    Bad("one pin, no backup", _one_pin_manifest, 422, "backup_pin_required"),
    Bad(
        "expired",
        lambda d: d.next_manifest(
            issued_at=now() - timedelta(days=40), expires=now() - timedelta(days=1)
        ),
        422,
        "expired",
    ),
    Bad(
        "not yet valid",
        lambda d: next_manifest(d, not_before=now() + timedelta(days=2)),
        422,
        "not_yet_valid",
    ),
    Bad("replayed version", lambda d: d.manifests[-1], 409, "version_conflict"),
    Bad(
        "version skipped",
        lambda d: Deployment(
            root_keys=d.root_keys,
            publisher_keys=d.publisher_keys,
            roots=d.roots,
            manifests=[*d.manifests, d.manifests[-1]],
        ).next_manifest(**window()),
        409,
        "version_conflict",
    ),
    Bad(
        "previous not latest",
        lambda d: Deployment(
            root_keys=d.root_keys,
            publisher_keys=d.publisher_keys,
            roots=d.roots,
            manifests=[Deployment().publish(poll_interval=99)],
        ).next_manifest(**window()),
        409,
        "version_conflict",
    ),
    Bad("names a future root", _future_root, 409, "version_conflict"),
    Bad("text/plain", next_manifest, 415, "unsupported_media_type", "text/plain"),
    Bad("no content type", next_manifest, 415, "unsupported_media_type", None),
    Bad(
        "form", lambda d: b"a=b", 415, "unsupported_media_type", "application/x-www-form-urlencoded"
    ),
]


@pytest.mark.parametrize("case", BAD_PUBLICATIONS, ids=lambda c: c.name)
def test_bad_publication_is_refused_with_a_code(
    case: Bad, client: FlaskClient, deployment: Deployment, service: Service
) -> None:
    before = service.state()
    headers = {"Content-Type": case.content_type} if case.content_type else {}
    response = client.post("/v1/manifests", data=case.make(deployment), headers=headers)
    assert response.status_code == case.status, response.get_data(as_text=True)
    assert response.is_json
    error = response.get_json()["error"]
    assert error["code"] == case.code
    assert error["message"]
    if case.status == 409:
        assert error["latest_version"] == 1
    assert service.state() == before


def _root_3(d: Deployment) -> bytes:
    copy = Deployment(root_keys=d.root_keys, publisher_keys=d.publisher_keys, roots=list(d.roots))
    copy.rotate_publisher()
    return copy.rotate_publisher()


BAD_ROOTS = [
    Bad("not json", lambda d: b"{", 400, "invalid_envelope"),
    Bad("manifest instead", next_manifest, 400, "wrong_payload_type"),
    Bad(
        "signed by the new keys only",
        lambda d: Deployment(root_keys=[PrivateKey.generate()]).roots[0],
        403,
        "signature_threshold",
    ),
    Bad("root 1 again", lambda d: d.roots[0], 409, "version_conflict"),
    Bad("root 3 skips 2", _root_3, 409, "version_conflict"),
]


def _root_3(d: Deployment) -> bytes:
    copy = Deployment(root_keys=d.root_keys, publisher_keys=d.publisher_keys, roots=list(d.roots))
    copy.rotate_publisher()
    return copy.rotate_publisher()


@pytest.mark.parametrize("case", BAD_ROOTS, ids=lambda c: c.name)
def test_bad_root_is_refused(
    case: Bad, client: FlaskClient, deployment: Deployment, service: Service
) -> None:
    before = service.state()
    response = client.post("/v1/roots", data=case.make(deployment), headers=JSON)
    assert response.status_code == case.status, response.get_data(as_text=True)
    assert response.get_json()["error"]["code"] == case.code
    assert service.state() == before


def test_invalid_root_document_is_422(client: FlaskClient, deployment: Deployment) -> None:
    from tests.factory import root_document

    doc = root_document(2, deployment.root_keys, deployment.publisher_keys)
    payload = json.loads(doc.to_bytes())
    payload["expires"] = payload["issued_at"]  # expires must be later than issued_at
    env = Envelope(ROOT_TYPE, json.dumps(payload).encode())
    for key in deployment.root_keys:
        env = sign(env, key)
    response = client.post("/v1/roots", data=env.to_bytes(), headers=JSON)
    assert response.status_code == 422
    assert response.get_json()["error"]["code"] == "invalid_document"


def test_publish_records_source_and_reason(
    client: FlaskClient, deployment: Deployment, service: Service
) -> None:
    body = next_manifest(deployment)
    response = client.post(
        "/v1/manifests",
        data=body,
        headers={**JSON, "X-Pinserver-Reason": "emergency rotation, lint overridden"},
    )
    assert response.status_code == 201
    assert response.get_json()["version"] == 2
    assert response.headers["Location"] == "/v1/manifests/2.json"
    state = service.state()
    stored = state[2][-1]  # type: ignore[index]
    assert stored.reason == "emergency rotation, lint overridden"
    assert stored.source == "127.0.0.1"
    assert stored.envelope == body


@pytest.mark.parametrize("reason", ["", "x" * 2000, "tab\there"])
def test_bad_reason_is_400(client: FlaskClient, deployment: Deployment, reason: str) -> None:
    response = client.post(
        "/v1/manifests",
        data=next_manifest(deployment),
        headers={**JSON, "X-Pinserver-Reason": reason},
    )
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == "invalid_reason"


def test_publish_token(service: Service, deployment: Deployment) -> None:
    app = service.app(PUBLISH_TOKEN="s3cret-token")
    client = app.test_client()
    body = next_manifest(deployment)
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic s3cret-token"}):
        response = client.post("/v1/manifests", data=body, headers={**JSON, **headers})
        assert response.status_code == 401
        assert response.get_json()["error"]["code"] == "unauthorized"
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
    unsigned = next_manifest(deployment, signers=[])
    response = client.post(
        "/v1/manifests", data=unsigned, headers={**JSON, "Authorization": "Bearer s3cret-token"}
    )
    assert response.status_code == 403  # a token never replaces a signature
    response = client.post(
        "/v1/manifests", data=body, headers={**JSON, "Authorization": "Bearer s3cret-token"}
    )
    assert response.status_code == 201
    app.extensions["pinserver"].store.close()


# --- reads ------------------------------------------------------------------------------


def test_reads(client: FlaskClient, deployment: Deployment) -> None:
    latest = client.get("/v1/manifest.json")
    assert latest.status_code == 200
    assert latest.data == deployment.manifests[0]
    assert latest.headers["ETag"].startswith('"')
    assert "max-age" in latest.headers["Cache-Control"]
    again = client.get("/v1/manifest.json", headers={"If-None-Match": latest.headers["ETag"]})
    assert again.status_code == 304
    assert again.data == b""
    assert client.get("/v1/manifests/1.json").data == deployment.manifests[0]
    assert "immutable" in client.get("/v1/manifests/1.json").headers["Cache-Control"]
    assert client.get("/v1/roots/1.json").data == deployment.roots[0]
    assert client.get("/healthz").get_json() == {
        "status": "ok",
        "root_version": 1,
        "manifest_version": 1,
    }


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [
        ("GET", "/v1/roots/2.json", 404, "not_found"),
        ("GET", "/v1/roots/0.json", 404, "not_found"),
        ("GET", "/v1/roots/-1.json", 404, "not_found"),
        ("GET", "/v1/roots/abc.json", 404, "not_found"),
        ("GET", "/v1/manifests/99.json", 404, "not_found"),
        ("GET", "/nowhere", 404, "not_found"),
        ("DELETE", "/v1/manifest.json", 405, "method_not_allowed"),
        ("PUT", "/v1/manifests", 405, "method_not_allowed"),
        ("POST", "/healthz", 405, "method_not_allowed"),
        ("GET", "/v1/history?after=-1", 400, "invalid_parameter"),
        ("GET", "/v1/history?after=x", 400, "invalid_parameter"),
        ("GET", "/v1/history?limit=0", 400, "invalid_parameter"),
        ("GET", "/v1/history?limit=1001", 400, "invalid_parameter"),
        ("GET", "/v1/history?limit=1e3", 400, "invalid_parameter"),
        ("GET", "/v1/reports", 403, "admin_disabled"),
    ],
)
def test_refusals_are_json(
    client: FlaskClient, method: str, path: str, status: int, code: str
) -> None:
    response = client.open(path, method=method)
    assert response.status_code == status
    assert response.get_json()["error"]["code"] == code


def test_no_manifest_yet_is_404(empty_service: Service) -> None:
    empty_service.init(Deployment())
    app = empty_service.app()
    response = app.test_client().get("/v1/manifest.json")
    assert response.status_code == 404
    assert response.get_json()["error"]["code"] == "no_manifest"
    app.extensions["pinserver"].store.close()


def test_uninitialised_store_is_503(empty_service: Service) -> None:
    app = empty_service.app()
    client = app.test_client()
    response = client.get("/v1/manifest.json")
    assert response.status_code == 503
    assert response.get_json()["error"]["code"] == "not_initialised"
    response = client.post("/v1/manifests", data=next_manifest(Deployment()), headers=JSON)
    assert response.status_code == 503
    app.extensions["pinserver"].store.close()


def _publish_elsewhere(store: Store, body: bytes) -> None:
    """Publish as another replica would: straight into the shared store."""

    def verify(root: StoredRoot, latest: StoredManifest | None) -> VerifiedManifest:
        return verify_publication(
            Root.from_bytes(Envelope.from_bytes(root.envelope).payload),
            body,
            latest=ManifestFloor(latest.version, latest.payload_sha256) if latest else None,
            reference_time=now(),
        )

    store.publish_manifest(verify, now=now(), source="another replica")


@postgres_only
@pytest.mark.parametrize(
    ("head_check", "serves_new"), [(None, True), ("3600", False)], ids=["default", "explicit"]
)
def test_postgres_polls_follow_other_replicas_unless_told_otherwise(
    service: Service,
    deployment: Deployment,
    monkeypatch: pytest.MonkeyPatch,
    head_check: str | None,
    serves_new: bool,
) -> None:
    """With PINSERVER_DATABASE_URL the hot path checks the store's head on every poll:
    once this replica's store has the NOTIFY of a publication made on another replica,
    the very next poll serves it. An explicit PINSERVER_HEAD_CHECK still wins."""
    if head_check is None:
        monkeypatch.delenv("PINSERVER_HEAD_CHECK", raising=False)
    else:
        monkeypatch.setenv("PINSERVER_HEAD_CHECK", head_check)
    app = service.app()
    own_store = app.extensions["pinserver"].store
    try:
        client = app.test_client()
        assert client.get("/v1/manifest.json").data == deployment.manifests[0]
        body = next_manifest(deployment)
        other_replica = service.open_store()
        try:
            _publish_elsewhere(other_replica, body)
        finally:
            other_replica.close()
        deadline = time.monotonic() + 10.0  # liveness only: NOTIFY takes milliseconds
        while own_store.head().manifest_version != 2:
            assert time.monotonic() < deadline, "this replica never heard of version 2"
            time.sleep(0.005)
        served = client.get("/v1/manifest.json")
        assert served.status_code == 200
        assert (served.data == body) is serves_new
        assert served.data in (body, deployment.manifests[0])
    finally:
        own_store.close()


def test_history_pages(client: FlaskClient, deployment: Deployment) -> None:
    for _ in range(4):
        body = next_manifest(deployment)
        assert client.post("/v1/manifests", data=body, headers=JSON).status_code == 201
        deployment.manifests.append(body)
    seen: list[int] = []
    after = 0
    while after is not None:
        page = client.get(f"/v1/history?after={after}&limit=2").get_json()
        for item in page["items"]:
            seen.append(item["version"])
            assert set(item) == {
                "version",
                "root_version",
                "payload_sha256",
                "published_at",
                "keyids",
                "envelope",
            }
            envelope = json.dumps(item["envelope"]).encode()
            assert Envelope.from_bytes(envelope) == Envelope.from_bytes(
                deployment.manifests[item["version"] - 1]
            )
        after = page["next_after"]
    assert seen == [1, 2, 3, 4, 5]
    assert client.get("/v1/history").get_json()["next_after"] is None


# --- reports ----------------------------------------------------------------------------


def report(**changes: object) -> dict[str, object]:
    body: dict[str, object] = {
        "host": "api.example.com",
        "port": 443,
        "observed": [base64.b64encode(b"\x01" * 32).decode()],
        "manifest_version": 1,
        "mode": "enforce",
        "time": "2026-12-03T12:00:00Z",
    }
    body.update(changes)
    return body


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"not json", 400, "invalid_report"),
        (json.dumps(report(port=0)).encode(), 400, "invalid_report"),
        (json.dumps(report(port="443")).encode(), 400, "invalid_report"),
        (json.dumps(report(host="*.example.com")).encode(), 400, "invalid_report"),
        (json.dumps(report(observed=[])).encode(), 400, "invalid_report"),
        (json.dumps(report(observed=["abc"])).encode(), 400, "invalid_report"),
        (json.dumps(report(mode="panic")).encode(), 400, "invalid_report"),
        (json.dumps(report(time="yesterday")).encode(), 400, "invalid_report"),
        (json.dumps(report(manifest_version=True)).encode(), 400, "invalid_report"),
        (json.dumps(report(extra=1)).encode(), 400, "invalid_report"),
        (json.dumps(report(note="x" * 20000)).encode(), 413, "too_large"),
    ],
)
def test_bad_reports(
    client: FlaskClient, service: Service, body: bytes, status: int, code: str
) -> None:
    before = service.state()
    response = client.post("/v1/reports", data=body, headers=JSON)
    assert response.status_code == status
    assert response.get_json()["error"]["code"] == code
    assert service.state() == before


def test_reports_are_rate_limited_and_readable_by_admins(service: Service) -> None:
    app = service.app(ADMIN_TOKEN="admin-token", REPORT_BURST=3, REPORT_PER_HOUR=1)
    client = app.test_client()
    statuses = [client.post("/v1/reports", json=report(port=443 + i)).status_code for i in range(5)]
    assert statuses == [202, 202, 202, 429, 429]
    limited = client.post("/v1/reports", json=report())
    assert limited.get_json()["error"]["code"] == "rate_limited"
    assert int(limited.headers["Retry-After"]) > 0
    other = client.post("/v1/reports", json=report(), environ_base={"REMOTE_ADDR": "192.0.2.9"})
    assert other.status_code == 202
    assert client.get("/v1/reports").status_code == 401
    assert client.get("/v1/reports", headers={"Authorization": "Bearer nope"}).status_code == 401
    listing = client.get("/v1/reports", headers={"Authorization": "Bearer admin-token"})
    assert listing.status_code == 200
    items = listing.get_json()["items"]
    assert [i["report"]["port"] for i in items] == [443, 444, 445, 443]
    assert [i["client_address"] for i in items][-1] == "192.0.2.9"
    app.extensions["pinserver"].store.close()


def test_metrics_text(client: FlaskClient) -> None:
    etag = client.get("/v1/manifest.json").headers["ETag"]
    client.get("/v1/manifest.json", headers={"If-None-Match": etag})
    client.get("/nowhere")
    text = client.get("/metrics").get_data(as_text=True)
    assert 'pinserver_polls_total{status="200"} 1' in text
    assert 'pinserver_polls_total{status="304"} 1' in text
    assert 'pinserver_rejections_total{code="not_found"} 1' in text
    assert "pinserver_poll_not_modified_ratio 0.5" in text
    assert "pinserver_manifest_version 1" in text
