"""The fast paths of strict parsing give the verdicts of the plain rules they replace.

Each fast path (bulk depth scan, surrogate pre-check, timestamp and pin regexes, one
host regex) is compared with a straightforward reference implementation of the same
rule, on hostile and random input. Deep input must end in ``FormatError``, never in a
crash, whatever the interpreter's recursion limit.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import subprocess
import sys
import textwrap
from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from pinserver._strictjson import MAX_DEPTH, _too_deep, loads_object
from pinserver.documents import decode_pin, parse_timestamp, validate_host
from pinserver.errors import FormatError
from pinserver.keys import b64decode_strict
from tests.factory import fake_pin

PROPERTY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
MIB = 1 << 20


def reference_too_deep(text: str) -> bool:
    """The character-by-character count the bulk scan replaced."""
    depth = 0
    in_string = escaped = False
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
                return True
        elif ch in "]}":
            depth -= 1
    return False


# Texts made of the characters that matter to the scan, so that strings, escapes and
# brackets meet in every order (most of them are not valid JSON: the scan must agree
# with the reference on those too).
# Whole JSON strings with escapes and brackets inside: none of them nests anything.
_STRINGS = ['"a\\"b"', '"\\\\"', '"]"', '"["', '"\\"]"', '"\\\\\\"{"', '"x"']
structural_text = st.one_of(
    st.text(alphabet='[]{}"\\ab:,', max_size=300),
    # Openers and whole strings, then closers and strings: often deeper than
    # MAX_DEPTH, with escapes that decide whether a bracket is inside a string.
    st.tuples(
        st.lists(st.sampled_from(["[", "{", "[", "{", "[", "{", *_STRINGS]), max_size=90),
        st.lists(st.sampled_from(["]", "}", ",", '"', "\\", *_STRINGS]), max_size=90),
    ).map(lambda parts: "".join(parts[0]) + "".join(parts[1])),
)


def nested(depth: int, *, inner: str = "1") -> str:
    """Valid JSON nesting arrays and objects alternately, ``depth`` levels deep."""
    opening = "".join('{"k":' if i % 2 else "[" for i in range(depth))
    closing = "".join("}" if i % 2 else "]" for i in reversed(range(depth)))
    return opening + inner + closing


@PROPERTY
@given(text=structural_text)
@example(text='"\\\\"[')  # an escaped backslash ends the string before the bracket
@example(text='"\\"[" ')  # an escaped quote does not
@example(text='["]]]]",' + "[" * 31 + "]" * 31 + "]")
@example(text='"\\\\"' + "[" * 33)  # deep after a string ending in an escaped backslash
@example(text='"\\"' + "[" * 33 + '"')  # brackets after an escaped quote: in the string
def test_depth_scan_agrees_with_the_character_count(text: str) -> None:
    assert _too_deep(text.encode()) == reference_too_deep(text)


@PROPERTY
@given(depth=st.integers(min_value=0, max_value=80), inner=st.text(alphabet="ab[]{}", max_size=8))
def test_depth_scan_on_valid_json_is_exact(depth: int, inner: str) -> None:
    text = nested(depth, inner=f'"{inner}"')  # brackets inside the innermost string
    assert _too_deep(text.encode()) == (depth > MAX_DEPTH)
    document = f'{{"x": {text}}}'.encode()  # one level more
    if depth + 1 <= MAX_DEPTH:
        assert loads_object(document, what="doc")["x"] is not None
    else:
        with pytest.raises(FormatError, match="nests deeper"):
            loads_object(document, what="doc")


@pytest.mark.parametrize(
    "body",
    [
        b"[" * (MIB // 2) + b"]" * (MIB // 2),
        b'{"a":' * (MIB // 6) + b"1" + b"}" * (MIB // 6),
        b"[" * MIB,
        b'{"a":' * (MIB // 5),
        b'{"x": "' + b"[" * MIB + b'"}',  # brackets inside a string are not nesting
    ],
    ids=["arrays", "objects", "unclosed", "unclosed objects", "brackets in a string"],
)
def test_megabyte_of_nesting_is_a_format_error(body: bytes) -> None:
    if body.startswith(b'{"x": "'):
        assert loads_object(body, what="doc") == {"x": "[" * MIB}
        return
    with pytest.raises(FormatError) as raised:
        loads_object(body, what="doc")
    assert raised.value.field == "doc"


def test_deep_input_never_crashes_even_at_a_raised_recursion_limit() -> None:
    """json's C scanner overflows the C stack on deep input once an application has
    raised the recursion limit (a segfault on CPython 3.11): the scan before it must
    refuse such input first."""
    probe = textwrap.dedent(
        """
        import sys
        sys.setrecursionlimit(10**6)
        from pinserver._strictjson import loads_object
        from pinserver.errors import FormatError
        for body in (b"[" * 400_000 + b"]" * 400_000, b'{"a":' * 200_000 + b"1" + b"}" * 200_000):
            try:
                loads_object(body, what="doc")
            except FormatError as e:
                print(e.message)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], check=False, capture_output=True, timeout=120
    )
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    refused = f"doc: doc nests deeper than {MAX_DEPTH} levels"
    assert done.stdout.decode().splitlines() == [refused, refused]


