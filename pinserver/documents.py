"""Root documents and pin manifests: immutable typed objects with strict parsing.

``from_bytes`` accepts exactly the v1 schema of SPEC sections 4 and 5 and raises
``FormatError`` naming the offending field for anything else: duplicate keys,
unknown fields, wrong types, bad timestamps, numbers out of range. ``to_bytes``
writes the canonical form (sorted keys, compact, UTF-8) that pinserver signs;
verification never re-encodes: it works on the bytes as carried.
"""

from __future__ import annotations

import binascii
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from pinserver._strictjson import dumps_canonical, loads_object
from pinserver.envelope import MAX_SIGNATURES
from pinserver.errors import FormatError
from pinserver.keys import PublicKey, b64decode_strict

SPEC_VERSION = 1
MAX_VERSION = 2**53 - 1
MAX_PINS_PER_SET = 32
MIN_PINS_PER_SET = 2
MIN_POLL_INTERVAL = 60
MAX_POLL_INTERVAL = 86400
MAX_NOTE_CHARS = 1024
MAX_URI_CHARS = 2048
ROLE_NAMES = ("root", "publisher")

# re.ASCII: without it \d also matches non-ASCII digits such as "٢٠٢٦".
_TIMESTAMP_RE = re.compile(r"\A\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z\Z", re.ASCII)
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
# Every dot-separated label matches _LABEL: one match for the whole name.
_HOST_RE = re.compile(rf"\A{_LABEL}(?:\.{_LABEL})*\Z")
_HEX64_RE = re.compile(r"\A[0-9a-f]{64}\Z")
# Standard padded base64 of exactly 32 bytes in canonical form: 42 characters, then
# one whose low two bits are zero (they would spill past byte 32), then "=".
_PIN_RE = re.compile(r"\A[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=\Z")

Mode = Literal["enforce", "report"]
PinRole = Literal["primary", "backup"]


# --- field readers: each names the field it rejects -------------------------------------


def parse_timestamp(value: object, *, field: str) -> datetime:
    """RFC 3339 UTC, second precision, ``Z`` suffix, nothing else."""
    if not isinstance(value, str) or not _TIMESTAMP_RE.match(value):
        raise FormatError("must be a timestamp like 2026-12-03T12:00:00Z", field=field)
    try:
        # The regex has fixed the exact form (ASCII digits, Z), which fromisoformat
        # reads as UTC (Python 3.11+) ten times faster than strptime; like strptime,
        # it refuses what is not a real instant (month 13, February 30, second 60).
        return datetime.fromisoformat(value)
    except ValueError as e:
        raise FormatError(f"not a real date and time: {value}", field=field) from e


def format_timestamp(moment: datetime) -> str:
    if moment.tzinfo is None:
        raise ValueError("timestamps must be timezone-aware")
    # Not strftime("%Y"): glibc writes year 1 as "1", which parse_timestamp refuses.
    m = moment.astimezone(UTC)
    return f"{m.year:04d}-{m.month:02d}-{m.day:02d}T{m.hour:02d}:{m.minute:02d}:{m.second:02d}Z"


def _int(obj: Mapping[str, Any], key: str, *, where: str, low: int, high: int) -> int:
    value = obj[key]
    name = f"{where}{key}"
    if isinstance(value, bool) or not isinstance(value, int):
        raise FormatError("must be an integer", field=name)
    if not low <= value <= high:
        raise FormatError(f"must be between {low} and {high}", field=name)
    return value


def _str(obj: Mapping[str, Any], key: str, *, where: str) -> str:
    value = obj[key]
    if not isinstance(value, str):
        raise FormatError("must be a string", field=f"{where}{key}")
    return value


def _bool(obj: Mapping[str, Any], key: str, *, where: str) -> bool:
    value = obj[key]
    if not isinstance(value, bool):
        raise FormatError("must be true or false", field=f"{where}{key}")
    return value


