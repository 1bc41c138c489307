"""Fork: two different manifests with the same version, both genuinely signed (a
publisher tool that signed twice, or a compromised server keeping a second branch to
show some clients). The attacker controls the server's responses and holds both
signed branches; it cannot sign anything new."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from pinserver.errors import ForkError, RollbackError
from tests.attacks.conftest import (
    HOST,
    Stage,
    legitimate_history,
    new_deployment,
    serving,
    window,
)
from tests.factory import fake_pin, manifest_document, manifest_envelope, payload_hash, pinset
from tests.support.mitm import Replace

MANIFEST = "/v1/manifest.json"


def test_a_second_manifest_with_the_same_version_is_refused(
    make_stage: Callable[..., Stage],
) -> None:
    """The server refuses the second branch (409); a client holding branch A refuses
    branch B at the same version (rule 3) and B's successor (rule 5, hash chain)."""
    with serving(new_deployment()) as upstream:
        legitimate_history(upstream)
        deployment = upstream.deployment
        branch_a = deployment.next_manifest(
            pinsets=[pinset(HOST, [fake_pin("branch A")])], **window()
        )
        branch_b = deployment.next_manifest(
            pinsets=[pinset(HOST, [fake_pin("branch B")])], **window()
        )
        assert upstream.post("/v1/manifests", branch_a).status_code == 201
        deployment.manifests.append(branch_a)
        refused = upstream.post("/v1/manifests", branch_b)
        assert refused.status_code == 409
        assert refused.json()["error"]["latest_version"] == 4

        stage = make_stage(upstream)
        assert stage.client.manifest_version == 4
        stage.mitm.rules[MANIFEST] = Replace(branch_b)
        with pytest.raises(RollbackError) as same_version:
            stage.client.refresh()
        assert same_version.value.code == "equal_version_mismatch"
        stage.assert_untouched()

        after_b = manifest_envelope(
            manifest_document(
                5,
                previous=payload_hash(branch_b),
                root_version=deployment.root_version,
                pinsets=[pinset(HOST, [fake_pin("branch B, continued")])],
                **window(),
            ),
            deployment.publisher_keys,
        )
        stage.mitm.rules[MANIFEST] = Replace(after_b)
        with pytest.raises(ForkError):
            stage.client.refresh()
        stage.assert_untouched()
        assert upstream.post("/v1/manifests", after_b).status_code == 409
