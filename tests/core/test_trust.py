"""SPEC sections 4 and 6: the root walk, manifest acceptance in its stated order,
fast-forward recovery, the time floor, and the server's publication checks."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta

import pytest

from pinserver.documents import Root
from pinserver.envelope import ROOT_TYPE, Envelope
from pinserver.errors import (
    ExpiredError,
    ForkError,
    PinserverError,
    RollbackError,
    SignatureError,
    VerificationError,
    VersionConflictError,
)
from pinserver.keys import PrivateKey
from pinserver.trust import (
    DEFAULT_SKEW,
    ManifestFloor,
    TrustedSet,
    accept_manifest,
    advance_time_floor,
    effective_time,
    is_publisher_changed,
    verify_publication,
    verify_root_chain,
    verify_root_rotation,
)
from tests.core.helpers import assert_rejected, key
from tests.factory import (
    NOW,
    Deployment,
    manifest_document,
    manifest_envelope,
    payload_hash,
    root_document,
    root_envelope,
)

OLD = [key("walk-old-a"), key("walk-old-b"), key("walk-old-c")]
NEW = [key("walk-new-a"), key("walk-new-b"), key("walk-new-c")]
PUBLISHER = key("walk-publisher")
OUTSIDER = key("walk-outsider")


def make_root(
    version: int,
    root_keys: Sequence[PrivateKey],
    signers: Sequence[PrivateKey],
    *,
    threshold: int = 2,
    publishers: Sequence[PrivateKey] = (PUBLISHER,),
    **dates: object,
) -> bytes:
    doc = root_document(
        version,
        root_keys,
        publishers,
        root_threshold=threshold,
        **dates,  # type: ignore[arg-type]
    )
    return root_envelope(doc, signers)


def trusted_at_root_1() -> TrustedSet:
    return TrustedSet.from_anchor(make_root(1, OLD, OLD[:2]), reference_time=NOW)


@dataclass(frozen=True)
class RootCase:
    name: str
    offered: Callable[[], bytes]
    error: type[PinserverError] | None = None
    code: str = ""


def _duplicated_signature() -> bytes:
    once = Envelope.from_bytes(make_root(2, OLD, OLD[:1]))
    return Envelope(ROOT_TYPE, once.payload, once.signatures * 2).to_bytes()


ROOT_CASES = [
    RootCase("same keys, 2 of 3 old keys sign", lambda: make_root(2, OLD, OLD[1:])),
    RootCase("rotation signed by 2 old and 2 new", lambda: make_root(2, NEW, OLD[:2] + NEW[:2])),
    RootCase(
        "unknown keyids are ignored",
        lambda: make_root(2, OLD, [OLD[0], OUTSIDER, OLD[2]]),
    ),
    RootCase(
        "one old key only",
        lambda: make_root(2, OLD, OLD[:1]),
        SignatureError,
        "signature_threshold",
    ),
    RootCase(
        "one old key signing twice", _duplicated_signature, SignatureError, "signature_threshold"
    ),
    RootCase(
        "rotation signed only by the old keys",
        lambda: make_root(2, NEW, OLD),
        SignatureError,
        "signature_threshold",
    ),
    RootCase(
        "rotation signed only by the new keys",
        lambda: make_root(2, NEW, NEW),
        SignatureError,
        "signature_threshold",
    ),
    RootCase(
        "rotation: old threshold met, new short",
        lambda: make_root(2, NEW, OLD[:2] + NEW[:1]),
        SignatureError,
        "signature_threshold",
    ),
    RootCase(
        "publisher key cannot sign a root",
        lambda: make_root(2, OLD, [OLD[0], PUBLISHER]),
        SignatureError,
        "signature_threshold",
    ),
    RootCase(
        "root N+2 offered at N",
        lambda: make_root(3, OLD, OLD),
        VerificationError,
        "root_version_gap",
    ),
    RootCase("root N again", lambda: make_root(1, OLD, OLD), RollbackError, "rollback"),
    RootCase(
        # The old-root threshold is checked first: an unsigned N+2 is a signature error.
        "version checked after the old-root threshold",
        lambda: make_root(3, OLD, [OUTSIDER]),
        SignatureError,
        "signature_threshold",
    ),
]


@pytest.mark.parametrize("case", ROOT_CASES, ids=lambda c: c.name)
def test_root_walk_step(case: RootCase) -> None:
    trusted = trusted_at_root_1()
    data = case.offered()
    if case.error is None:
        assert trusted.update_root(data).version == 2
        assert trusted.root.version == 2
    else:
        assert_rejected(lambda: trusted.update_root(data), case.error, case.code, trusted=trusted)


def test_walk_goes_one_version_at_a_time_and_then_continues() -> None:
    chain = [make_root(2, NEW, OLD[:2] + NEW[:2]), make_root(3, OLD, NEW[:2] + OLD[:2])]
    roots = verify_root_chain(make_root(1, OLD, OLD[:2]), chain)
    assert [r.version for r in roots] == [1, 2, 3]
    with pytest.raises(VerificationError) as info:
        verify_root_chain(make_root(1, OLD, OLD[:2]), chain[1:])
    assert info.value.code == "root_version_gap"


def test_root_walk_is_bounded() -> None:
    anchor = make_root(1, OLD, OLD[:2])
    trusted = TrustedSet.from_anchor(anchor, reference_time=NOW, max_root_rotations=2)
    trusted.update_root(make_root(2, OLD, OLD[:2]))
    trusted.update_root(make_root(3, OLD, OLD[:2]))
    assert_rejected(
        lambda: trusted.update_root(make_root(4, OLD, OLD[:2])),
        VerificationError,
        "too_many_roots",
        trusted=trusted,
    )
    with pytest.raises(VerificationError):
        verify_root_chain(anchor, [make_root(2, OLD, OLD[:2])] * 3, max_rotations=2)


EXPIRED = {"issued_at": NOW - timedelta(days=100), "expires": NOW - timedelta(days=50)}


def test_intermediate_expired_roots_are_walked_through() -> None:
    trusted = TrustedSet.from_anchor(make_root(1, OLD, OLD[:2], **EXPIRED), reference_time=NOW)
    trusted.update_root(make_root(2, OLD, OLD[:2], **EXPIRED))
    trusted.update_root(make_root(3, OLD, OLD[:2]))
    manifest = manifest_envelope(manifest_document(1, root_version=3), [PUBLISHER])
    assert trusted.update_manifest(manifest).version == 1


@pytest.mark.parametrize(
    "expires", [NOW - timedelta(days=1), NOW], ids=["expired yesterday", "expires now"]
)
def test_expired_final_root_accepts_no_manifest(expires: object) -> None:
    dates = {"issued_at": NOW - timedelta(days=100), "expires": expires}
    trusted = TrustedSet.from_anchor(make_root(1, OLD, OLD[:2]), reference_time=NOW)
    first = trusted.update_manifest(manifest_envelope(manifest_document(1), [PUBLISHER]))
    trusted.update_root(make_root(2, OLD, OLD[:2], **dates))  # walking to it is fine
    manifest = manifest_envelope(
        manifest_document(2, root_version=2, previous=first.payload_sha256), [PUBLISHER]
    )
    error = assert_rejected(
        lambda: trusted.update_manifest(manifest), ExpiredError, "root_expired", trusted=trusted
    )
    assert error.status == 422
    # the manifest already trusted stays trusted: the client keeps its last good pins
    assert trusted.manifest is not None
    assert trusted.manifest.version == 1


def test_server_root_rotation_maps_version_errors_to_409() -> None:
    current = root_document(1, OLD, [PUBLISHER], root_threshold=2)
    assert (
        verify_root_rotation(current, make_root(2, OLD, OLD[:2]), reference_time=NOW).version == 2
    )
    for offered in (make_root(3, OLD, OLD[:2]), make_root(1, OLD, OLD[:2])):
        with pytest.raises(VersionConflictError) as info:
            verify_root_rotation(current, offered, reference_time=NOW)
        assert info.value.status == 409
        assert info.value.latest_version == 1
    with pytest.raises(SignatureError):
        verify_root_rotation(current, make_root(2, NEW, NEW), reference_time=NOW)


def test_server_root_rotation_refuses_a_root_that_has_already_expired() -> None:
    current = root_document(1, OLD, [PUBLISHER], root_threshold=2)
    offered = make_root(2, OLD, OLD[:2])
    expires = Root.from_bytes(Envelope.from_bytes(offered).payload).expires
    assert verify_root_rotation(current, offered, reference_time=expires - SECOND).version == 2
    with pytest.raises(ExpiredError) as info:
        verify_root_rotation(current, offered, reference_time=expires)
    assert (info.value.code, info.value.status) == ("root_expired", 422)


# --- manifest acceptance ----------------------------------------------------------------


def deployment_at_v2() -> tuple[Deployment, TrustedSet]:
    """A client that trusts manifest 2 of a deployment with one root."""
    deployment = Deployment(root_keys=OLD[:1], publisher_keys=[PUBLISHER])
    trusted = TrustedSet.from_anchor(deployment.roots[0], reference_time=NOW)
    trusted.update_manifest(deployment.publish())
    trusted.update_manifest(deployment.publish())
    return deployment, trusted


def _manifest(version: int, d: Deployment, **kwargs: object) -> bytes:
    if "previous" not in kwargs:
        kwargs["previous"] = payload_hash(d.manifests[-1])
    kwargs.setdefault("root_version", 1)
    return manifest_envelope(
        manifest_document(version, **kwargs),  # type: ignore[arg-type]
        [PUBLISHER],
    )


SKEW = DEFAULT_SKEW
SECOND = timedelta(seconds=1)


@dataclass(frozen=True)
class AcceptCase:
    name: str
    offered: Callable[[Deployment], bytes]
    error: type[PinserverError] | None = None
    code: str = ""
    expected_version: int = 3


ACCEPT_CASES = [
    AcceptCase("next version", lambda d: d.next_manifest()),
    AcceptCase("same version, same payload", lambda d: d.manifests[1], expected_version=2),
    AcceptCase(
        "same version, other payload",
        lambda d: _manifest(2, d, previous=payload_hash(d.manifests[0]), poll_interval=600),
        RollbackError,
        "equal_version_mismatch",
    ),
    AcceptCase("older version replayed", lambda d: d.manifests[0], RollbackError, "rollback"),
    AcceptCase(
        "fork: next version chained elsewhere",
        lambda d: _manifest(3, d, previous="0" * 64),
        ForkError,
        "fork",
    ),
    AcceptCase(
        "fork: chained to the older manifest",
        lambda d: _manifest(3, d, previous=payload_hash(d.manifests[0])),
        ForkError,
        "fork",
    ),
    AcceptCase(
        "skipped versions are not a fork",
        lambda d: _manifest(5, d, previous="0" * 64),
        expected_version=5,
    ),
    AcceptCase(
        "root_version from the future",
        lambda d: _manifest(3, d, root_version=2),
        VerificationError,
        "unknown_root_version",
    ),
    AcceptCase("not_before at now + skew", lambda d: _manifest(3, d, not_before=NOW + SKEW)),
    AcceptCase(
        "not_before one second past now + skew",
        lambda d: _manifest(3, d, not_before=NOW + SKEW + SECOND),
        ExpiredError,
        "not_yet_valid",
    ),
    AcceptCase("expires one second after now", lambda d: _manifest(3, d, expires=NOW + SECOND)),
    AcceptCase(
        "expires exactly now", lambda d: _manifest(3, d, expires=NOW), ExpiredError, "expired"
    ),
    AcceptCase(
        "expired long ago",
        lambda d: _manifest(
            3, d, issued_at=NOW - timedelta(days=60), expires=NOW - timedelta(days=30)
        ),
        ExpiredError,
        "expired",
    ),
    AcceptCase(
        "skew does not extend expiry",
        lambda d: _manifest(3, d, expires=NOW - SECOND),
        ExpiredError,
        "expired",
    ),
    # the order of SPEC section 6: the first failed rule names the error
    AcceptCase(
        "rule 2 before rule 3: future root and rollback",
        lambda d: _manifest(1, d, previous=None, root_version=9),
        VerificationError,
        "unknown_root_version",
    ),
    AcceptCase(
        "rule 3 before rule 4: rollback and expired",
        lambda d: _manifest(1, d, previous=None, expires=NOW),
        RollbackError,
        "rollback",
    ),
    AcceptCase(
        "rule 4 before rule 5: fork and expired",
        lambda d: _manifest(3, d, previous="0" * 64, expires=NOW),
        ExpiredError,
        "expired",
    ),
    AcceptCase(
        "rule 1 before all: fork signed by an outsider",
        lambda d: manifest_envelope(manifest_document(3, previous="0" * 64), [OUTSIDER]),
        SignatureError,
        "signature_threshold",
    ),
]


@pytest.mark.parametrize("case", ACCEPT_CASES, ids=lambda c: c.name)
def test_manifest_acceptance(case: AcceptCase) -> None:
    deployment, trusted = deployment_at_v2()
    data = case.offered(deployment)
    if case.error is None:
        verified = trusted.update_manifest(data)
        assert verified.version == case.expected_version
        assert trusted.floor == ManifestFloor(case.expected_version, payload_hash(data))
    else:
        assert_rejected(
            lambda: trusted.update_manifest(data), case.error, case.code, trusted=trusted
        )


def test_skew_is_configurable() -> None:
    deployment, _ = deployment_at_v2()
    root = TrustedSet.from_anchor(deployment.roots[0], reference_time=NOW).root
    early = _manifest(1, deployment, previous=None, not_before=NOW + SECOND)
    with pytest.raises(ExpiredError):
        accept_manifest(root, early, floor=None, reference_time=NOW, skew=timedelta(0))
    accept_manifest(root, early, floor=None, reference_time=NOW, skew=SECOND)


def test_reference_time_must_be_aware() -> None:
    deployment, _ = deployment_at_v2()
    root = TrustedSet.from_anchor(deployment.roots[0], reference_time=NOW).root
    with pytest.raises(ValueError, match="timezone"):
        accept_manifest(
            root, deployment.manifests[0], floor=None, reference_time=NOW.replace(tzinfo=None)
        )


def test_first_manifest_may_be_any_version() -> None:
    """With nothing trusted yet (or a forgotten floor) there is nothing to roll back to."""
    deployment, _ = deployment_at_v2()
    trusted = TrustedSet.from_anchor(deployment.roots[0], reference_time=NOW)
    assert trusted.update_manifest(deployment.manifests[1]).version == 2


# --- fast-forward recovery (TUF 5.3.11) --------------------------------------------------


def _attacked_client() -> tuple[Deployment, TrustedSet, PrivateKey]:
    """A stolen publisher key pushed the client's floor to the largest version."""
    stolen = PUBLISHER
    deployment = Deployment(root_keys=OLD[:1], publisher_keys=[stolen])
    trusted = TrustedSet.from_anchor(deployment.roots[0], reference_time=NOW)
    trusted.update_manifest(deployment.publish())
    attack = manifest_envelope(
        manifest_document(2**53 - 1, previous=payload_hash(deployment.manifests[0])), [stolen]
    )
    trusted.update_manifest(attack)
    assert trusted.floor is not None
    assert trusted.floor.version == 2**53 - 1
    assert_rejected(
        lambda: trusted.update_manifest(deployment.next_manifest()),
        RollbackError,
        "rollback",
        trusted=trusted,
    )
    return deployment, trusted, stolen


