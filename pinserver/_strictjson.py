"""Strict JSON for untrusted input: UTF-8 only, no duplicate keys, no NaN or
infinities, bounded nesting, an object at top level."""

from __future__ import annotations

import json
import math
import re
from typing import Any

from pinserver.errors import FormatError

MAX_DEPTH = 32


def _reject_constant(name: str) -> Any:
    raise FormatError(f"{name} is not allowed in JSON", field="json")


def _unique_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise FormatError(f"duplicate key {key!r}", field="json")
            seen.add(key)
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


# Bytes that are neither a quote, a bracket nor a colon. In UTF-8 these ASCII bytes
# never occur inside a multi-byte character, so the scan can work on the raw bytes.
_NOT_STRUCTURE = bytes(b for b in range(256) if b not in b'"[]{}:')
_OPEN_CLOSE = bytes.maketrans(b"[]{}", b"()()")
# A lone surrogate can only come from a \\uD800-\\uDFFF escape (UTF-8 decoding rejects
# encoded ones); without such an escape in the text, no parsed string can hold one.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def _outside_strings(data: bytes) -> bytes:
    """The brackets and colons of ``data`` that lie outside strings, in order: exact for
    valid JSON and for every prefix of it.

    Bulk byte operations, no loop over characters: escapes are removed (``\\\\``
    pairs first, then ``\\"``), then every byte but quotes, brackets and colons; the
    quotes left are string delimiters, and what lies between each pair is dropped.
    """
    if b"\\" in data:
        data = data.replace(b"\\\\", b"").replace(b'\\"', b"")
    marks = data.translate(None, _NOT_STRUCTURE)
    if b'"' in marks:
        # Adjacent quotes close one string and open the next (or delimit an empty one):
        # dropping a pair leaves every other byte inside or outside strings as it was.
        marks = marks.replace(b'""', b"")
        if b'"' in marks:
            marks = b"".join(marks.split(b'"')[0::2])
    return marks


def _nesting_exceeds(marks: bytes) -> bool:
    """True when the brackets in ``marks`` nest deeper than ``MAX_DEPTH`` at any point.

    Each round of removing adjacent ``()`` takes one level off a well-nested text, so a
    text that vanishes within ``MAX_DEPTH`` rounds is shallow enough. Anything else (too
    deep, or not well nested: invalid JSON) gets the exact count, which stops at the
    first level too deep.
    """
    structure = marks.translate(_OPEN_CLOSE, b":")
    remaining = structure
    for _ in range(MAX_DEPTH):
        if not remaining:
            return False
        shorter = remaining.replace(b"()", b"")
        if len(shorter) == len(remaining):
            break
        remaining = shorter
    if not remaining:
        return False
    depth = 0
    for byte in structure:
        if byte == 0x28:  # "("
            depth += 1
            if depth > MAX_DEPTH:
                return True
        else:
            depth -= 1
    return False


def _too_deep(data: bytes) -> bool:
    """The verdict of a character-by-character depth count over ``data``."""
    return _nesting_exceeds(_outside_strings(data))


def loads_object(data: bytes, *, what: str) -> dict[str, Any]:
    """Parse ``data`` as a strict JSON object or raise ``FormatError`` naming ``what``.

    Nesting is checked before ``json.loads``, so that the parser's C recursion stays
    bounded whatever the interpreter's recursion limit (at a raised limit, CPython
    3.11's scanner overflows the C stack on deep input instead of raising
    RecursionError). Duplicate keys are found by counting: every colon outside strings
    is one object member, so the parsed objects hold as many keys as there are colons
    unless a key was repeated; then a second parse names it.
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise FormatError(f"{what} is not valid UTF-8", field=what) from e
    if text.startswith("\ufeff"):
        raise FormatError(f"{what} starts with a byte order mark", field=what)
    marks = _outside_strings(data)
    if _nesting_exceeds(marks):
        raise FormatError(f"{what} nests deeper than {MAX_DEPTH} levels", field=what)
    keys = 0

    def count_keys(obj: dict[str, Any]) -> dict[str, Any]:
        nonlocal keys
        keys += len(obj)
        return obj

    try:
        value = json.loads(
            text, object_hook=count_keys, parse_constant=_reject_constant, parse_float=_finite_float
        )
        if keys != marks.count(b":"):
            value = json.loads(
                text,
                object_pairs_hook=_unique_object,
                parse_constant=_reject_constant,
                parse_float=_finite_float,
            )
        if b"\\" in data and _SURROGATE_ESCAPE.search(data):
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