def _list(obj: Mapping[str, Any], key: str, *, where: str) -> list[Any]:
    value = obj[key]
    if not isinstance(value, list):
        raise FormatError("must be a list", field=f"{where}{key}")
    return value


def _fields(
    obj: object,
    *,
    where: str,
    required: frozenset[str],
    optional: frozenset[str] = frozenset(),
) -> Mapping[str, Any]:
    """Check that ``obj`` is an object with exactly the allowed fields (v1: no unknowns)."""
    if type(obj) is dict and obj.keys() == required:
        return obj  # the common case, in one set comparison
    name = where.rstrip(".") or "document"
    if not isinstance(obj, dict):
        raise FormatError("must be an object", field=name)
    missing = required - obj.keys()
    if missing:
        raise FormatError(f"missing field(s) {sorted(missing)}", field=name)
    unknown = obj.keys() - required - optional
    if unknown:
        raise FormatError(f"unknown field(s) {sorted(unknown)}", field=name)
    return obj


def _header(obj: Mapping[str, Any], expected_type: str) -> None:
    if obj["type"] != expected_type:
        raise FormatError(f"must be {expected_type!r}", field="type")
    spec_version = obj["spec_version"]
    # type(...) is int: rejects true (a bool) and 1.0 (a float), which both == 1.
    if type(spec_version) is not int or spec_version != SPEC_VERSION:
        raise FormatError(f"must be {SPEC_VERSION}", field="spec_version")


def validate_host(host: object, *, field: str) -> str:
    """A lower-case DNS name without wildcard (IPv4 literals pass as all-digit labels)."""
    if not isinstance(host, str) or not host or len(host) > 253:
        raise FormatError("must be a DNS name of 1 to 253 characters", field=field)
    if host != host.lower() or "*" in host:
        raise FormatError("must be lower-case and without wildcard", field=field)
    if not _HOST_RE.match(host):
        raise FormatError(f"{host!r} is not a valid DNS name", field=field)
    return host


def decode_pin(value: object, *, field: str) -> bytes:
    """A pin's ``sha256``: standard base64 of exactly 32 bytes."""
    if not isinstance(value, str):
        raise FormatError("must be a base64 string", field=field)
    if _PIN_RE.match(value):
        return binascii.a2b_base64(value)
    raw = b64decode_strict(value, field=field)
    if len(raw) != 32:
        raise FormatError("must encode exactly 32 bytes (a SHA-256)", field=field)
    return raw


# --- root -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Role:
    keyids: tuple[str, ...]
    threshold: int


_ROOT_FIELDS = frozenset(
    {"type", "spec_version", "version", "issued_at", "expires", "keys", "roles"}
)


