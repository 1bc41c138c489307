"""Endless data and slow retrieval: the attacker cannot forge a document, so it tries
to exhaust the client instead: a body that never ends, one that arrives a byte at a
time, an oversized one, or no answer at all. It controls the connection for any
path, the manifest or a root in the middle of a walk. Defence: every download is
capped at 1 MiB and in time (the client's timeout; 1 s here), and ends in a
``FetchError``; the last good pins stay in force."""

from __future__ import annotations

import pytest

from pinserver.envelope import MAX_ENVELOPE_BYTES
from pinserver.errors import FetchError
from tests.attacks.conftest import HOST, Stage, keys, window
from tests.support.mitm import ENDLESS, Hold, Replace, Rule, Trickle

MANIFEST = "/v1/manifest.json"

CASES: list[tuple[str, Rule, str, float]] = [
    ("endless body", ENDLESS, "response_too_large", 10.0),
    (
        "oversized body with its length declared",
        Replace(b" " * (MAX_ENVELOPE_BYTES + 1)),
        "response_too_large",
        10.0,
    ),
    ("body trickled a byte at a time", Trickle(0.05), "fetch_timeout", 1.0),
    ("request held without an answer", Hold(), "fetch_timeout", 1.0),
]


@pytest.mark.parametrize(
    ("rule", "code", "timeout"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
@pytest.mark.parametrize("where", ["manifest", "root during a walk"])
def test_endless_and_slow_answers_end_in_a_fetch_error(
    stage: Stage, rule: Rule, code: str, timeout: float, where: str
) -> None:
    """The size cap ends the endless and oversized bodies whatever the timeout; the
    deadline (1 s here) ends the trickle and the silence."""
    if where == "manifest":
        stage.mitm.rules[MANIFEST] = rule
    else:
        # An unverifiable manifest makes the client look for root 3.
        stage.mitm.rules[MANIFEST] = Replace(
            stage.deployment.next_manifest(signers=keys(2), **window())
        )
        stage.mitm.rules["/v1/roots/3.json"] = rule
    attacked = stage.new_client(timeout=timeout)  # the same state directory
    with pytest.raises(FetchError) as raised:
        attacked.refresh()
    assert raised.value.code == code
    assert attacked.pins_for(HOST) == stage.pins_before
    stage.assert_untouched()
