"""The auditor view in a real browser: headless Chromium against a real gunicorn.

Chromium is driven directly: ``--dump-dom`` returns the DOM it built, ``--screenshot``
what it painted, and its console log reports every Content-Security-Policy violation.
Set PINSERVER_UPDATE_SCREENSHOTS=1 to refresh docs/audit-timeline.png and
docs/audit-diff.png (otherwise the screenshots go to a temporary directory).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.audit.browser import (
    by_id,
    dump_dom,
    elements,
    hex_colour,
    painted_colours,
    screenshot,
    with_class,
)
from tests.audit.history import A_NEW, A_PRIMARY, HOSTILE_NOTE, History
from tests.support.gunicorn import running_server

DOCS = Path(__file__).resolve().parents[2] / "docs"
# From pinserver/server/static/audit.css: painted only if the stylesheet loaded.
VERIFIED_BADGE = hex_colour("#dafbe1")
REMOVED_PIN = hex_colour("#ffebe9")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[History, str]]:
    """One untouched history behind one gunicorn for the read-only tests."""
    data_dir = tmp_path_factory.mktemp("served") / "data"
    history = History(data_dir, datetime.now(UTC).replace(microsecond=0)).build()
    names = history.write_key_names(data_dir.parent / "key-names.json")
    with running_server(
        history.data_dir, workers=1, env={"PINSERVER_KEY_NAMES": str(names)}
    ) as base_url:
        yield history, base_url


def _screenshot_dir(tmp_path: Path) -> Path:
    return DOCS if os.environ.get("PINSERVER_UPDATE_SCREENSHOTS") == "1" else tmp_path


def test_timeline_lists_every_published_version(chromium: str, served: tuple[History, str]) -> None:
    _, base_url = served
    run = dump_dom(chromium, base_url + "/audit")
    assert run.csp_violations == []
    manifests = [e.attrs["id"] for e in with_class(run.stdout, "manifest", "li")]
    assert manifests == ["v4", "v3", "v2", "v1"]
    events = [e.attrs["id"] for e in with_class(run.stdout, "event", "li")]
    # root 2 sits just below the first manifest published under it
    assert events == ["v4", "v3", "root2", "v2", "v1", "root1"]
    statuses = [e.text for e in with_class(run.stdout, "status")]
    assert statuses == ["verified"] * 6
    assert "emergency: updates.example.com decommissioned" in by_id(run.stdout, "v3").text
    assert "bob (publisher)" in by_id(run.stdout, "v4").text
    assert "alice (publisher)" in by_id(run.stdout, "v1").text


def test_diff_page_shows_added_and_removed_pin(chromium: str, served: tuple[History, str]) -> None:
    _, base_url = served
    run = dump_dom(chromium, base_url + "/audit/manifests/2")
    assert run.csp_violations == []
    diff = by_id(run.stdout, "diff").text
    assert "Changes from version 1" in diff
    added = [e.text for e in with_class(run.stdout, "added", "li")]
    removed = [e.text for e in with_class(run.stdout, "removed", "li")]
    assert any(A_NEW in text for text in added)
    assert any(A_PRIMARY in text for text in removed)
    assert not any(A_PRIMARY in text for text in added)
    assert "host added: cdn.example.com" in diff
    assert "verified" in by_id(run.stdout, "verification").text
    # the hostile note arrived as text, not as elements
    notes = [e.text for e in with_class(run.stdout, "note")]
    assert " ".join(HOSTILE_NOTE.split()) in notes
    assert not [e for e in elements(run.stdout) if e.tag in ("script", "b")]


def test_screenshots_of_timeline_and_diff(
    chromium: str, served: tuple[History, str], tmp_path: Path
) -> None:
    _, base_url = served
    target = _screenshot_dir(tmp_path)
    timeline = target / "audit-timeline.png"
    run = screenshot(chromium, base_url + "/audit", timeline, window=(1100, 1250))
    assert run.csp_violations == []
    assert VERIFIED_BADGE in painted_colours(timeline.read_bytes())
    diff = target / "audit-diff.png"
    run = screenshot(chromium, base_url + "/audit/manifests/2", diff, window=(1100, 1250))
    assert run.csp_violations == []
    assert REMOVED_PIN in painted_colours(diff.read_bytes())


def test_tampered_envelope_shows_as_not_verified(chromium: str, live_history: History) -> None:
    with running_server(live_history.data_dir, workers=1) as base_url:
        live_history.flip_signature_byte(3)
        run = dump_dom(chromium, base_url + "/audit/manifests/3")
        verdict = by_id(run.stdout, "verification").text
        assert "not verified" in verdict
        assert "publisher role of root 2 threshold not met" in verdict
        timeline = dump_dom(chromium, base_url + "/audit").stdout
        assert "failed" in by_id(timeline, "v3").classes
        assert "not verified" in by_id(timeline, "v3").text
        assert by_id(timeline, "v4").text.count("not verified") == 0
