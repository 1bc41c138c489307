"""The auditor pages through Flask's test client over a real SQLite store: content,
escaping, headers, paging, and what a tampered or damaged store looks like."""

from __future__ import annotations

import re
import sqlite3
from datetime import timedelta
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from pinserver.documents import Pin, PinSet
from pinserver.envelope import Envelope
from pinserver.server import audit, create_app
from pinserver.store.sqlite import SQLiteStore
from pinserver.trust import verify_anchor_root
from tests.audit.browser import by_id, elements, with_class
from tests.audit.history import (
    A_BACKUP,
    A_NEW,
    A_PRIMARY,
    FORCE_REASON,
    HOSTILE_NOTE,
    U_PRIMARY,
    History,
)
from tests.factory import NOW, fake_pin

PAGES = (
    "/audit",
    "/audit/",
    "/audit?before=3",
    "/audit/manifests/1",
    "/audit/manifests/2",
    "/audit/manifests/4",
    "/audit/hosts/api.example.com",
    "/audit/hosts/updates.example.com",
)


def page(client: FlaskClient, url: str, status: int = 200) -> str:
    response = client.get(url)
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "text/html"
    return response.get_data(as_text=True)


def manifest_ids(html: str) -> list[str]:
    return [e.attrs["id"] for e in with_class(html, "event", "li")]


@pytest.mark.parametrize("url", [*PAGES, "/audit/static/audit.css", "/audit/manifests/99"])
def test_every_page_sends_a_strict_csp_and_nosniff(client: FlaskClient, url: str) -> None:
    response = client.get(url)
    assert response.status_code in (200, 404)
    assert response.headers["Content-Security-Policy"] == (
        "default-src 'none'; style-src 'self'; img-src 'self'; base-uri 'none';"
        " form-action 'none'; frame-ancestors 'none'"
    )
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    response.close()


@pytest.mark.parametrize("url", PAGES)
def test_pages_have_no_script_no_inline_style_and_no_external_asset(
    client: FlaskClient, url: str
) -> None:
    html = page(client, url)
    tags = elements(html)
    assert not [e for e in tags if e.tag in ("script", "style", "iframe", "object")]
    assert not [e for e in tags if "style" in e.attrs or any(a.startswith("on") for a in e.attrs)]
    links = [e.attrs.get("href", "") for e in tags] + [e.attrs.get("src", "") for e in tags]
    assert not [u for u in links if u.startswith(("http:", "https:", "//"))]
    viewport = [e for e in tags if e.tag == "meta" and e.attrs.get("name") == "viewport"]
    assert viewport
    assert "width=device-width" in viewport[0].attrs["content"]


def test_timeline_lists_manifests_and_root_rotations_newest_first(client: FlaskClient) -> None:
    html = page(client, "/audit")
    assert manifest_ids(html) == ["v4", "v3", "root2", "v2", "v1", "root1"]
    assert [e.text for e in with_class(html, "status")] == ["verified"] * 6
    assert "publisher keys changed" in by_id(html, "root2").text
    assert f"published with --force: {FORCE_REASON}" in by_id(html, "v3").text
    assert "force" not in by_id(html, "v4").text
    # configured key names, with the keyid prefix beside them
    assert "bob (publisher)" in by_id(html, "v3").text
    assert "alice (publisher)" in by_id(html, "v2").text
    assert "offline root A" in by_id(html, "root1").text
    assert 'href="/audit/manifests/2"' in html


def test_timeline_warns_of_pin_sets_expiring_within_14_days(client: FlaskClient) -> None:
    html = page(client, "/audit")
    alerts = with_class(html, "alerts")
    assert len(alerts) == 1
    assert "pin set cdn.example.com: 2026-12-08T12:00:00Z (in 5 days)" in alerts[0].text
    assert "api.example.com" not in alerts[0].text  # 200 days out
    assert "manifest 4" not in alerts[0].text  # 30 days out


def test_manifest_and_root_expiring_soon_stand_out(history: History, tmp_path: Path) -> None:
    app = create_app(
        {
            "DATA_DIR": str(history.data_dir),
            "PINSERVER_CLOCK": lambda: NOW + timedelta(days=25),
        }
    )
    html = page(app.test_client(), "/audit")
    alert = with_class(html, "alerts")[0].text
    assert "manifest 4: 2027-01-02T12:00:00Z (in 5 days)" in alert
    assert "cdn.example.com: 2026-12-08T12:00:00Z (expired 20 days ago)" in alert
    assert "root" not in alert
    late = create_app(
        {"DATA_DIR": str(history.data_dir), "PINSERVER_CLOCK": lambda: NOW + timedelta(days=360)}
    )
    assert "root 2: " in with_class(page(late.test_client(), "/audit"), "alerts")[0].text
    app.extensions["pinserver"].store.close()
    late.extensions["pinserver"].store.close()


