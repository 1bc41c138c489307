"""The pure authoring helpers that manifest new, rotate and renew share, and the mapping
of the server's JSON errors back to pinserver errors."""

from __future__ import annotations

from datetime import timedelta

import pytest

from pinserver import errors
from pinserver.authoring import (
    build_manifest,
    build_root,
    next_manifest_from,
    parse_pins_file,
    pins_file_text,
    read_unverified_document,
    unsigned_envelope,
    with_pinset,
)
from pinserver.cli._http import error_from_response
from pinserver.documents import Manifest, Root
from pinserver.keys import PrivateKey
from pinserver.live import parse_host_port
from tests.factory import NOW, fake_pin, manifest_document, pinset


def test_pins_file_toml_datetimes_durations_and_defaults() -> None:
    text = f"""
poll_interval = 900
report_uri = "https://pins.example.com/v1/reports"
[[pinsets]]
host = "a.example.com"
expires = 2027-06-01T00:00:00Z
pins = [{{ sha256 = "{fake_pin("1")}", role = "primary" }},
        {{ sha256 = "{fake_pin("2")}", role = "backup", note = "reserve" }}]
[[pinsets]]
host = "b.example.com"
mode = "report"
include_subdomains = true
expires = "90d"
pins = [{{ sha256 = "{fake_pin("3")}", role = "primary" }},
        {{ sha256 = "{fake_pin("4")}", role = "backup" }}]
"""
    spec = parse_pins_file(text.encode(), filename="pins.toml", issued_at=NOW)
    a, b = spec.pinsets
    assert (a.mode, a.include_subdomains, a.expires.year) == ("enforce", False, 2027)
    assert a.pins[1].note == "reserve"
    assert (b.mode, b.include_subdomains, b.expires) == ("report", True, NOW + timedelta(days=90))
    assert (spec.poll_interval, spec.report_uri) == (900, "https://pins.example.com/v1/reports")


def test_pins_file_round_trips_through_json() -> None:
    sets = (pinset("a.example.com"), pinset("b.example.com", mode="report"))
    spec = parse_pins_file(pins_file_text(sets).encode(), filename="p.json", issued_at=NOW)
    assert spec.pinsets == sets


@pytest.mark.parametrize(
    ("text", "field"),
    [
        (b'{"pinsets": []}', "pinsets"),
        (b'{"pinsets": [{"host": "A.example.com"}], "x": 1}', "p.json"),
        (b'{"pinsets": [{"host": "a.example.com", "pin": []}]}', "pinsets[0]"),
        (b'{"pinsets": [{"host": "a.example.com", "a": 1, "a": 2}]}', "p.json"),
    ],
)
def test_pins_file_errors_name_the_field(text: bytes, field: str) -> None:
    with pytest.raises(errors.FormatError) as caught:
        parse_pins_file(text, filename="p.json", issued_at=NOW)
    assert caught.value.field == field


def test_pins_file_refuses_a_duplicate_host() -> None:
    text = pins_file_text([pinset("a.example.com"), pinset("a.example.com")])
    with pytest.raises(errors.FormatError, match="appears twice"):
        parse_pins_file(text.encode(), filename="p.json", issued_at=NOW)


def test_next_manifest_from_chains_and_carries_over() -> None:
    first = manifest_document(1, report_uri="https://r.example.com/", poll_interval=600)
    payload = unsigned_envelope(first).payload
    second = next_manifest_from(
        first,
        previous_sha256=unsigned_envelope(first).payload_sha256,
        issued_at=NOW,
        expires=NOW + timedelta(days=30),
    )
    assert payload == first.to_bytes()
    assert (second.version, second.root_version) == (2, first.root_version)
    assert second.previous == unsigned_envelope(first).payload_sha256
    assert (second.pinsets, second.poll_interval) == (first.pinsets, 600)
    assert second.report_uri == "https://r.example.com/"
    cleared = next_manifest_from(
        first,
        previous_sha256="0" * 64,
        issued_at=NOW,
        expires=NOW + timedelta(days=1),
        report_uri=None,
        root_version=3,
    )
    assert (cleared.report_uri, cleared.root_version) == (None, 3)