def test_publisher_rotation_forgets_the_floor() -> None:
    deployment, trusted, stolen = _attacked_client()
    trusted.update_root(deployment.rotate_publisher([key("walk-publisher-2")]))
    assert trusted.floor is None
    assert trusted.floor_reset
    assert trusted.update_manifest(deployment.publish()).version == 2
    # the stolen key no longer counts
    replay = manifest_envelope(
        manifest_document(3, root_version=2, previous=payload_hash(deployment.manifests[-1])),
        [stolen],
    )
    assert_rejected(
        lambda: trusted.update_manifest(replay),
        SignatureError,
        "signature_threshold",
        trusted=trusted,
    )


def test_root_rotation_that_keeps_the_publisher_keeps_the_floor() -> None:
    deployment, trusted, _ = _attacked_client()
    trusted.update_root(deployment.rotate_root([key("walk-root-2")]))
    assert trusted.floor is not None
    assert trusted.floor.version == 2**53 - 1
    assert not trusted.floor_reset
    assert_rejected(
        lambda: trusted.update_manifest(deployment.next_manifest()),
        RollbackError,
        "rollback",
        trusted=trusted,
    )


def test_publisher_change_detection() -> None:
    a, b = key("pc-a"), key("pc-b")
    base = root_document(1, OLD, [a, b], publisher_threshold=1)
    assert not is_publisher_changed(base, root_document(2, NEW, [b, a], publisher_threshold=1))
    assert is_publisher_changed(base, root_document(2, OLD, [a, b], publisher_threshold=2))
    assert is_publisher_changed(base, root_document(2, OLD, [a], publisher_threshold=1))
    assert is_publisher_changed(base, root_document(2, OLD, [a, PUBLISHER]))


