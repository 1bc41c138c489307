"""Strict JSON for untrusted input: UTF-8 only, no duplicate keys, no NaN or
infinities, bounded nesting, an object at top level."""

from __future__ import annotations

import json
import math
from typing import Any

from pinserver.errors import FormatError

MAX_DEPTH = 32


def _reject_constant(name: str) -> Any:
    raise FormatError(f"{name} is not allowed in JSON", field="json")


def _unique_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise FormatError(f"duplicate key {key!r}", field="json")
        obj[key] = value
    return obj


def _finite_float(text: str) -> float:
    """Numbers like 1e400 overflow to infinity without passing through parse_constant."""
    value = float(text)
    if math.isinf(value) or math.isnan(value):
        raise FormatError(f"number {text} is out of range", field="json")
    return value


def _check_strings(value: Any) -> None:
    """Reject lone surrogates (\\ud800 escapes): not Unicode, and not encodable as UTF-8."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as e:
            raise FormatError("string holds a lone surrogate escape", field="json") from e
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_strings(key)
            _check_strings(item)
    elif isinstance(value, list):
        for item in value:
            _check_strings(item)


def _depth_ok(text: str) -> bool:
    """Cheap structural depth scan (ignores brackets inside strings)."""
    depth = 0
    in_string = False
    escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                return False
        elif ch in "]}":
            depth -= 1
    return True


def loads_object(data: bytes, *, what: str) -> dict[str, Any]:
    """Parse ``data`` as a strict JSON object or raise ``FormatError`` naming ``what``."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise FormatError(f"{what} is not valid UTF-8", field=what) from e
    if text.startswith("\ufeff"):
        raise FormatError(f"{what} starts with a byte order mark", field=what)
    if not _depth_ok(text):
        raise FormatError(f"{what} nests deeper than {MAX_DEPTH} levels", field=what)
    try:
        value = json.loads(
            text,
            object_pairs_hook=_unique_object,
            parse_constant=_reject_constant,
            parse_float=_finite_float,
        )
        _check_strings(value)
    except FormatError as e:
        raise FormatError(e.message, field=what) from e
    except (ValueError, RecursionError) as e:
        raise FormatError(f"{what} is not valid JSON: {e}", field=what) from e
    if not isinstance(value, dict):
        raise FormatError(f"{what} must be a JSON object", field=what)
    return value


def dumps_canonical(value: Any) -> bytes:
    """Deterministic compact JSON (sorted keys, UTF-8) used when pinserver writes a document."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")