@dataclass(frozen=True)
class Root:
    """A root document: the keys of the root and publisher roles and their thresholds."""

    version: int
    issued_at: datetime
    expires: datetime
    keys: Mapping[str, PublicKey]
    roles: Mapping[str, Role]

    @property
    def root_role(self) -> Role:
        return self.roles["root"]

    @property
    def publisher_role(self) -> Role:
        return self.roles["publisher"]

    @classmethod
    def from_bytes(cls, payload: bytes) -> Root:
        return cls.from_dict(loads_object(payload, what="root"))

    @classmethod
    def from_dict(cls, raw: object) -> Root:
        obj = _fields(raw, where="", required=_ROOT_FIELDS)
        _header(obj, "root")
        version = _int(obj, "version", where="", low=1, high=MAX_VERSION)
        issued_at = parse_timestamp(obj["issued_at"], field="issued_at")
        expires = parse_timestamp(obj["expires"], field="expires")
        if expires <= issued_at:
            raise FormatError("must be later than issued_at", field="expires")
        keys_obj = obj["keys"]
        if not isinstance(keys_obj, dict) or not keys_obj:
            raise FormatError("must be a non-empty object", field="keys")
        keys: dict[str, PublicKey] = {}
        for keyid, entry in keys_obj.items():
            where = f"keys.{keyid}."
            spec = _fields(entry, where=where, required=frozenset({"keytype", "public"}))
            if spec["keytype"] != "ed25519":
                raise FormatError("must be 'ed25519'", field=f"{where}keytype")
            key = PublicKey.from_b64(_str(spec, "public", where=where), field=f"{where}public")
            if key.keyid != keyid:
                raise FormatError(
                    "keyid is not the SHA-256 of the public key", field=f"keys.{keyid}"
                )
            keys[keyid] = key
        roles_obj = _fields(obj["roles"], where="roles.", required=frozenset(ROLE_NAMES))
        roles: dict[str, Role] = {}
        for name in ROLE_NAMES:
            where = f"roles.{name}."
            spec = _fields(
                roles_obj[name], where=where, required=frozenset({"keyids", "threshold"})
            )
            keyids = _list(spec, "keyids", where=where)
            if not all(isinstance(k, str) for k in keyids):
                raise FormatError("must be a list of keyids", field=f"{where}keyids")
            if len(set(keyids)) != len(keyids):
                raise FormatError("keyids must be unique", field=f"{where}keyids")
            unknown = [k for k in keyids if k not in keys]
            if unknown:
                raise FormatError(f"keyid(s) not in keys: {unknown}", field=f"{where}keyids")
            if not keyids:
                raise FormatError("a role needs at least one key", field=f"{where}keyids")
            # An envelope carries at most MAX_SIGNATURES: a higher threshold is unreachable.
            high = min(len(keyids), MAX_SIGNATURES)
            threshold = _int(spec, "threshold", where=where, low=1, high=high)
            roles[name] = Role(keyids=tuple(keyids), threshold=threshold)
        shared = set(roles["root"].keyids) & set(roles["publisher"].keyids)
        if shared:
            raise FormatError(
                "a key may not hold both the root and the publisher role (root keys stay"
                f" offline): {sorted(shared)}",
                field="roles",
            )
        return cls(version=version, issued_at=issued_at, expires=expires, keys=keys, roles=roles)

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": "root",
            "spec_version": SPEC_VERSION,
            "version": self.version,
            "issued_at": format_timestamp(self.issued_at),
            "expires": format_timestamp(self.expires),
            "keys": {
                keyid: {"keytype": "ed25519", "public": key.to_b64()}
                for keyid, key in self.keys.items()
            },
            "roles": {
                name: {"keyids": list(role.keyids), "threshold": role.threshold}
                for name, role in self.roles.items()
            },
        }

    def to_bytes(self) -> bytes:
        return dumps_canonical(self.to_dict())


# --- manifest ---------------------------------------------------------------------------


_PINSET_FIELDS = frozenset({"host", "include_subdomains", "mode", "expires", "pins"})
_PIN_FIELDS = frozenset({"sha256", "role"})
_PIN_OPTIONAL_FIELDS = frozenset({"note"})


@dataclass(frozen=True)
class Pin:
    sha256: str
    role: PinRole
    note: str | None = None

    @classmethod
    def from_dict(cls, raw: object, *, where: str) -> Pin:
        obj = _fields(raw, where=where, required=_PIN_FIELDS, optional=_PIN_OPTIONAL_FIELDS)
        sha256 = obj["sha256"]
        decode_pin(sha256, field=f"{where}sha256")
        role = obj["role"]
        if role not in ("primary", "backup"):
            raise FormatError("must be 'primary' or 'backup'", field=f"{where}role")
        note = obj.get("note")
        if note is not None and (not isinstance(note, str) or len(note) > MAX_NOTE_CHARS):
            raise FormatError(
                f"must be text of at most {MAX_NOTE_CHARS} characters", field=f"{where}note"
            )
        return cls(sha256=sha256, role=role, note=note)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"sha256": self.sha256, "role": self.role}
        if self.note is not None:
            out["note"] = self.note
        return out


