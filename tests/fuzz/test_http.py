"""Any request to any endpoint gets a JSON 4xx (or a success that is allowed to
happen), never a 500 or an unhandled exception, and never a change to the store:
fuzzed through Flask's test client over a real SQLite store."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from flask import Flask
from hypothesis import example, given
from hypothesis import strategies as st

from pinserver.server import create_app
from pinserver.store.sqlite import SQLiteStore
from tests.factory import Deployment
from tests.fuzz.conftest import FUZZ
from tests.fuzz.strategies import HOSTILE_SNIPPETS, envelopes, json_values
from tests.support.gunicorn import init_store

PATHS = [
    "/healthz",
    "/metrics",
    "/v1/manifest.json",
    "/v1/manifests",
    "/v1/manifests/{n}.json",
    "/v1/roots",
    "/v1/roots/{n}.json",
    "/v1/history",
    "/v1/reports",
    "/audit",
    "/audit/",
    "/audit/manifests/{t}",
    "/audit/hosts/{t}",
    "/audit/static/{t}",
    "/static/{t}",
    "/{t}",
]
CONTENT_TYPES = [
    "application/json",
    "application/vnd.pinserver.manifest+json",
    "application/json; charset=latin-1",
    "text/plain",
    "multipart/form-data; boundary=x",
    "application/x-www-form-urlencoded",
    "",
]
header_text = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0xFF, blacklist_characters="\x7f"),
    max_size=60,
)


@st.composite
def requests_(draw: st.DrawFn, seeds: tuple[bytes, bytes]) -> dict[str, Any]:
    template = draw(st.sampled_from(PATHS))
    number = draw(st.one_of(st.integers(-5, 2**64).map(str), st.text(max_size=10), st.just("1")))
    text = draw(st.text(max_size=30))
    path = template.format(n=quote(number, safe=""), t=quote(text, safe=""))
    query = draw(
        st.dictionaries(
            st.sampled_from(["after", "limit", "before", "version", "x"]),
            st.one_of(st.integers(-(2**70), 2**70).map(str), st.text(max_size=12)),
            max_size=3,
        )
    )
    headers = {}
    content_type = draw(st.sampled_from(CONTENT_TYPES))
    if content_type:
        headers["Content-Type"] = content_type
    for name in ("If-None-Match", "Authorization", "X-Pinserver-Reason"):
        if draw(st.booleans()):
            headers[name] = draw(header_text)
    body = draw(
        st.one_of(
            st.binary(max_size=256),
            envelopes(seeds[0]),
            envelopes(seeds[1]),
            json_values.map(lambda v: json.dumps(v).encode()),
            st.sampled_from(HOSTILE_SNIPPETS),
        )
    )
    method = draw(st.sampled_from(["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]))
    return {"method": method, "path": path, "query": query, "headers": headers, "body": body}


class Service:
    def __init__(self) -> None:
        self.base = Path(tempfile.mkdtemp(prefix="pinserver-fuzz-"))
        self.deployment = Deployment()
        self.deployment.publish()
        self.deployment.rotate_publisher()
        self.deployment.publish()
        init_store(self.base / "data", Deployment(roots=self.deployment.roots[:1]))
        self.app: Flask = create_app(
            {
                "DATA_DIR": str(self.base / "data"),
                "TESTING": True,
                "REPORT_BURST": 10**9,
                "ADMIN_TOKEN": "admin-token",
            }
        )
        client = self.app.test_client()
        headers = {"Content-Type": "application/json"}
        assert (
            client.post(
                "/v1/manifests", data=self.deployment.manifests[0], headers=headers
            ).status_code
            == 201
        )
        assert (
            client.post("/v1/roots", data=self.deployment.roots[1], headers=headers).status_code
            == 201
        )
        assert (
            client.post(
                "/v1/manifests", data=self.deployment.manifests[1], headers=headers
            ).status_code
            == 201
        )

    def snapshot(self) -> tuple[object, ...]:
        store = SQLiteStore(self.base / "data")
        try:
            return (store.head(), store.roots(), store.manifests_after(0, 1000))
        finally:
            store.close()

    def report_count(self) -> int:
        store = SQLiteStore(self.base / "data")
        try:
            return len(store.reports(limit=10**6))
        finally:
            store.close()

    def close(self) -> None:
        self.app.extensions["pinserver"].store.close()
        shutil.rmtree(self.base, ignore_errors=True)


@pytest.fixture(scope="module")
def service() -> Iterator[Service]:
    running = Service()
    yield running
    running.close()


def _seeds() -> tuple[bytes, bytes]:
    deployment = Deployment()
    deployment.publish()
    return deployment.roots[0], deployment.manifests[0]


def _get(path: str) -> dict[str, Any]:
    return {"method": "GET", "path": path, "query": {}, "headers": {}, "body": b""}


@FUZZ
@given(request=requests_(_seeds()))
# Found by this test: versions past SQLite's 64-bit integers were a 500.
@example(request=_get(f"/v1/manifests/{2**64}.json"))
@example(request=_get(f"/v1/roots/{2**63}.json"))
def test_no_request_gets_a_500_or_changes_the_store(
    service: Service, request: dict[str, Any]
) -> None:
    before = service.snapshot()
    reports_before = service.report_count()
    client = service.app.test_client()
    response = client.open(
        request["path"],
        method=request["method"],
        query_string=request["query"],
        headers=request["headers"],
        data=request["body"],
    )
    assert response.status_code < 500, response.get_data()
    html_page = request["path"].startswith("/audit") and response.mimetype == "text/html"
    if response.status_code >= 400 and request["method"] != "HEAD" and not html_page:
        # The API's one error shape; the auditor's HTML pages answer humans in HTML.
        error = json.loads(response.get_data())["error"]
        assert isinstance(error["code"], str)
        assert isinstance(error["message"], str)
    assert service.snapshot() == before
    accepted_report = response.status_code == 202 and request["path"] == "/v1/reports"
    assert service.report_count() == reports_before + (1 if accepted_report else 0)
