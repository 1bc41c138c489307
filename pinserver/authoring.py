"""Building unsigned roots and manifests: the pure half of ``root new``, ``manifest new``,
``rotate`` and ``renew``.

No network, no disk, no clock: callers pass bytes and times in. Every document is
built by round-tripping through the strict ``from_dict`` parsers, so an admin tool can
never write a document that verification would later refuse (bad thresholds, a pin
set without a backup pin, a window that ends before it starts, ...).
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum
from typing import Any

from pinserver._strictjson import loads_object
from pinserver.documents import (
    SPEC_VERSION,
    Manifest,
    PinSet,
    Root,
    format_timestamp,
)
from pinserver.envelope import MANIFEST_TYPE, ROOT_TYPE, Envelope
from pinserver.errors import FormatError
from pinserver.keys import PublicKey

DEFAULT_POLL_INTERVAL = 3600
PINSET_DEFAULTS: Mapping[str, object] = {"mode": "enforce", "include_subdomains": False}
_PINS_FILE_FIELDS = frozenset({"pinsets", "poll_interval", "report_uri"})
_PINSET_FILE_FIELDS = frozenset({"host", "include_subdomains", "mode", "expires", "pins"})
_DURATION_RE = re.compile(r"\A(\d+)([dhm])\Z")


class Keep(Enum):
    """Sentinel: keep the previous manifest's value (``None`` is a real report_uri value)."""

    KEEP = "keep"


KEEP = Keep.KEEP


@dataclass(frozen=True)
class PinsSpec:
    """What a pins file says: the pin sets, and optionally poll interval and report URI."""

    pinsets: tuple[PinSet, ...]
    poll_interval: int | None = None
    report_uri: str | None = None


# --- pins files ---------------------------------------------------------------------------


def _duration(text: str) -> timedelta | None:
    match = _DURATION_RE.match(text.strip())
    if not match:
        return None
    amount, unit = int(match.group(1)), match.group(2)
    return {
        "d": timedelta(days=amount),
        "h": timedelta(hours=amount),
        "m": timedelta(minutes=amount),
    }[unit]


def _timestamp_value(value: object, *, field: str, issued_at: datetime) -> object:
    """A pin set ``expires``: an RFC 3339 UTC timestamp, a TOML datetime, or a duration
    (``365d``) counted from ``issued_at``. Anything else is left for the strict parser."""
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() != timedelta(0):
            raise FormatError("a TOML datetime must be UTC with a Z suffix", field=field)
        if value.microsecond:
            raise FormatError("timestamps have second precision", field=field)
        return format_timestamp(value)
    if isinstance(value, str):
        try:
            delta = _duration(value)
            if delta is not None:
                return format_timestamp(issued_at + delta)
        except OverflowError as e:
            raise FormatError(f"duration {value!r} reaches past year 9999", field=field) from e
    return value


def _decode_pins_file(data: bytes, *, filename: str) -> dict[str, Any]:
    looks_json = filename.endswith(".json") or (
        not filename.endswith(".toml") and data.lstrip().startswith(b"{")
    )
    if looks_json:
        return loads_object(data, what=filename)
    try:
        return tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise FormatError("not valid UTF-8", field=filename) from e
    except tomllib.TOMLDecodeError as e:
        raise FormatError(f"not valid TOML: {e}", field=filename) from e
    except RecursionError as e:  # tomllib recurses into nested arrays and tables
        raise FormatError("nests too deeply", field=filename) from e


def parse_pins_file(data: bytes, *, filename: str, issued_at: datetime) -> PinsSpec:
    """Read a TOML or JSON pins file holding the ``pinsets`` of SPEC section 5.

    Defaults are filled in (``mode = "enforce"``, ``include_subdomains = false``); a pin
    set's ``expires`` may be a duration from ``issued_at``. Every pin set is then checked
    by the same strict parser that verification uses; errors name the field.
    """
    obj = _decode_pins_file(data, filename=filename)
    unknown = sorted(set(obj) - _PINS_FILE_FIELDS)
    if unknown:
        raise FormatError(
            f"unknown field(s) {unknown}; a pins file holds {sorted(_PINS_FILE_FIELDS)}",
            field=filename,
        )
    raw_sets = obj.get("pinsets")
    if not isinstance(raw_sets, list) or not raw_sets:
        raise FormatError("needs a non-empty list of pin sets ([[pinsets]])", field="pinsets")
    pinsets = []
    for i, raw in enumerate(raw_sets):
        where = f"pinsets[{i}]."
        if not isinstance(raw, dict):
            raise FormatError("must be a table/object", field=where.rstrip("."))
        unknown = sorted(set(raw) - _PINSET_FILE_FIELDS)
        if unknown:
            raise FormatError(f"unknown field(s) {unknown}", field=where.rstrip("."))
        filled = {**PINSET_DEFAULTS, **raw}
        if "expires" in filled:
            filled["expires"] = _timestamp_value(
                filled["expires"], field=f"{where}expires", issued_at=issued_at
            )
        pinsets.append(PinSet.from_dict(filled, where=where))
    seen: set[str] = set()
    for i, ps in enumerate(pinsets):
        if ps.host in seen:
            raise FormatError(f"{ps.host} appears twice", field=f"pinsets[{i}].host")
        seen.add(ps.host)
    poll_interval = obj.get("poll_interval")
    if poll_interval is not None and (
        isinstance(poll_interval, bool) or not isinstance(poll_interval, int)
    ):
        raise FormatError("must be an integer number of seconds", field="poll_interval")
    report_uri = obj.get("report_uri")
    if report_uri is not None and not isinstance(report_uri, str):
        raise FormatError("must be a URL", field="report_uri")
    return PinsSpec(pinsets=tuple(pinsets), poll_interval=poll_interval, report_uri=report_uri)