@dataclass(frozen=True)
class PinSet:
    host: str
    include_subdomains: bool
    mode: Mode
    expires: datetime
    pins: tuple[Pin, ...]

    @property
    def hashes(self) -> frozenset[str]:
        return frozenset(p.sha256 for p in self.pins)

    @classmethod
    def from_dict(cls, raw: object, *, where: str) -> PinSet:
        # A manifest carries up to ~3,000 pin sets, so each check starts with a fast
        # test that recognises the valid case; anything else takes the full check,
        # which names the field. The checks run in the same order either way.
        if type(raw) is dict and raw.keys() == _PINSET_FIELDS:
            obj: Mapping[str, Any] = raw
        else:
            obj = _fields(raw, where=where, required=_PINSET_FIELDS)
        host = obj["host"]
        if type(host) is not str or len(host) > 253 or not _HOST_RE.match(host):
            host = validate_host(host, field=f"{where}host")
        include_subdomains = obj["include_subdomains"]
        if include_subdomains is not True and include_subdomains is not False:
            include_subdomains = _bool(obj, "include_subdomains", where=where)
        mode = obj["mode"]
        if mode not in ("enforce", "report"):
            raise FormatError("must be 'enforce' or 'report'", field=f"{where}mode")
        expires = obj["expires"]
        if type(expires) is str and _TIMESTAMP_RE.match(expires):
            try:
                expires = datetime.fromisoformat(expires)
            except ValueError:
                expires = parse_timestamp(expires, field=f"{where}expires")
        else:
            expires = parse_timestamp(expires, field=f"{where}expires")
        raw_pins = obj["pins"]
        if type(raw_pins) is not list:
            raw_pins = _list(obj, "pins", where=where)
        if len(raw_pins) > MAX_PINS_PER_SET:
            # A rule of the signed document (422), not a request-size limit (413).
            raise FormatError(
                f"{len(raw_pins)} pins; at most {MAX_PINS_PER_SET} a set",
                field=f"{where}pins",
                code="too_many_pins",
            )
        pins = []
        backup = False
        for j, raw_pin in enumerate(raw_pins):
            if type(raw_pin) is dict and raw_pin.keys() == _PIN_FIELDS:
                sha256, role = raw_pin["sha256"], raw_pin["role"]
                if type(sha256) is str and _PIN_RE.match(sha256) and role in ("primary", "backup"):
                    pins.append(Pin(sha256, role))
                    backup = backup or role == "backup"
                    continue
            pin = Pin.from_dict(raw_pin, where=f"{where}pins[{j}].")
            pins.append(pin)
            backup = backup or pin.role == "backup"
        if not backup or len(pins) < MIN_PINS_PER_SET or len({p.sha256 for p in pins}) < len(pins):
            verify_pin_rules(host, pins, field=f"{where}pins")  # raises, saying which rule
        return cls(host, include_subdomains, mode, expires, tuple(pins))

    def to_dict(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "include_subdomains": self.include_subdomains,
            "mode": self.mode,
            "expires": format_timestamp(self.expires),
            "pins": [p.to_dict() for p in self.pins],
        }


def verify_pin_rules(host: str, pins: list[Pin], *, field: str) -> None:
    """The HPKP/TrustKit backup-pin rule, which no flag overrides."""
    if len(pins) < MIN_PINS_PER_SET:
        raise FormatError(
            f"{host} has {len(pins)} pin(s); a pin set needs at least {MIN_PINS_PER_SET},"
            " so that losing one key does not brick every client",
            field=field,
            code="backup_pin_required",
        )
    for pin in pins:
        if pin.role == "backup":
            break
    else:
        raise FormatError(
            f"{host} has no backup pin; add the hash of a key you hold in reserve (role backup)",
            field=field,
            code="backup_pin_required",
        )
    if len({p.sha256 for p in pins}) != len(pins):
        raise FormatError(f"{host} lists the same pin twice", field=field)


