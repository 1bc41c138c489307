"""Malformed and hostile JSON: bodies built to crash, hang or confuse the parser
(deep nesting, huge numbers, duplicate keys, invalid UTF-8, lone surrogates, NaN, a
byte order mark), as the envelope and as the signed payload. The attacker controls
every byte of the response. Defence: strict, bounded parsing with typed errors
(``FormatError``), and the payload is parsed only after its signatures verify: an
unsigned hostile payload is refused as unsigned without being parsed at all."""

from __future__ import annotations

import pytest

from pinserver.envelope import MANIFEST_TYPE, Envelope, sign
from pinserver.errors import FormatError, SignatureError
from tests.attacks.conftest import Stage
from tests.support.mitm import Replace

MANIFEST = "/v1/manifest.json"
DEPTH = 100_000


def _envelope_text(payload_b64: str = "e30=", extra: str = "") -> bytes:
    return (
        f'{{"payloadType": "{MANIFEST_TYPE}", "payload": "{payload_b64}", "signatures": []{extra}}}'
    ).encode()


HOSTILE: dict[str, bytes] = {
    "deep nesting": b"[" * DEPTH + b"]" * DEPTH,
    "deep nesting inside the envelope": _envelope_text(extra=', "x": ' + "[" * DEPTH + "]" * DEPTH),
    "huge integer": _envelope_text(extra=', "x": ' + "9" * 100_000),
    "huge float": _envelope_text(extra=', "x": 1e999999'),
    "NaN": _envelope_text(extra=', "x": NaN'),
    "duplicate keys": _envelope_text()[:-1] + b', "payload": "e30="}',
    "invalid UTF-8": _envelope_text().replace(b"e30=", b"\xff\xfe\xfd"),
    "lone surrogate": _envelope_text().replace(b"e30=", b"\\ud800"),
    "byte order mark": b"\xef\xbb\xbf" + _envelope_text(),
    "not an object": b"[]",
    "empty body": b"",
}

HOSTILE_PAYLOADS: dict[str, bytes] = {
    "deep nesting": b'{"a":' * DEPTH + b"1" + b"}" * DEPTH,
    "huge integer": b'{"type": "manifest", "version": ' + b"9" * 5000 + b"}",
    "duplicate keys": b'{"type": "manifest", "type": "root"}',
    "invalid UTF-8": b'{"type": "\xff\xfe"}',
    "NaN": b'{"type": "manifest", "version": NaN}',
}


@pytest.mark.parametrize("body", HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_envelopes_are_refused_with_a_format_error(stage: Stage, body: bytes) -> None:
    stage.mitm.rules[MANIFEST] = Replace(body)
    with pytest.raises(FormatError):
        stage.client.refresh()
    stage.assert_untouched()


@pytest.mark.parametrize("payload", HOSTILE_PAYLOADS.values(), ids=HOSTILE_PAYLOADS.keys())
def test_hostile_payloads_are_never_parsed_unsigned(stage: Stage, payload: bytes) -> None:
    """Unsigned: refused as unsigned (``SignatureError``) before any parsing. Signed by
    a threshold of the real publisher keys (a broken or stolen signing tool): a
    ``FormatError`` naming the problem. Either way nothing changes."""
    unsigned = Envelope(MANIFEST_TYPE, payload)
    stage.mitm.rules[MANIFEST] = Replace(unsigned.to_bytes())
    with pytest.raises(SignatureError):
        stage.client.refresh()
    stage.assert_untouched()

    signed = unsigned
    for key in stage.deployment.publisher_keys:
        signed = sign(signed, key)
    stage.mitm.rules[MANIFEST] = Replace(signed.to_bytes())
    with pytest.raises(FormatError) as raised:
        stage.client.refresh()
    assert not isinstance(raised.value, SignatureError)
    stage.assert_untouched()