# --- time floor -------------------------------------------------------------------------


def test_time_floor_tracks_newest_issued_at_capped_at_now() -> None:
    hour = timedelta(hours=1)
    m_old = manifest_document(1, issued_at=NOW - 2 * hour)
    m_new = manifest_document(2, previous="0" * 64, issued_at=NOW - hour)
    m_wild = manifest_document(3, previous="0" * 64, issued_at=NOW + timedelta(days=365))
    floor = advance_time_floor(None, m_old, NOW, SKEW)
    assert floor == NOW - 2 * hour
    floor = advance_time_floor(floor, m_new, NOW, SKEW)
    assert floor == NOW - hour
    assert advance_time_floor(floor, m_old, NOW, SKEW) == NOW - hour  # never decreases
    assert advance_time_floor(floor, m_wild, NOW, SKEW) == NOW  # capped, no skew


def test_clock_wound_back_cannot_revive_an_expired_manifest() -> None:
    deployment = Deployment(root_keys=OLD[:1], publisher_keys=[PUBLISHER])
    old = deployment.publish(issued_at=NOW - timedelta(days=40), expires=NOW - timedelta(days=10))
    fresh = manifest_document(2, previous=payload_hash(old), issued_at=NOW - timedelta(hours=1))
    floor = advance_time_floor(None, fresh, NOW, SKEW)
    wound_back = NOW - timedelta(days=20)  # a clock inside the old manifest's window
    judged_at = effective_time(wound_back, floor)
    assert judged_at == floor
    root = TrustedSet.from_anchor(deployment.roots[0], reference_time=NOW).root
    with pytest.raises(ExpiredError):
        accept_manifest(root, old, floor=None, reference_time=judged_at)
    assert effective_time(NOW + timedelta(days=1), floor) == NOW + timedelta(days=1)
    with pytest.raises(ValueError, match="timezone"):
        effective_time(NOW.replace(tzinfo=None), floor)


