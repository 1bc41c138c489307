"""Regression tests for the adversarial review of the pure core.

Each test pins down one problem the review found (it failed before the fix next to
it in the core) or one attack the review tried that the core already refuses.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from pinserver.authoring import parse_pins_file
from pinserver.documents import Manifest, Root, format_timestamp, parse_timestamp
from pinserver.envelope import MANIFEST_TYPE, Envelope, Signature
from pinserver.errors import (
    EnvelopeError,
    FormatError,
    RollbackError,
    SignatureError,
)
from pinserver.trust import (
    DEFAULT_SKEW,
    ManifestFloor,
    accept_manifest,
    advance_time_floor,
    effective_time,
    verify_anchor_root,
    verify_manifest_signatures,
    verify_next_root,
)
from tests.core.helpers import key, signed, signed_root
from tests.factory import (
    NOW,
    Deployment,
    manifest_document,
    manifest_envelope,
    payload_hash,
    root_document,
)

REPO = Path(__file__).resolve().parents[2]

# --- finding 1: the time floor could creep past the real clock -----------------------


def test_time_floor_never_passes_the_clock_however_often_a_manifest_is_accepted() -> None:
    """A manifest with a far-future ``issued_at`` (a stolen publisher key, or a
    publisher's wrong clock), accepted again and again (a mirror re-serving it with
    other envelope bytes needs no key), must not walk the floor past the real clock:
    the client judges with ``effective_time`` = max(clock, floor), so a cap of
    "reference_time + skew" grew by the skew at every acceptance, until every
    legitimate manifest looked expired (and ``ca-only`` switched pinning off)."""
    deployment = Deployment()
    wild = deployment.publish(
        issued_at=NOW + timedelta(days=3650), not_before=NOW - timedelta(hours=1)
    )
    root = verify_anchor_root(deployment.roots[0]).root
    clock = NOW  # the device clock does not move during the attack
    floor: datetime | None = None
    for _ in range(50):
        judged_at = effective_time(clock, floor)
        verified = accept_manifest(root, wild, floor=None, reference_time=judged_at)
        floor = advance_time_floor(floor, verified.manifest, judged_at, DEFAULT_SKEW)
    assert floor is not None
    assert floor <= clock
    # The next legitimate manifest, valid for a day from now, is still accepted.
    honest = deployment.publish(issued_at=NOW, expires=NOW + timedelta(days=1))
    accept_manifest(
        root,
        honest,
        floor=ManifestFloor(1, payload_hash(wild)),
        reference_time=effective_time(clock, floor),
    )


# --- finding 2: years below 1000 did not survive format_timestamp ----------------------


@pytest.mark.parametrize("year", [1, 999])
def test_timestamps_of_small_years_round_trip(year: int) -> None:
    """strftime("%Y") writes year 1 as "1" on glibc, which the strict parser refuses: a
    signed manifest with such an ``issued_at`` became a client time floor that could not
    be read back, so the client dropped its whole state (and its rollback floor)."""
    moment = datetime(year, 1, 2, 3, 4, 5, tzinfo=UTC)
    text = format_timestamp(moment)
    assert text == f"{year:04d}-01-02T03:04:05Z"
    assert parse_timestamp(text, field="t") == moment
    manifest = manifest_document(
        1, issued_at=moment, not_before=NOW - timedelta(hours=1), expires=NOW + timedelta(days=1)
    )
    assert Manifest.from_bytes(manifest.to_bytes()) == manifest


# --- finding 3: authoring crashed on hostile pins files -----------------------------


@pytest.mark.parametrize(
    ("data", "filename"),
    [
        (b"pinsets = " + b"[" * 5000 + b"]" * 5000, "pins.toml"),
        (
            b'[[pinsets]]\nhost = "a.example.com"\nexpires = "99999999999d"\npins = []\n',
            "pins.toml",
        ),
        (
            b'[[pinsets]]\nhost = "a.example.com"\nexpires = "3000000d"\npins = []\n',
            "pins.toml",
        ),
    ],
    ids=["deep-toml", "duration-too-big-for-timedelta", "duration-past-year-9999"],
)
def test_hostile_pins_file_is_a_format_error(data: bytes, filename: str) -> None:
    with pytest.raises(FormatError):
        parse_pins_file(data, filename=filename, issued_at=NOW)


# --- finding 4: a failed key write left a truncated key file behind -------------------


def test_key_write_that_fails_leaves_no_partial_key_file(tmp_path: Path) -> None:
    """Out of space (here: a file size limit) part way through: the old code wrote what
    fitted and returned, leaving a truncated .key that also blocked every retry."""
    child = textwrap.dedent(
        f"""
        import resource, signal, sys
        from pathlib import Path
        sys.path.insert(0, {str(REPO)!r})
        from pinserver.errors import KeyFileError
        from pinserver.keys import PrivateKey, write_key_pair
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (40, resource.RLIM_INFINITY))
        try:
            write_key_pair(Path({str(tmp_path)!r}), "k", PrivateKey.generate(), b"pass phrase")
        except KeyFileError as e:
            print("KeyFileError", e)
            sys.exit(3)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", child], capture_output=True, text=True, check=False, timeout=60
    )
    assert done.returncode == 3, done.stdout + done.stderr
    assert not (tmp_path / "k.key").exists()
    assert not (tmp_path / "k.pub").exists()