def test_build_manifest_refuses_what_verification_would() -> None:
    with pytest.raises(errors.FormatError, match="must be null for version 1"):
        build_manifest([pinset("a.example.com")], version=1, previous="0" * 64,
                       root_version=1, issued_at=NOW, expires=NOW + timedelta(days=1))  # fmt: skip
    with pytest.raises(errors.FormatError, match="not_before must be earlier"):
        build_manifest([pinset("a.example.com")], version=1, previous=None, root_version=1,
                       issued_at=NOW, expires=NOW)  # fmt: skip


def test_with_pinset_replaces_or_appends() -> None:
    a, b = pinset("a.example.com"), pinset("b.example.com")
    new_a = pinset("a.example.com", mode="report")
    assert with_pinset([a, b], new_a) == (new_a, b)
    c = pinset("c.example.com")
    assert with_pinset([a, b], c) == (a, b, c)


def test_build_root_and_read_back() -> None:
    root_keys = [PrivateKey.generate().public_key for _ in range(3)]
    publisher = [PrivateKey.generate().public_key]
    window = {"issued_at": NOW, "expires": NOW + timedelta(days=1)}
    root = build_root(version=1, root_keys=root_keys, root_threshold=2, publisher_keys=publisher,
                      publisher_threshold=1, **window)  # fmt: skip
    assert root.root_role.keyids == tuple(k.keyid for k in root_keys)
    back = read_unverified_document(unsigned_envelope(root))
    assert isinstance(back, Root)
    assert back == root
    assert isinstance(read_unverified_document(unsigned_envelope(manifest_document(1))), Manifest)
    with pytest.raises(errors.FormatError, match="both the root and the publisher role"):
        build_root(version=1, root_keys=root_keys, root_threshold=1,
                   publisher_keys=root_keys[:1], publisher_threshold=1, **window)  # fmt: skip


@pytest.mark.parametrize(
    ("status", "body", "cls", "code"),
    [
        (409, {"error": {"code": "version_conflict", "message": "m", "latest_version": 7}},
         errors.VersionConflictError, "version_conflict"),
        (403, {"error": {"code": "signature_threshold", "message": "m"}},
         errors.SignatureError, "signature_threshold"),
        (422, {"error": {"code": "not_yet_valid", "message": "m"}}, errors.ExpiredError,
         "not_yet_valid"),
        (413, {"error": {"code": "too_large", "message": "m"}}, errors.TooLargeError, "too_large"),
        (422, {"error": {"code": "from_a_newer_server", "message": "m"}},
         errors.VerificationError, "from_a_newer_server"),
        (401, {"error": {"code": "unauthorized", "message": "m"}}, errors.FetchError,
         "unauthorized"),
        (502, "<html>bad gateway</html>", errors.FetchError, "fetch_failed"),
    ],
)  # fmt: skip
def test_server_errors_map_back_to_pinserver_errors(
    status: int, body: object, cls: type[errors.PinserverError], code: str
) -> None:
    error = error_from_response(status, body, url="http://127.0.0.1:1/v1/manifests")
    assert type(error) is cls
    assert error.code == code
    if isinstance(error, errors.VersionConflictError):
        assert error.latest_version == 7


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("example.com", ("example.com", 443)),
        ("example.com:8443", ("example.com", 8443)),
        ("[::1]:853", ("::1", 853)),
        ("[::1]", ("::1", 443)),
    ],
)
def test_parse_host_port(text: str, expected: tuple[str, int]) -> None:
    assert parse_host_port(text) == expected


@pytest.mark.parametrize("text", ["", ":443", "h:0", "h:x", "[::1", "[::1]x"])
def test_parse_host_port_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        parse_host_port(text)