@pytest.mark.parametrize(
    ("text", "ok"),
    [
        ('{"a": "\\ud800"}', False),
        ('{"a": "x\\uDBFFy"}', False),
        ('{"a": "\\udc00"}', False),
        ('{"\\ud800": 1}', False),  # in a key
        ('{"a": [[{"b": "\\ud800"}]]}', False),  # deep inside
        ('{"a": "\\ud83d\\ude00"}', True),  # a pair is one character (an emoji)
        ('{"a": "\\\\ud800"}', True),  # an escaped backslash, then the text "ud800"
        ('{"a": "\\u00e9"}', True),
    ],
)
def test_lone_surrogate_escapes_are_refused_anywhere(text: str, ok: bool) -> None:
    if ok:
        loads_object(text.encode(), what="doc")
    else:
        with pytest.raises(FormatError, match="lone surrogate"):
            loads_object(text.encode(), what="doc")


def test_duplicate_keys_are_still_named() -> None:
    with pytest.raises(FormatError, match="duplicate key 'b'"):
        loads_object(b'{"a": {"b": 1, "c": 2, "b": 3}}', what="doc")


def reference_timestamp(value: str) -> datetime | None:
    try:
        return datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        return None


two_digits = st.integers(min_value=0, max_value=99).map(lambda n: f"{n:02d}")
years = st.sampled_from(["0000", "0001", "1900", "2000", "2024", "2026", "9999"])


@PROPERTY
@given(
    date=st.tuples(years, two_digits, two_digits),
    time=st.tuples(two_digits, two_digits, two_digits),
)
def test_timestamps_parse_as_strptime_did(
    date: tuple[str, str, str], time: tuple[str, str, str]
) -> None:
    text = "{}-{}-{}T{}:{}:{}Z".format(*date, *time)
    expected = reference_timestamp(text)
    if expected is None:
        with pytest.raises(FormatError, match="not a real date"):
            parse_timestamp(text, field="t")
    else:
        parsed = parse_timestamp(text, field="t")
        assert parsed == expected
        assert parsed.tzinfo is UTC


@pytest.mark.parametrize(
    "text",
    [
        "2026-12-03T12:00:00+00:00",
        "2026-12-03T12:00:00.5Z",
        "2026-12-03 12:00:00Z",
        "20261203T120000Z",
        "2026-12-03T12:00:00z",
        "2026-12-03T12:00Z",
        "٢٠٢٦-12-03T12:00:00Z",  # non-ASCII digits
        "2026-12-03T12:00:00Z\n",
    ],
)
def test_timestamps_in_any_other_form_are_refused(text: str) -> None:
    with pytest.raises(FormatError, match="must be a timestamp"):
        parse_timestamp(text, field="t")


def reference_pin_ok(text: str) -> bool:
    try:
        return len(b64decode_strict(text, field="p")) == 32
    except FormatError:
        return False


B64_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


@PROPERTY
@given(raw=st.binary(min_size=32, max_size=32))
def test_every_sha256_in_canonical_base64_is_a_pin(raw: bytes) -> None:
    text = base64.b64encode(raw).decode()
    assert decode_pin(text, field="p") == raw


@PROPERTY
@given(
    text=st.one_of(
        st.text(alphabet=B64_ALPHABET + "=", min_size=40, max_size=48),
        st.text(alphabet=B64_ALPHABET, min_size=43, max_size=43).map(lambda t: t + "="),
        st.binary(min_size=30, max_size=34).map(lambda b: base64.b64encode(b).decode()),
    )
)
def test_pins_are_accepted_exactly_when_the_strict_decoder_accepts_them(text: str) -> None:
    if reference_pin_ok(text):
        assert base64.b64encode(decode_pin(text, field="p")).decode() == text
    else:
        with pytest.raises(FormatError):
            decode_pin(text, field="p")


def test_a_pin_with_stray_low_bits_is_refused_by_name() -> None:
    good = fake_pin("x")
    last = B64_ALPHABET.index(good[-2])
    stray = good[:-2] + B64_ALPHABET[last | 1] + "="
    with pytest.raises(FormatError, match="canonical"):
        decode_pin(stray, field="p")


LABEL_RE = re.compile(r"\A[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\Z")


def reference_host_ok(host: str) -> bool:
    return all(LABEL_RE.match(label) for label in host.split("."))