_MANIFEST_FIELDS = frozenset(
    {
        "type",
        "spec_version",
        "version",
        "root_version",
        "issued_at",
        "not_before",
        "expires",
        "previous",
        "poll_interval",
        "report_uri",
        "pinsets",
    }
)


@dataclass(frozen=True)
class Manifest:
    """A pin manifest: versioned, hash-chained per-host pin sets with a validity window."""

    version: int
    root_version: int
    issued_at: datetime
    not_before: datetime
    expires: datetime
    previous: str | None
    poll_interval: int
    report_uri: str | None
    pinsets: tuple[PinSet, ...]
    _by_host: Mapping[str, PinSet] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_host", {p.host: p for p in self.pinsets})

    def pinset(self, host: str) -> PinSet | None:
        """The pin set listed for exactly ``host`` (see pins.find_pinset for subdomains)."""
        return self._by_host.get(host)

    @classmethod
    def from_bytes(cls, payload: bytes) -> Manifest:
        return cls.from_dict(loads_object(payload, what="manifest"))

    @classmethod
    def from_dict(cls, raw: object) -> Manifest:
        obj = _fields(raw, where="", required=_MANIFEST_FIELDS)
        _header(obj, "manifest")
        version = _int(obj, "version", where="", low=1, high=MAX_VERSION)
        root_version = _int(obj, "root_version", where="", low=1, high=MAX_VERSION)
        issued_at = parse_timestamp(obj["issued_at"], field="issued_at")
        not_before = parse_timestamp(obj["not_before"], field="not_before")
        expires = parse_timestamp(obj["expires"], field="expires")
        if not not_before < expires:
            raise FormatError("not_before must be earlier than expires", field="expires")
        previous = obj["previous"]
        if version == 1:
            if previous is not None:
                raise FormatError("must be null for version 1", field="previous")
        elif not isinstance(previous, str) or not _HEX64_RE.match(previous):
            raise FormatError(
                "must be the lowercase hex SHA-256 of the previous payload", field="previous"
            )
        poll_interval = _int(
            obj, "poll_interval", where="", low=MIN_POLL_INTERVAL, high=MAX_POLL_INTERVAL
        )
        report_uri = obj["report_uri"]
        if report_uri is not None and (
            not isinstance(report_uri, str)
            or not report_uri.startswith(("https://", "http://"))
            or len(report_uri) > MAX_URI_CHARS
            or any(c.isspace() for c in report_uri)
        ):
            raise FormatError("must be null or an http(s) URL", field="report_uri")
        raw_sets = _list(obj, "pinsets", where="")
        pinsets = tuple(
            [
                PinSet.from_dict(raw_set, where=f"pinsets[{i}].")
                for i, raw_set in enumerate(raw_sets)
            ]
        )
        if len({p.host for p in pinsets}) < len(pinsets):
            seen: set[str] = set()
            for i, pinset in enumerate(pinsets):
                if pinset.host in seen:
                    raise FormatError(f"{pinset.host} appears twice", field=f"pinsets[{i}].host")
                seen.add(pinset.host)
        return cls(
            version=version,
            root_version=root_version,
            issued_at=issued_at,
            not_before=not_before,
            expires=expires,
            previous=previous,
            poll_interval=poll_interval,
            report_uri=report_uri,
            pinsets=pinsets,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": "manifest",
            "spec_version": SPEC_VERSION,
            "version": self.version,
            "root_version": self.root_version,
            "issued_at": format_timestamp(self.issued_at),
            "not_before": format_timestamp(self.not_before),
            "expires": format_timestamp(self.expires),
            "previous": self.previous,
            "poll_interval": self.poll_interval,
            "report_uri": self.report_uri,
            "pinsets": [p.to_dict() for p in self.pinsets],
        }

    def to_bytes(self) -> bytes:
        return dumps_canonical(self.to_dict())


def payload_sha256(payload: bytes) -> str:
    return hashlib.sha256(payload).hexdigest()