def test_diff_page_shows_added_and_removed_pins_and_mode_change(client: FlaskClient) -> None:
    html = page(client, "/audit/manifests/2")
    diff = by_id(html, "diff")
    assert "Changes from version 1" in diff.text
    added = [e.text for e in with_class(html, "added", "li")]
    removed = [e.text for e in with_class(html, "removed", "li")]
    assert any(A_NEW in t for t in added)
    assert any(A_PRIMARY in t for t in removed)
    assert not any(A_BACKUP in t for t in added + removed)  # kept
    assert "host added: cdn.example.com" in diff.text
    assert "mode enforce → report" in diff.text
    assert by_id(html, "verification").text.startswith("Verification verified")
    assert 'href="/v1/manifests/2.json"' in html


def test_first_version_and_host_removal_and_renewal(client: FlaskClient) -> None:
    first = by_id(page(client, "/audit/manifests/1"), "diff").text
    assert "first version" in first
    assert "host added: updates.example.com" in first
    assert "host added: api.example.com" in first
    third = by_id(page(client, "/audit/manifests/3"), "diff").text
    assert "host removed: updates.example.com" in third
    assert "host added" not in third
    fourth = by_id(page(client, "/audit/manifests/4"), "diff").text
    assert "No changes to pins or manifest fields." in fourth


def test_pin_notes_and_other_untrusted_text_are_escaped(client: FlaskClient) -> None:
    html = page(client, "/audit/manifests/2")
    assert "<script>" not in html
    assert "<b>bold" not in html
    assert (
        "&lt;script&gt;alert(&#34;pwned&#34;)&lt;/script&gt; &amp; &lt;b&gt;bold&lt;/b&gt;" in html
    )
    assert HOSTILE_NOTE in [e.text for e in with_class(html, "note")]


def test_host_page_shows_pin_history_newest_first(client: FlaskClient) -> None:
    html = page(client, "/audit/hosts/api.example.com")
    events = with_class(html, "hostevent", "li")
    assert [(e.text.split()[1], e.classes - {"event", "hostevent"}) for e in events] == [
        ("2", {"changed"}),
        ("1", {"added"}),
    ]
    assert A_NEW in events[0].text
    assert "mode enforce → report" in events[0].text
    gone = with_class(page(client, "/audit/hosts/updates.example.com"), "hostevent", "li")
    assert [e.text.split()[1] for e in gone] == ["3", "1"]
    assert "removed" in gone[0].classes
    assert U_PRIMARY in gone[0].text
    none = page(client, "/audit/hosts/nowhere.example.com")
    assert "No verified manifest lists nowhere.example.com" in none


