"""``/audit/hosts/HOST`` is paged: a request reads and verifies a fixed window of
versions, whatever the size of the store, and the older pages hold the older changes.
Over a real SQLite store; the rows a request reads are counted by a wrapper around it."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from pinserver.diff import host_history
from pinserver.documents import Manifest
from pinserver.envelope import Envelope
from pinserver.server import audit, create_app
from pinserver.store.base import StoredManifest
from pinserver.store.sqlite import SQLiteStore
from tests.audit.browser import with_class
from tests.factory import NOW, Deployment, fake_pin, pinset
from tests.support.gunicorn import init_store

HOST = "api.example.com"
VERSIONS = 12
WINDOW = 3
# api.example.com: added in 1, new pins in 4 and 8, removed in 11; another host throughout.
STAGES = {1: "first", 4: "second", 8: "third", 11: None}


class CountingStore:
    """A real store that counts the manifest rows handed out (reads of history)."""

    def __init__(self, store: SQLiteStore) -> None:
        self._store = store
        self.rows = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def manifests_after(self, after: int, limit: int) -> list[StoredManifest]:
        rows = self._store.manifests_after(after, limit)
        self.rows += len(rows)
        return rows

    def get_manifest(self, version: int) -> StoredManifest | None:
        self.rows += 1
        return self._store.get_manifest(version)

    def latest_manifest(self) -> StoredManifest | None:
        self.rows += 1
        return self._store.latest_manifest()


@pytest.fixture
def deployment(tmp_path: Path) -> Deployment:
    d = Deployment()
    stage: str | None = None
    for version in range(1, VERSIONS + 1):
        stage = STAGES.get(version, stage)
        sets = [pinset("www.example.com")]
        if stage is not None:
            sets.append(pinset(HOST, [fake_pin(f"api-{stage}")]))
        d.publish(pinsets=sets)
    init_store(tmp_path / "data", d, publish=True, now=NOW)
    return d


@pytest.fixture
def counting(deployment: Deployment, tmp_path: Path) -> Iterator[CountingStore]:
    store = CountingStore(SQLiteStore(tmp_path / "data"))
    yield store
    store.close()


@pytest.fixture
def client(counting: CountingStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FlaskClient:
    monkeypatch.setattr(audit, "HOST_PAGE_VERSIONS", WINDOW)
    app: Flask = create_app(
        {
            "DATA_DIR": str(tmp_path / "data"),
            "STORE": counting,
            "CHECK_INTEGRITY": False,
            "PINSERVER_CLOCK": lambda: NOW,
            "TESTING": True,
        }
    )
    return app.test_client()


def events(html: str) -> list[tuple[int, str]]:
    return [
        (int(e.text.split()[1]), (e.classes - {"event", "hostevent"}).pop())
        for e in with_class(html, "hostevent", "li")
    ]


def older_link(html: str) -> str | None:
    found = re.search(r'href="(/audit/hosts/[^"?]+\?before=\d+)">older<', html)
    return found.group(1) if found else None


def test_each_page_reads_a_bounded_number_of_rows_and_older_pages_hold_older_changes(
    client: FlaskClient, counting: CountingStore, deployment: Deployment
) -> None:
    url: str | None = f"/audit/hosts/{HOST}"
    pages: list[list[tuple[int, str]]] = []
    while url is not None:
        counting.rows = 0
        response = client.get(url)
        assert response.status_code == 200
        html = response.get_data(as_text=True)
        # the window, the version below it, and that one's predecessor for the link
        assert counting.rows <= WINDOW + 2, (url, counting.rows)
        pages.append(events(html))
        url = older_link(html)
    assert pages == [[(11, "removed")], [(8, "changed")], [(4, "changed")], [(1, "added")]]
    # Paging loses nothing: the same events as one pass over every version.
    manifests = [Manifest.from_bytes(Envelope.from_bytes(m).payload) for m in deployment.manifests]
    everything = [(e.version, e.kind) for e in reversed(host_history(manifests, HOST))]
    assert [event for page in pages for event in page] == everything


def test_a_page_measures_its_first_change_against_the_version_below_it(
    client: FlaskClient,
) -> None:
    """Version 4 changed the pins of version 3 (on the page below): "changed", with the
    pins it replaced, never "added"."""
    html = client.get(f"/audit/hosts/{HOST}?before=7").get_data(as_text=True)
    assert events(html) == [(4, "changed")]
    assert fake_pin("api-first") in html  # the pin version 4 removed
    assert "Pinned in version 6" in html
    assert 'href="/audit/hosts/api.example.com?before=10">newer<' in html


def test_a_page_without_changes_says_so(client: FlaskClient) -> None:
    """Versions 5..7 keep the pins version 4 set."""
    html = client.get(f"/audit/hosts/{HOST}?before=8").get_data(as_text=True)
    assert events(html) == []
    assert "No change to api.example.com's pins in these versions" in html
    assert "versions 5 to 7 of 12" in html


@pytest.mark.parametrize("before", ["0", "x", "-3"])
def test_a_bad_page_is_refused(client: FlaskClient, before: str) -> None:
    assert client.get(f"/audit/hosts/{HOST}?before={before}").status_code == 400