# --- the server's publication checks (SPEC section 7 status order) ----------------------


def _server() -> tuple[Deployment, ManifestFloor]:
    deployment = Deployment(root_keys=OLD[:1], publisher_keys=[PUBLISHER])
    deployment.publish()
    latest = ManifestFloor(1, payload_hash(deployment.manifests[0]))
    return deployment, latest


@dataclass(frozen=True)
class PublishCase:
    name: str
    offered: Callable[[Deployment], bytes]
    error: type[PinserverError] | None
    status: int = 0


PUBLISH_CASES = [
    PublishCase("next version", lambda d: d.next_manifest(), None),
    PublishCase("unsigned", lambda d: d.next_manifest(signers=[]), SignatureError, 403),
    PublishCase(
        "expired and not the next version",
        lambda d: _manifest(7, d, expires=NOW),
        ExpiredError,
        422,
    ),
    PublishCase("same version again", lambda d: d.manifests[0], VersionConflictError, 409),
    PublishCase("skips a version", lambda d: _manifest(3, d), VersionConflictError, 409),
    PublishCase(
        "previous is not the latest",
        lambda d: _manifest(2, d, previous="0" * 64),
        VersionConflictError,
        409,
    ),
    PublishCase(
        "names a future root", lambda d: _manifest(2, d, root_version=2), VersionConflictError, 409
    ),
]