def pins_file_text(pinsets: Iterable[PinSet]) -> str:
    """The pin sets as a JSON pins file that :func:`parse_pins_file` reads back."""
    return json.dumps({"pinsets": [p.to_dict() for p in pinsets]}, indent=2) + "\n"


# --- manifests ----------------------------------------------------------------------------


def build_manifest(
    pinsets: Sequence[PinSet],
    *,
    version: int,
    previous: str | None,
    root_version: int,
    issued_at: datetime,
    expires: datetime,
    not_before: datetime | None = None,
    poll_interval: int = DEFAULT_POLL_INTERVAL,
    report_uri: str | None = None,
) -> Manifest:
    """A manifest checked by the strict parser (``FormatError`` names what is wrong)."""
    raw = {
        "type": "manifest",
        "spec_version": SPEC_VERSION,
        "version": version,
        "root_version": root_version,
        "issued_at": format_timestamp(issued_at),
        "not_before": format_timestamp(not_before or issued_at),
        "expires": format_timestamp(expires),
        "previous": previous,
        "poll_interval": poll_interval,
        "report_uri": report_uri,
        "pinsets": [p.to_dict() for p in pinsets],
    }
    return Manifest.from_dict(raw)


def next_manifest_from(
    previous: Manifest,
    *,
    previous_sha256: str,
    issued_at: datetime,
    expires: datetime,
    pinsets: Sequence[PinSet] | None = None,
    root_version: int | None = None,
    not_before: datetime | None = None,
    poll_interval: int | None = None,
    report_uri: str | Keep | None = KEEP,
) -> Manifest:
    """Version N+1 chained to ``previous`` (whose payload hash is ``previous_sha256``).

    Whatever is not given is carried over: pin sets, root version, poll interval and
    report URI. This is what ``manifest new --previous``, ``rotate`` and ``renew`` share.
    """
    return build_manifest(
        previous.pinsets if pinsets is None else pinsets,
        version=previous.version + 1,
        previous=previous_sha256,
        root_version=previous.root_version if root_version is None else root_version,
        issued_at=issued_at,
        expires=expires,
        not_before=not_before,
        poll_interval=previous.poll_interval if poll_interval is None else poll_interval,
        report_uri=previous.report_uri if isinstance(report_uri, Keep) else report_uri,
    )


def with_pinset(pinsets: Iterable[PinSet], replacement: PinSet) -> tuple[PinSet, ...]:
    """The pin sets with ``replacement``'s host replaced (or added at the end)."""
    out = []
    replaced = False
    for pinset in pinsets:
        if pinset.host == replacement.host:
            out.append(replacement)
            replaced = True
        else:
            out.append(pinset)
    if not replaced:
        out.append(replacement)
    return tuple(out)


# --- roots --------------------------------------------------------------------------------


def build_root(
    *,
    version: int,
    root_keys: Sequence[PublicKey],
    root_threshold: int,
    publisher_keys: Sequence[PublicKey],
    publisher_threshold: int,
    issued_at: datetime,
    expires: datetime,
) -> Root:
    """A root document checked by the strict parser: thresholds within 1..n, unique keys,
    no key in both roles, ``expires`` after ``issued_at``."""
    keys = {k.keyid: {"keytype": "ed25519", "public": k.to_b64()} for k in root_keys}
    keys.update({k.keyid: {"keytype": "ed25519", "public": k.to_b64()} for k in publisher_keys})
    raw = {
        "type": "root",
        "spec_version": SPEC_VERSION,
        "version": version,
        "issued_at": format_timestamp(issued_at),
        "expires": format_timestamp(expires),
        "keys": keys,
        "roles": {
            "root": {"keyids": [k.keyid for k in root_keys], "threshold": root_threshold},
            "publisher": {
                "keyids": [k.keyid for k in publisher_keys],
                "threshold": publisher_threshold,
            },
        },
    }
    return Root.from_dict(raw)


# --- envelopes ----------------------------------------------------------------------------


def unsigned_envelope(document: Root | Manifest) -> Envelope:
    """The envelope ``root new`` / ``manifest new`` write: canonical payload, no signatures."""
    payload_type = ROOT_TYPE if isinstance(document, Root) else MANIFEST_TYPE
    return Envelope(payload_type=payload_type, payload=document.to_bytes())


def read_unverified_document(envelope: Envelope) -> Root | Manifest:
    """Parse an envelope's payload WITHOUT checking signatures.

    Only for authoring: showing a signer what they are about to sign, or taking version
    and hash from a previous manifest the admin holds. Never a basis for trust.
    """
    if envelope.payload_type == ROOT_TYPE:
        return Root.from_bytes(envelope.payload)
    if envelope.payload_type == MANIFEST_TYPE:
        return Manifest.from_bytes(envelope.payload)
    raise FormatError(
        f"payloadType {envelope.payload_type!r} is neither a pinserver root nor a manifest",
        field="payloadType",
        code="wrong_payload_type",
    )
