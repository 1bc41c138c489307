"""Hypothesis strategies for hostile input: raw bytes, arbitrary JSON, hostile JSON
text, and structure-aware mutations of genuine signed documents."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import strategies as st

from pinserver.envelope import MANIFEST_TYPE, ROOT_TYPE, Envelope
from tests.factory import NOW, Deployment

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=40),
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=5),
        st.dictionaries(st.text(max_size=12), children, max_size=5),
    ),
    max_leaves=20,
)

HOSTILE_SNIPPETS = [
    b"[" * 5000,
    b'{"a":' * 200,
    b"9" * 5000,
    b"1e999999",
    b"-1e999999",
    b"NaN",
    b"Infinity",
    b'"\\ud800"',
    b"\xff\xfe\xfd",
    b"\xef\xbb\xbf",
    b'{"k": 1, "k": 2}',
    b"\x00",
    b"null",
    b"[]",
    b'""',
]


def _splice(base: bytes, position: int, snippet: bytes, cut: int) -> bytes:
    position %= len(base) + 1
    return base[:position] + snippet + base[position + cut :]


@st.composite
def byte_mutations(draw: st.DrawFn, base: bytes) -> bytes:
    """``base`` with a few random byte-level edits: flips, splices, truncations."""
    data = bytearray(base)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "splice", "truncate", "hostile"]))
        position = draw(st.integers(0, max(len(data), 1)))
        if kind == "flip" and data:
            index = position % len(data)
            data[index] ^= draw(st.integers(1, 255))
        elif kind == "splice":
            data = bytearray(
                _splice(bytes(data), position, draw(st.binary(max_size=8)), draw(st.integers(0, 8)))
            )
        elif kind == "truncate":
            data = data[: position % (len(data) + 1)]
        else:
            data = bytearray(
                _splice(bytes(data), position, draw(st.sampled_from(HOSTILE_SNIPPETS)), 0)
            )
    return bytes(data)


@st.composite
def tree_mutations(draw: st.DrawFn, base: dict[str, Any]) -> dict[str, Any]:
    """``base`` (a JSON object) with one node replaced, removed or added at any depth."""
    document: Any = json.loads(json.dumps(base))
    node = document
    while True:
        if isinstance(node, dict) and node:
            key = draw(st.sampled_from(sorted(node)))
            child = node[key]
            if isinstance(child, dict | list) and child and draw(st.booleans()):
                node = child
                continue
            action = draw(st.sampled_from(["replace", "delete", "add"]))
            if action == "replace":
                node[key] = draw(json_values)
            elif action == "delete":
                del node[key]
            else:
                node[draw(st.text(max_size=12))] = draw(json_values)
            return document  # type: ignore[no-any-return]
        if isinstance(node, list) and node:
            index = draw(st.integers(0, len(node) - 1))
            child = node[index]
            if isinstance(child, dict | list) and child and draw(st.booleans()):
                node = child
                continue
            action = draw(st.sampled_from(["replace", "delete", "duplicate"]))
            if action == "replace":
                node[index] = draw(json_values)
            elif action == "delete":
                del node[index]
            else:
                node.append(child)
            return document  # type: ignore[no-any-return]
        return document  # type: ignore[no-any-return]


def genuine_documents() -> tuple[Deployment, bytes, bytes]:
    """A deployment with two roots and two manifests; its latest root and manifest
    envelopes, as seeds for mutation."""
    deployment = Deployment()
    deployment.publish(issued_at=NOW)
    deployment.rotate_publisher()
    deployment.publish(issued_at=NOW)
    return deployment, deployment.roots[-1], deployment.manifests[-1]


DEPLOYMENT, ROOT_SEED, MANIFEST_SEED = genuine_documents()
MANIFEST_PAYLOAD = Envelope.from_bytes(MANIFEST_SEED).payload
ROOT_PAYLOAD = Envelope.from_bytes(ROOT_SEED).payload


def payloads(seed: bytes) -> st.SearchStrategy[bytes]:
    """Payload text: random, arbitrary JSON, tree-mutated and byte-mutated ``seed``."""
    tree = json.loads(seed)
    return st.one_of(
        st.binary(max_size=512),
        json_values.map(lambda v: json.dumps(v).encode()),
        tree_mutations(tree).map(lambda v: json.dumps(v).encode()),
        byte_mutations(seed),
    )


def envelopes(seed: bytes) -> st.SearchStrategy[bytes]:
    """Envelope bytes: random, byte-mutated, tree-mutated, and well-formed envelopes
    around hostile payloads (signed by nobody, or carrying the seed's signatures)."""
    genuine = Envelope.from_bytes(seed)
    tree = json.loads(seed)
    payload_seed = genuine.payload
    rewrapped = st.builds(
        lambda payload_type, payload, keep: Envelope(
            payload_type, payload, genuine.signatures if keep else ()
        ).to_bytes(),
        st.sampled_from([MANIFEST_TYPE, ROOT_TYPE, "text/plain", ""]),
        payloads(payload_seed),
        st.booleans(),
    )
    return st.one_of(
        st.binary(max_size=512),
        byte_mutations(seed),
        tree_mutations(tree).map(lambda v: json.dumps(v).encode()),
        rewrapped,
    )
