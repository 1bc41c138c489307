"""SPEC sections 3 to 5: strict JSON and the v1 schema of roots and manifests.

Every bad payload is tried twice: parsed directly, and signed by a valid publisher
(or root) threshold and fed to a TrustedSet, which must refuse it with the same
error and keep its state.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from pinserver.documents import MAX_PINS_PER_SET, Manifest, Root
from pinserver.errors import FormatError, PinserverError
from pinserver.keys import b64encode
from pinserver.trust import TrustedSet
from tests.core.helpers import (
    assert_rejected,
    dumps,
    key,
    noncanonical_b64,
    signed,
    signed_root,
)
from tests.factory import (
    NOW,
    fake_pin,
    manifest_document,
    pinset,
    root_document,
    root_envelope,
)

ROOT_KEYS = [key("doc-root-a"), key("doc-root-b")]
PUBLISHER = key("doc-publisher")


def _base_manifest() -> dict[str, Any]:
    obj = manifest_document(
        1,
        pinsets=[pinset("api.example.com"), pinset("cdn.example.com", include_subdomains=True)],
        report_uri="https://reports.example.com/v1/reports",
    ).to_dict()
    obj["pinsets"][0]["pins"][0]["note"] = "x"
    return obj


BASE_MANIFEST = _base_manifest()
BASE_TEXT = json.dumps(BASE_MANIFEST)


def manifest_with(change: Callable[[dict[str, Any]], object]) -> Callable[[], bytes]:
    def make() -> bytes:
        obj = copy.deepcopy(BASE_MANIFEST)
        change(obj)
        return dumps(obj)

    return make


def text_with(old: str, new: str, *, count: int = 1) -> Callable[[], bytes]:
    def make() -> bytes:
        assert old in BASE_TEXT, old
        return BASE_TEXT.replace(old, new, count).encode()

    return make


def raw(data: bytes) -> Callable[[], bytes]:
    return lambda: data


def put(path: str, value: object) -> Callable[[dict[str, Any]], None]:
    """Set a dotted path (``pinsets.0.pins.1.role``) to ``value``."""

    def change(obj: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        target: Any = obj
        for part in parents:
            target = target[int(part)] if isinstance(target, list) else target[part]
        if isinstance(target, list):
            target[int(last)] = value
        else:
            target[last] = value

    return change


def drop(path: str) -> Callable[[dict[str, Any]], None]:
    def change(obj: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        target: Any = obj
        for part in parents:
            target = target[int(part)] if isinstance(target, list) else target[part]
        del target[last]

    return change


def both(*changes: Callable[[dict[str, Any]], None]) -> Callable[[dict[str, Any]], None]:
    def change(obj: dict[str, Any]) -> None:
        for c in changes:
            c(obj)

    return change


def pins(count: int, *, backups: int = 1) -> list[dict[str, str]]:
    return [
        {"sha256": fake_pin(f"pin-{i}"), "role": "backup" if i < backups else "primary"}
        for i in range(count)
    ]


@dataclass(frozen=True)
class BadCase:
    name: str
    payload: Callable[[], bytes]
    field: str | None
    error: type[PinserverError] = FormatError
    code: str = "invalid_document"


P0 = "pinsets.0"
PIN0 = "pinsets.0.pins.0"
HEX = "ab" * 32
NESTED = "[" * 40 + "]" * 40

MANIFEST_CASES = [
    # strict JSON (field "manifest": the parser names the document)
    BadCase(
        "invalid UTF-8",
        lambda: BASE_TEXT.replace('"note": "x"', '"note": "@"').encode().replace(b"@", b"\xff"),
        "manifest",
    ),
    BadCase(
        "overlong UTF-8",
        lambda: BASE_TEXT.replace('"note": "x"', '"note": "@"').encode().replace(b"@", b"\xc0\xaf"),
        "manifest",
    ),
    BadCase("byte order mark", lambda: b"\xef\xbb\xbf" + BASE_TEXT.encode(), "manifest"),
    BadCase("UTF-16", lambda: BASE_TEXT.encode("utf-16"), "manifest"),
    BadCase("trailing garbage", lambda: BASE_TEXT.encode() + b" x", "manifest"),
    BadCase("two objects", lambda: BASE_TEXT.encode() * 2, "manifest"),
    BadCase("trailing comma", text_with('"type": "manifest"', '"type": "manifest",'), "manifest"),
    BadCase("comment", lambda: b"// pins\n" + BASE_TEXT.encode(), "manifest"),
    BadCase("single quotes", text_with('"type"', "'type'"), "manifest"),
    BadCase("top-level array", raw(b"[]"), "manifest"),
    BadCase("top-level array of the object", f"[{BASE_TEXT}]".encode, "manifest"),
    BadCase("top-level string", raw(b'"manifest"'), "manifest"),
    BadCase("top-level number", raw(b"1"), "manifest"),
    BadCase("top-level null", raw(b"null"), "manifest"),
    BadCase("empty payload", raw(b""), "manifest"),
    BadCase("NaN", text_with('"poll_interval": 3600', '"poll_interval": NaN'), "manifest"),
    BadCase(
        "Infinity", text_with('"poll_interval": 3600', '"poll_interval": Infinity'), "manifest"
    ),
    BadCase(
        "-Infinity", text_with('"poll_interval": 3600', '"poll_interval": -Infinity'), "manifest"
    ),
    BadCase(
        "float overflow", text_with('"poll_interval": 3600', '"poll_interval": 1e400'), "manifest"
    ),
    BadCase(
        "5000-digit integer",
        text_with('"poll_interval": 3600', '"poll_interval": ' + "9" * 5000),
        "manifest",
    ),
    BadCase(
        "duplicate key at top", text_with('"version": 1', '"version": 1, "version": 1'), "manifest"
    ),
    BadCase(
        "duplicate key at depth",
        text_with('"role": "primary"', '"role": "primary", "role": "backup"'),
        "manifest",
    ),
    BadCase("deep nesting", text_with('"note": "x"', f'"note": {NESTED}'), "manifest"),
    BadCase("lone surrogate escape", text_with('"note": "x"', '"note": "\\ud800"'), "manifest"),
    # unknown and missing fields at every level
    BadCase("unknown field at top", manifest_with(put("extensions", {})), "document"),
    BadCase("unknown field in a pin set", manifest_with(put(f"{P0}.max_age", 1)), "pinsets[0]"),
    BadCase(
        "unknown field in a pin", manifest_with(put(f"{PIN0}.algo", "sha256")), "pinsets[0].pins[0]"
    ),
    BadCase("missing report_uri", manifest_with(drop("report_uri")), "document"),
    BadCase("missing previous", manifest_with(drop("previous")), "document"),
    BadCase("missing type", manifest_with(drop("type")), "document"),
    BadCase("missing pin set mode", manifest_with(drop(f"{P0}.mode")), "pinsets[0]"),
    BadCase("missing pin role", manifest_with(drop(f"{PIN0}.role")), "pinsets[0].pins[0]"),
    # wrong types
    BadCase("type root", manifest_with(put("type", "root")), "type"),
    BadCase("spec_version 2", manifest_with(put("spec_version", 2)), "spec_version"),
    BadCase("spec_version true", manifest_with(put("spec_version", True)), "spec_version"),
    BadCase("spec_version 1.0", manifest_with(put("spec_version", 1.0)), "spec_version"),
    BadCase("spec_version '1'", manifest_with(put("spec_version", "1")), "spec_version"),
    BadCase("version as string", manifest_with(put("version", "1")), "version"),
    BadCase("version as float", manifest_with(put("version", 1.0)), "version"),
    BadCase("version as bool", manifest_with(put("version", True)), "version"),
    BadCase("root_version as bool", manifest_with(put("root_version", True)), "root_version"),
    BadCase(
        "poll_interval as string", manifest_with(put("poll_interval", "3600")), "poll_interval"
    ),
    BadCase(
        "include_subdomains as int",
        manifest_with(put(f"{P0}.include_subdomains", 1)),
        "pinsets[0].include_subdomains",
    ),
    BadCase(
        "include_subdomains as string",
        manifest_with(put(f"{P0}.include_subdomains", "true")),
        "pinsets[0].include_subdomains",
    ),
    BadCase("pinsets as object", manifest_with(put("pinsets", {})), "pinsets"),
    BadCase("pin set as list", manifest_with(put(P0, [])), "pinsets[0]"),
    BadCase("pins as string", manifest_with(put(f"{P0}.pins", "x")), "pinsets[0].pins"),
    BadCase("pin as string", manifest_with(put(PIN0, fake_pin("a"))), "pinsets[0].pins[0]"),
    BadCase("note as number", manifest_with(put(f"{PIN0}.note", 5)), "pinsets[0].pins[0].note"),
    BadCase(
        "note too long", manifest_with(put(f"{PIN0}.note", "n" * 1025)), "pinsets[0].pins[0].note"
    ),
    BadCase("mode block", manifest_with(put(f"{P0}.mode", "block")), "pinsets[0].mode"),
    BadCase("mode as list", manifest_with(put(f"{P0}.mode", ["enforce"])), "pinsets[0].mode"),
    BadCase(
        "pin role secondary",
        manifest_with(put(f"{PIN0}.role", "secondary")),
        "pinsets[0].pins[0].role",
    ),
    BadCase("report_uri as number", manifest_with(put("report_uri", 5)), "report_uri"),
    BadCase(
        "report_uri ftp", manifest_with(put("report_uri", "ftp://example.com/r")), "report_uri"
    ),
    BadCase(
        "report_uri javascript",
        manifest_with(put("report_uri", "javascript:alert(1)")),
        "report_uri",
    ),
    BadCase(
        "report_uri with space",
        manifest_with(put("report_uri", "https://a.example/ b")),
        "report_uri",
    ),
    BadCase(
        "report_uri too long",
        manifest_with(put("report_uri", "https://a.example/" + "r" * 2048)),
        "report_uri",
    ),
    # timestamps: RFC 3339 UTC, seconds, Z, nothing else
    BadCase(
        "offset instead of Z", manifest_with(put("expires", "2027-01-02T12:00:00+00:00")), "expires"
    ),
    BadCase(
        "fractional seconds", manifest_with(put("expires", "2027-01-02T12:00:00.5Z")), "expires"
    ),
    BadCase("lower-case z", manifest_with(put("expires", "2027-01-02T12:00:00z")), "expires"),
    BadCase("no zone", manifest_with(put("expires", "2027-01-02T12:00:00")), "expires"),
    BadCase("space separator", manifest_with(put("expires", "2027-01-02 12:00:00Z")), "expires"),
    BadCase("date only", manifest_with(put("expires", "2027-01-02")), "expires"),
    BadCase("no minutes or seconds", manifest_with(put("expires", "2027-01-02T12Z")), "expires"),
    BadCase("February 30", manifest_with(put("expires", "2027-02-30T12:00:00Z")), "expires"),
    BadCase("leap second", manifest_with(put("expires", "2026-12-31T23:59:60Z")), "expires"),
    BadCase("non-ASCII digits", manifest_with(put("expires", "٢٠٢٧-01-02T12:00:00Z")), "expires"),
    BadCase("epoch number", manifest_with(put("issued_at", 1796212800)), "issued_at"),
    BadCase(
        "pin set expiry with offset",
        manifest_with(put(f"{P0}.expires", "2027-01-02T13:00:00+01:00")),
        "pinsets[0].expires",
    ),
    BadCase(
        "not_before equals expires",
        manifest_with(
            both(put("not_before", "2027-01-02T12:00:00Z"), put("expires", "2027-01-02T12:00:00Z"))
        ),
        "expires",
    ),
    BadCase(
        "not_before after expires",
        manifest_with(put("not_before", "2030-01-01T00:00:00Z")),
        "expires",
    ),
    # numbers out of range
    BadCase("version 0", manifest_with(put("version", 0)), "version"),
    BadCase("version negative", manifest_with(put("version", -1)), "version"),
    BadCase("version 2^53", manifest_with(put("version", 2**53)), "version"),
    BadCase("version 10^30", manifest_with(put("version", 10**30)), "version"),
    BadCase("root_version 0", manifest_with(put("root_version", 0)), "root_version"),
    BadCase("poll_interval 59", manifest_with(put("poll_interval", 59)), "poll_interval"),
    BadCase("poll_interval 86401", manifest_with(put("poll_interval", 86401)), "poll_interval"),
    BadCase("poll_interval negative", manifest_with(put("poll_interval", -3600)), "poll_interval"),
    # pins
    BadCase(
        "pin not base64",
        manifest_with(put(f"{PIN0}.sha256", "not base64!")),
        "pinsets[0].pins[0].sha256",
    ),
    BadCase(
        "pin url-safe base64",
        manifest_with(put(f"{PIN0}.sha256", "-_" * 21 + "-A=")),
        "pinsets[0].pins[0].sha256",
    ),
    BadCase(
        "pin without padding",
        manifest_with(put(f"{PIN0}.sha256", fake_pin("a").rstrip("="))),
        "pinsets[0].pins[0].sha256",
    ),
    BadCase(
        "pin non-canonical base64",
        manifest_with(put(f"{PIN0}.sha256", noncanonical_b64(fake_pin("a")))),
        "pinsets[0].pins[0].sha256",
    ),
    BadCase(
        "pin with whitespace",
        manifest_with(put(f"{PIN0}.sha256", fake_pin("a")[:10] + " " + fake_pin("a")[10:])),
        "pinsets[0].pins[0].sha256",
    ),
    BadCase(
        "pin of 31 bytes",
        manifest_with(put(f"{PIN0}.sha256", b64encode(bytes(31)))),
        "pinsets[0].pins[0].sha256",
    ),
    BadCase(
        "pin of 33 bytes",
        manifest_with(put(f"{PIN0}.sha256", "A" * 44)),
        "pinsets[0].pins[0].sha256",
    ),
    BadCase(
        "hex pin instead of base64",
        manifest_with(put(f"{PIN0}.sha256", HEX)),
        "pinsets[0].pins[0].sha256",
    ),
    BadCase(
        "33 pins",
        manifest_with(put(f"{P0}.pins", pins(MAX_PINS_PER_SET + 1))),
        "pinsets[0].pins",
        FormatError,
        "too_many_pins",
    ),
    BadCase(
        "no pins",
        manifest_with(put(f"{P0}.pins", [])),
        "pinsets[0].pins",
        code="backup_pin_required",
    ),
    BadCase(
        "one pin",
        manifest_with(put(f"{P0}.pins", pins(1))),
        "pinsets[0].pins",
        code="backup_pin_required",
    ),
    BadCase(
        "no backup pin",
        manifest_with(put(f"{P0}.pins", pins(3, backups=0))),
        "pinsets[0].pins",
        code="backup_pin_required",
    ),
    BadCase(
        "same pin twice",
        manifest_with(put(f"{P0}.pins", [pins(2)[0], pins(2)[1], pins(2)[1]])),
        "pinsets[0].pins",
    ),
    # hosts
    BadCase(
        "duplicate host", manifest_with(put("pinsets.1.host", "api.example.com")), "pinsets[1].host"
    ),
    BadCase(
        "upper-case host", manifest_with(put(f"{P0}.host", "API.example.com")), "pinsets[0].host"
    ),
    BadCase("wildcard host", manifest_with(put(f"{P0}.host", "*.example.com")), "pinsets[0].host"),
    BadCase("trailing dot", manifest_with(put(f"{P0}.host", "example.com.")), "pinsets[0].host"),
    BadCase("empty host", manifest_with(put(f"{P0}.host", "")), "pinsets[0].host"),
    BadCase(
        "host with port", manifest_with(put(f"{P0}.host", "example.com:443")), "pinsets[0].host"
    ),
    BadCase(
        "host as URL", manifest_with(put(f"{P0}.host", "https://example.com")), "pinsets[0].host"
    ),
    BadCase(
        "underscore in host", manifest_with(put(f"{P0}.host", "a_b.example.com")), "pinsets[0].host"
    ),
    BadCase(
        "label over 63", manifest_with(put(f"{P0}.host", "a" * 64 + ".com")), "pinsets[0].host"
    ),
    BadCase(
        "label starting with hyphen",
        manifest_with(put(f"{P0}.host", "-a.example.com")),
        "pinsets[0].host",
    ),
    BadCase(
        "non-ASCII host", manifest_with(put(f"{P0}.host", "bücher.example")), "pinsets[0].host"
    ),
    BadCase("host as number", manifest_with(put(f"{P0}.host", 7)), "pinsets[0].host"),
    # previous
    BadCase("version 1 with a previous", manifest_with(put("previous", HEX)), "previous"),
    BadCase("version 2 without previous", manifest_with(put("version", 2)), "previous"),
    BadCase(
        "upper-case previous",
        manifest_with(both(put("version", 2), put("previous", HEX.upper()))),
        "previous",
    ),
    BadCase(
        "short previous",
        manifest_with(both(put("version", 2), put("previous", HEX[:62]))),
        "previous",
    ),
    BadCase(
        "previous as base64",
        manifest_with(both(put("version", 2), put("previous", fake_pin("p")))),
        "previous",
    ),
]


def _manifest_trusted() -> TrustedSet:
    anchor = root_envelope(root_document(1, ROOT_KEYS, [PUBLISHER]), ROOT_KEYS)
    return TrustedSet.from_anchor(anchor, reference_time=NOW)


def test_base_manifest_is_valid() -> None:
    """The rows below differ from this document by one change each."""
    trusted = _manifest_trusted()
    assert trusted.update_manifest(signed(BASE_TEXT.encode(), [PUBLISHER])).version == 1


@pytest.mark.parametrize("case", MANIFEST_CASES, ids=lambda c: c.name)
def test_malformed_manifest(case: BadCase) -> None:
    payload = case.payload()
    error = assert_rejected(lambda: Manifest.from_bytes(payload), case.error, case.code)
    assert error.field == case.field, error
    trusted = _manifest_trusted()
    assert_rejected(
        lambda: trusted.update_manifest(signed(payload, [PUBLISHER])),
        case.error,
        case.code,
        trusted=trusted,
    )


@pytest.mark.parametrize(
    "change",
    [
        put("poll_interval", 60),
        put("poll_interval", 86400),
        put(f"{P0}.pins", pins(MAX_PINS_PER_SET)),
        put(f"{P0}.pins", pins(2, backups=2)),
        drop(f"{PIN0}.note"),
        put(f"{PIN0}.note", ""),
        put("report_uri", None),
        put("report_uri", "http://reports.example.com/r"),
        put("pinsets", []),
        put(f"{P0}.host", "10.0.0.1"),
        put(f"{P0}.host", "xn--bcher-kva.example"),
        both(put("version", 2**53 - 1), put("previous", HEX)),
        both(put("version", 2), put("previous", HEX)),
        put("not_before", "2026-12-03T11:00:00Z"),
    ],
    ids=[
        "poll 60",
        "poll 86400",
        "32 pins",
        "all backups",
        "no note",
        "empty note",
        "null report_uri",
        "http report_uri",
        "no pin sets",
        "IPv4 literal",
        "punycode",
        "largest version",
        "version 2 with previous",
        "not_before before issued_at",
    ],
)
def test_edge_values_that_are_valid(change: Callable[[dict[str, Any]], None]) -> None:
    Manifest.from_bytes(manifest_with(change)())


# --- root documents ---------------------------------------------------------------------

ROOT_DOC = root_document(2, ROOT_KEYS, [PUBLISHER], root_threshold=2)
BASE_ROOT = ROOT_DOC.to_dict()
RK0 = ROOT_KEYS[0].keyid
PUB = PUBLISHER.keyid
OTHER = key("doc-other")


def root_with(change: Callable[[dict[str, Any]], object]) -> Callable[[], bytes]:
    def make() -> bytes:
        obj = copy.deepcopy(BASE_ROOT)
        change(obj)
        return dumps(obj)

    return make


def _rekey(obj: dict[str, Any]) -> None:
    """Name the publisher key by a wrong keyid, consistently everywhere."""
    wrong = "0" * 64
    obj["keys"][wrong] = obj["keys"].pop(PUB)
    obj["roles"]["publisher"]["keyids"] = [wrong]


def _share(obj: dict[str, Any]) -> None:
    obj["roles"]["publisher"]["keyids"] = [PUB, RK0]


def _add_key(obj: dict[str, Any]) -> None:
    obj["keys"][OTHER.keyid] = {"keytype": "ed25519", "public": OTHER.public_key.to_b64()}


ROOT_CASES = [
    BadCase("keyid does not match key", root_with(_rekey), f"keys.{'0' * 64}"),
    BadCase("key in both roles", root_with(_share), "roles"),
    BadCase("threshold 0", root_with(put("roles.root.threshold", 0)), "roles.root.threshold"),
    BadCase(
        "threshold above key count",
        root_with(put("roles.root.threshold", 3)),
        "roles.root.threshold",
    ),
    BadCase(
        "threshold as string",
        root_with(put("roles.publisher.threshold", "1")),
        "roles.publisher.threshold",
    ),
    BadCase(
        "threshold as bool",
        root_with(put("roles.publisher.threshold", True)),
        "roles.publisher.threshold",
    ),
    BadCase(
        "threshold as float",
        root_with(put("roles.publisher.threshold", 1.0)),
        "roles.publisher.threshold",
    ),
    BadCase(
        "duplicate keyid in a role",
        root_with(put("roles.root.keyids", [RK0, RK0])),
        "roles.root.keyids",
    ),
    BadCase(
        "role keyid not in keys",
        root_with(put("roles.publisher.keyids", [OTHER.keyid])),
        "roles.publisher.keyids",
    ),
    BadCase("empty role", root_with(put("roles.publisher.keyids", [])), "roles.publisher.keyids"),
    BadCase(
        "keyids as string", root_with(put("roles.publisher.keyids", PUB)), "roles.publisher.keyids"
    ),
    BadCase(
        "keyid as number", root_with(put("roles.publisher.keyids", [1])), "roles.publisher.keyids"
    ),
    BadCase("keytype rsa", root_with(put(f"keys.{PUB}.keytype", "rsa")), f"keys.{PUB}.keytype"),
    BadCase(
        "public key bad base64", root_with(put(f"keys.{PUB}.public", "!!")), f"keys.{PUB}.public"
    ),
    BadCase(
        "public key of 31 bytes",
        root_with(put(f"keys.{PUB}.public", b64encode(bytes(31)))),
        f"keys.{PUB}.public",
    ),
    BadCase(
        "unknown field in a key", root_with(put(f"keys.{PUB}.scheme", "ed25519")), f"keys.{PUB}"
    ),
    BadCase("keys empty", root_with(put("keys", {})), "keys"),
    BadCase("keys as list", root_with(put("keys", [])), "keys"),
    BadCase("missing publisher role", root_with(drop("roles.publisher")), "roles"),
    BadCase(
        "unknown role",
        root_with(
            both(_add_key, put("roles.timestamp", {"keyids": [OTHER.keyid], "threshold": 1}))
        ),
        "roles",
    ),
    BadCase(
        "unknown field in a role", root_with(put("roles.root.terminating", True)), "roles.root"
    ),
    BadCase("unknown field at top", root_with(put("consistent_snapshot", True)), "document"),
    BadCase(
        "expires equals issued_at", root_with(put("expires", BASE_ROOT["issued_at"])), "expires"
    ),
    BadCase(
        "expires with offset", root_with(put("expires", "2027-12-03T12:00:00+00:00")), "expires"
    ),
    BadCase("version 0", root_with(put("version", 0)), "version"),
    BadCase("type manifest", root_with(put("type", "manifest")), "type"),
    BadCase("spec_version 2", root_with(put("spec_version", 2)), "spec_version"),
    BadCase(
        "duplicate keyid in keys",
        lambda: dumps(BASE_ROOT).replace(
            b'"keys": {',
            b'"keys": {"%s": %s, ' % (PUB.encode(), dumps(BASE_ROOT["keys"][PUB])),
        ),
        "root",
    ),
    BadCase(
        "NaN threshold",
        lambda: dumps(BASE_ROOT).replace(b'"threshold": 2', b'"threshold": NaN'),
        "root",
    ),
]


def _root_trusted() -> TrustedSet:
    anchor = root_envelope(root_document(1, ROOT_KEYS, [PUBLISHER], root_threshold=2), ROOT_KEYS)
    return TrustedSet.from_anchor(anchor, reference_time=NOW)


def test_base_root_is_valid() -> None:
    trusted = _root_trusted()
    assert trusted.update_root(signed_root(dumps(BASE_ROOT), ROOT_KEYS)).version == 2


@pytest.mark.parametrize("case", ROOT_CASES, ids=lambda c: c.name)
def test_malformed_root(case: BadCase) -> None:
    payload = case.payload()
    error = assert_rejected(lambda: Root.from_bytes(payload), case.error, case.code)
    assert error.field == case.field, error
    # Signed by the trusted root keys, it passes the old-root threshold and then fails
    # to parse: the rotation is refused and nothing changes.
    trusted = _root_trusted()
    assert_rejected(
        lambda: trusted.update_root(signed_root(payload, ROOT_KEYS)),
        case.error,
        case.code,
        trusted=trusted,
    )


def test_canonical_documents_round_trip() -> None:
    manifest = Manifest.from_bytes(BASE_TEXT.encode())
    assert Manifest.from_bytes(manifest.to_bytes()).to_bytes() == manifest.to_bytes()
    assert Manifest.from_bytes(manifest.to_bytes()) == manifest
    assert Root.from_bytes(ROOT_DOC.to_bytes()).to_bytes() == ROOT_DOC.to_bytes()