def test_timeline_pages(client: FlaskClient, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(audit, "PAGE_SIZE", 2)
    newest = page(client, "/audit")
    assert manifest_ids(newest) == ["v4", "v3", "root2"]
    assert 'href="/audit?before=3"' in newest  # older
    older = page(client, "/audit?before=3")
    assert manifest_ids(older) == ["v2", "v1", "root1"]
    assert 'href="/audit?before=5"' in older  # newer
    assert with_class(older, "pager")[0].text.split() == ["newest", "newer"]
    assert with_class(newest, "pager")[0].text.split() == ["older"]
    assert manifest_ids(page(client, "/audit?before=99")) == manifest_ids(newest)


@pytest.mark.parametrize(
    ("url", "status"),
    [
        ("/audit/manifests/99", 404),
        ("/audit/manifests/0", 404),
        ("/audit/manifests/abc", 404),
        ("/audit/manifests/-1", 404),
        ("/audit/hosts/Not_A_Host", 404),
        ("/audit?before=zero", 400),
        ("/audit?before=0", 400),
    ],
)
def test_bad_addresses_get_an_html_error_page(client: FlaskClient, url: str, status: int) -> None:
    html = page(client, url, status)
    assert "Back to the timeline" in html


# --- a store someone has tampered with ------------------------------------------------


def verdict(client: FlaskClient, version: int) -> str:
    return by_id(page(client, f"/audit/manifests/{version}"), "verification").text


def test_flipped_signature_byte_is_not_verified_and_content_withheld(
    history: History, client: FlaskClient
) -> None:
    history.flip_signature_byte(3)
    text = verdict(client, 3)
    assert "not verified" in text
    assert "publisher role of root 2 threshold not met: 0 valid signature(s) of 1 required" in text
    html = page(client, "/audit/manifests/3")
    assert "pinsets" not in {e.attrs.get("id") for e in elements(html)}
    assert "did not verify, so its content is not shown" in by_id(html, "diff").text
    # version 4 still chains to 3's payload, which is intact; its diff has no trusted base
    assert verdict(client, 4).startswith("Verification verified")
    assert "version 3 did not verify" in by_id(page(client, "/audit/manifests/4"), "diff").text
    timeline = page(client, "/audit")
    assert "failed" in by_id(timeline, "v3").classes
    assert "failed" not in by_id(timeline, "v4").classes
    assert "version 3" in page(client, "/audit/hosts/api.example.com")


def test_a_validly_signed_substitute_breaks_the_hash_chain(
    history: History, client: FlaskClient
) -> None:
    """Someone with the publisher key and the database rewrites version 2 (and its
    recorded hash): version 2 verifies on its own, version 3 no longer chains to it."""
    del history.manifests[1:]  # manifest() chains to the last one it holds: version 1
    substitute = history.manifest(
        2,
        [
            PinSet(
                host="api.example.com",
                include_subdomains=False,
                mode="enforce",
                expires=NOW + timedelta(days=100),
                pins=(Pin(fake_pin("attacker"), "primary"), Pin(A_BACKUP, "backup")),
            )
        ],
        signer=history.alice,
        root_version=1,
    )
    digest = Envelope.from_bytes(substitute).payload_sha256
    history.tamper(2, envelope=substitute, payload_sha256=digest)
    assert "Verification verified" in verdict(client, 2)
    text = verdict(client, 3)
    assert "not verified" in text
    assert "manifest 3 does not chain to manifest 2" in text
    assert digest in text
    assert "(fork)" in text


def test_replaced_payload_without_recorded_hash_is_reported(
    history: History, client: FlaskClient
) -> None:
    other = Envelope.from_bytes(history.manifests[0])  # version 1's envelope, as version 2
    history.tamper(2, envelope=other.to_bytes())
    text = verdict(client, 2)
    assert "not verified" in text
    assert "the envelope listed as version 2 holds manifest version 1" in text


@pytest.mark.parametrize(
    "damage",
    [
        {"envelope": b"not json at all"},
        {"envelope": b'{"payloadType": "x"}'},
        {"envelope": "text, not bytes"},
        {"published_at": "yesterday"},
        {"keyids": "{not json"},
        {"keyids": "5"},
        {"root_version": 77},
    ],
    ids=",".join,
)
def test_a_damaged_row_is_shown_as_damaged_never_a_500(
    history: History, client: FlaskClient, damage: dict[str, object]
) -> None:
    history.tamper(2, **damage)
    for url in PAGES:
        page(client, url)
    text = verdict(client, 2)
    assert "not verified" in text
    assert re.search(r"not verified \S", text)
    assert "not verified" in by_id(page(client, "/audit"), "v2").text


def test_a_tampered_root_fails_every_manifest_published_under_it(
    history: History, client: FlaskClient
) -> None:
    envelope = Envelope.from_bytes(history.roots[1])
    first = envelope.signatures[0]
    broken = Envelope(
        envelope.payload_type,
        envelope.payload,
        (type(first)(first.keyid, bytes([first.sig[0] ^ 1]) + first.sig[1:]),),
    )
    conn = sqlite3.connect(history.db_path)
    conn.execute("DROP TRIGGER roots_append_only_u")
    conn.execute("UPDATE roots SET envelope = ? WHERE version = 2", (broken.to_bytes(),))
    conn.commit()
    conn.close()
    timeline = page(client, "/audit")
    assert "root role of trusted root 1 threshold not met" in by_id(timeline, "root2").text
    assert "published under root 2, which did not verify" in by_id(timeline, "v3").text
    assert "Verification verified" in verdict(client, 2)


def test_without_key_names_keyids_are_shown_by_prefix(history: History, tmp_path: Path) -> None:
    broken = tmp_path / "names.json"
    broken.write_text("[1, 2]")
    app: Flask = create_app({"DATA_DIR": str(history.data_dir), "PINSERVER_KEY_NAMES": str(broken)})
    html = page(app.test_client(), "/audit")
    assert "must be a JSON object mapping keyids to names" in html
    assert history.bob.keyid[:12] in by_id(html, "v4").text
    assert "bob" not in by_id(html, "v4").text
    app.extensions["pinserver"].store.close()


def test_a_store_with_only_root_1_or_nothing_renders(tmp_path: Path) -> None:
    empty = create_app({"DATA_DIR": str(tmp_path / "empty")})
    assert "Nothing published yet." in page(empty.test_client(), "/audit")
    page(empty.test_client(), "/audit/manifests/1", 404)
    empty.extensions["pinserver"].store.close()
    history = History(tmp_path / "one", NOW)
    history.roots.append(history._root(1, history.alice))
    store = SQLiteStore(history.data_dir)
    store.install_first_root(verify_anchor_root(history.roots[0]), now=NOW)
    store.close()
    app = create_app({"DATA_DIR": str(history.data_dir)})
    html = page(app.test_client(), "/audit")
    assert manifest_ids(html) == ["root1"]
    assert "0 manifest versions and 1 root published." in html
    app.extensions["pinserver"].store.close()