@pytest.mark.parametrize("case", PUBLISH_CASES, ids=lambda c: c.name)
def test_publication(case: PublishCase) -> None:
    deployment, latest = _server()
    root = TrustedSet.from_anchor(deployment.roots[0], reference_time=NOW).root
    data = case.offered(deployment)
    if case.error is None:
        assert verify_publication(root, data, latest=latest, reference_time=NOW).version == 2
        return
    with pytest.raises(PinserverError) as info:
        verify_publication(root, data, latest=latest, reference_time=NOW)
    assert type(info.value) is case.error
    assert info.value.status == case.status
    if isinstance(info.value, VersionConflictError):
        assert info.value.latest_version == 1


def test_publication_under_a_superseded_root_is_a_conflict() -> None:
    deployment, latest = _server()
    old_manifest = deployment.next_manifest()
    deployment.rotate_root([key("pub-root-2")])
    roots = verify_root_chain(deployment.roots[0], deployment.roots[1:])
    with pytest.raises(VersionConflictError) as info:
        verify_publication(roots[-1].root, old_manifest, latest=latest, reference_time=NOW)
    assert "current root is 2" in info.value.message
    renewed = deployment.next_manifest()
    assert verify_publication(roots[-1].root, renewed, latest=latest, reference_time=NOW)


def test_first_publication() -> None:
    deployment = Deployment(root_keys=OLD[:1], publisher_keys=[PUBLISHER])
    root = TrustedSet.from_anchor(deployment.roots[0], reference_time=NOW).root
    assert verify_publication(root, deployment.next_manifest(), latest=None, reference_time=NOW)
    with pytest.raises(VersionConflictError):
        verify_publication(
            root, _manifest(2, deployment, previous="0" * 64), latest=None, reference_time=NOW
        )