# --- finding 5: an envelope error echoed every unknown field name ---------------------


def test_envelope_error_does_not_echo_a_megabyte_of_field_names() -> None:
    """Unauthenticated input: the 400 body (and the server log) named every one of the
    attacker's unknown fields, turning 1 MiB in into about 1 MiB out."""
    hostile = json.dumps({f"field-{i:06d}": 1 for i in range(40_000)}).encode()
    with pytest.raises(EnvelopeError) as info:
        Envelope.from_bytes(hostile)
    assert len(info.value.message) < 1000
    assert "field-000000" in info.value.message
    long_name = json.dumps({"x" * 500_000: 1}).encode()
    with pytest.raises(EnvelopeError) as info:
        Envelope.from_bytes(long_name)
    assert len(info.value.message) < 1000


# --- attacks the core already refuses (kept as regression tests) ---------------------


def test_payload_type_is_bound_by_pae_and_by_the_payload_type_field() -> None:
    """A root payload relabelled as a manifest fails the signature (PAE binds the
    type); a publisher-signed payload saying "type": "root" fails the schema."""
    root_key, publisher = key("rv-root"), key("rv-pub")
    root = root_document(1, [root_key], [publisher])
    root_payload = root.to_bytes()
    relabelled = Envelope(MANIFEST_TYPE, root_payload, ()).to_bytes()
    sig = signed_root(root_payload, [publisher])
    forged = json.loads(sig)
    forged["payloadType"] = MANIFEST_TYPE
    with pytest.raises(SignatureError):
        verify_manifest_signatures(root, json.dumps(forged).encode())
    with pytest.raises(SignatureError):
        verify_manifest_signatures(root, relabelled)
    with pytest.raises(FormatError):
        verify_manifest_signatures(root, signed(root_payload, [publisher]))


def test_a_key_counts_once_and_a_forged_copy_does_not_hide_its_good_signature() -> None:
    a, b, root_key = key("dup-a"), key("dup-b"), key("dup-root")
    root = root_document(1, [root_key], [a, b], publisher_threshold=2)
    payload = manifest_document(1).to_bytes()
    good = Envelope.from_bytes(signed(payload, [a]))
    repeated = Envelope(
        MANIFEST_TYPE, payload, (good.signatures[0],) * 5
    )  # 5 copies of a's signature
    with pytest.raises(SignatureError):
        verify_manifest_signatures(root, repeated)
    bogus_first = Envelope(
        MANIFEST_TYPE,
        payload,
        (Signature(a.keyid, b"\0" * 64), *Envelope.from_bytes(signed(payload, [a, b])).signatures),
    )
    assert verify_manifest_signatures(root, bogus_first).signed_by == {a.keyid, b.keyid}


def test_root_rollback_and_replay_of_the_trusted_root_are_refused() -> None:
    deployment = Deployment()
    deployment.rotate_root()
    one = verify_anchor_root(deployment.roots[0]).root
    two = verify_next_root(one, deployment.roots[1]).root
    with pytest.raises(RollbackError):
        verify_next_root(two, deployment.roots[1])  # root 2 again
    with pytest.raises(SignatureError):
        verify_next_root(two, deployment.roots[0])  # root 1 is not signed by root 2's keys


def test_json_integer_lookalikes_are_not_integers() -> None:
    base = json.loads(manifest_document(1).to_bytes())
    for bad in (1.0, True, "1", 1e0, 2**53):
        doc = {**base, "version": bad}
        with pytest.raises(FormatError):
            Manifest.from_dict(doc)
    root = json.loads(root_document(1, [key("i-r")], [key("i-p")]).to_bytes())
    root["roles"]["root"]["threshold"] = 1.0
    with pytest.raises(FormatError):
        Root.from_dict(root)


def test_manifest_signed_by_a_root_key_is_not_a_manifest() -> None:
    """Root and publisher keys are disjoint, so a root key cannot stand in for the
    publisher (nor the reverse)."""
    root_key, publisher = key("x-root"), key("x-pub")
    root = root_document(1, [root_key], [publisher])
    with pytest.raises(SignatureError):
        verify_manifest_signatures(root, manifest_envelope(manifest_document(1), [root_key]))


# --- finding 6: a threshold no envelope can meet -----------------------------------


def test_a_threshold_above_the_signature_cap_is_refused() -> None:
    """An envelope carries at most 64 signatures, so a publisher threshold of 65 (which
    the schema allowed with 65 keys) would be a root under which nothing can ever be
    published, and a root threshold of 65 a root that can never be rotated."""
    publishers = [key(f"cap-pub-{i}") for i in range(65)]
    raw = json.loads(
        root_document(1, [key("cap-root")], publishers, publisher_threshold=64).to_bytes()
    )
    Root.from_dict(raw)  # 64 of 65 is reachable
    raw["roles"]["publisher"]["threshold"] = 65
    with pytest.raises(FormatError) as info:
        Root.from_dict(raw)
    assert info.value.field == "roles.publisher.threshold"