@PROPERTY
@given(host=st.text(alphabet="ab9-.", min_size=1, max_size=80))
@example(host="a" * 63 + ".b")
@example(host="a" * 64 + ".b")
@example(host="a..b")
@example(host="a.")
@example(host="-a.b")
def test_host_names_are_checked_label_by_label(host: str) -> None:
    if reference_host_ok(host):
        assert validate_host(host, field="h") == host
    else:
        with pytest.raises(FormatError):
            validate_host(host, field="h")


def reference_b64decode_strict(text: str) -> bytes | str:
    """Decode, then re-encode the whole result and compare: the check the tail-only
    comparison replaced."""
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        return "not valid"
    return raw if base64.b64encode(raw).decode("ascii") == text else "canonical"


def _one_character_changed(raw: bytes, index: int, char: str) -> str:
    text = base64.b64encode(raw).decode()
    return text[:index] + char + text[index + 1 :]


@PROPERTY
@given(
    text=st.one_of(
        st.text(alphabet="AQRg/+=", max_size=12),
        st.text(alphabet=B64_ALPHABET + "= \n", max_size=30),
        st.builds(
            _one_character_changed,
            st.binary(max_size=40),
            st.integers(0, 60),
            st.sampled_from("AQR=+ "),
        ),
    )
)
@example(text="")
@example(text="QR==")
@example(text="QUJD=")
@example(text="QQ==QQ==")
def test_strict_base64_accepts_exactly_the_canonical_form(text: str) -> None:
    expected = reference_b64decode_strict(text)
    if isinstance(expected, bytes):
        assert b64decode_strict(text, field="b") == expected
    else:
        with pytest.raises(FormatError, match=expected):
            b64decode_strict(text, field="b")


def reference_loads(data: bytes) -> object:
    """Strict parsing as it was before the fast paths: a character-by-character depth
    count, a pairs hook that refuses duplicate keys, and a walk over every string."""
    text = data.decode("utf-8")
    if reference_too_deep(text):
        raise FormatError("too deep", field="doc")

    def unique(pairs: list[tuple[str, object]]) -> dict[str, object]:
        if len({k for k, _ in pairs}) != len(pairs):
            raise FormatError("duplicate", field="doc")
        return dict(pairs)

    def reject(name: str) -> object:
        raise FormatError(name, field="doc")

    try:
        value = json.loads(text, object_pairs_hook=unique, parse_constant=reject)
    except ValueError as e:
        raise FormatError(str(e), field="doc") from e
    stack = [value]
    while stack:
        node = stack.pop()
        if isinstance(node, str):
            try:
                node.encode("utf-8")
            except UnicodeEncodeError as e:
                raise FormatError("surrogate", field="doc") from e
        elif isinstance(node, dict):
            stack.extend(node)
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    if not isinstance(value, dict):
        raise FormatError("not an object", field="doc")
    return value


# Keys from a small set (so that objects often repeat one), with the characters that
# matter to the scan: quotes, backslashes, colons and brackets inside strings.
json_keys = st.sampled_from(["a", "b", ":", '"', "\\", "{", "a:b", "\ud800", "é", "\\u0022"])
json_strings = st.text(alphabet='ab:"\\{}[]é\n\ud800\udc00', max_size=6)


def _dump_string(text: str, ascii_only: bool) -> str:
    return json.dumps(text, ensure_ascii=ascii_only)


json_scalars = st.one_of(
    st.integers(-(10**6), 10**6).map(str),
    st.sampled_from(["true", "false", "null", "1.5", "NaN"]),
    st.builds(_dump_string, json_strings, st.booleans()),
)


def _json_object(pairs: list[tuple[str, str]]) -> str:
    return "{" + ", ".join(f"{json.dumps(k)}: {v}" for k, v in pairs) + "}"


json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4).map(lambda items: "[" + ",".join(items) + "]"),
        st.lists(st.tuples(json_keys, inner), max_size=4).map(_json_object),
    ),
    max_leaves=20,
)
json_documents = st.lists(st.tuples(json_keys, json_values), max_size=5).map(_json_object)


@PROPERTY
@given(text=json_documents)
@example(text='{"a": {"b": 1, "b": 2}}')
@example(text='{"a:b": 1, "a": {":": 2, "b": "x:y"}, "a": 3}')
@example(text='{"\\"": 1, "\\"": 2}')
@example(text='{"a": "\\\\", "b": {"\\\\": 1, "\\\\": 2}}')
def test_strict_parsing_refuses_what_the_plain_rules_refuse(text: str) -> None:
    data = text.encode("utf-8", "surrogatepass")
    try:
        expected = reference_loads(data)
    except (FormatError, UnicodeDecodeError):
        with pytest.raises(FormatError):
            loads_object(data, what="doc")
    else:
        assert loads_object(data, what="doc") == expected
