"""pinserver.pins: SPKI hashes against openssl, host matching, pin set expiry, and
matching a chain at any position. Certificates are real (trustme)."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from datetime import timedelta

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from pinserver.pins import (
    describe_chain,
    find_pinset,
    host_matches,
    is_chain_pinned,
    is_pinset_active,
    load_pem_chain,
    matching_pins,
    spki_sha256,
    spki_sha256_of_key,
)
from tests.core.helpers import LiveChain, live_chain
from tests.factory import NOW, fake_pin, pinset

OPENSSL = shutil.which("openssl")


def openssl_pin(cert_pem: bytes) -> str:
    """openssl x509 -pubkey | openssl pkey -pubin -outform der | openssl dgst -sha256
    -binary | base64, each step by the openssl binary."""
    assert OPENSSL is not None

    def step(args: list[str], data: bytes) -> bytes:
        done = subprocess.run([OPENSSL, *args], input=data, capture_output=True, check=False)
        assert done.returncode == 0, done.stderr.decode()
        return done.stdout

    pubkey = step(["x509", "-pubkey", "-noout"], cert_pem)
    der = step(["pkey", "-pubin", "-outform", "der"], pubkey)
    digest = step(["dgst", "-sha256", "-binary"], der)
    return step(["base64", "-A"], digest).decode().strip()


@pytest.fixture(
    scope="module", params=[trustme.KeyType.ECDSA, trustme.KeyType.RSA], ids=["ecdsa", "rsa"]
)
def chain(request: pytest.FixtureRequest) -> LiveChain:
    return live_chain(key_type=request.param)


@pytest.mark.skipif(OPENSSL is None, reason="the openssl binary is not installed")
@pytest.mark.parametrize("kind", ["leaf", "intermediate", "root"])
def test_spki_sha256_matches_openssl(chain: LiveChain, kind: str) -> None:
    pem = {
        "leaf": chain.leaf.cert_chain_pems[0].bytes(),
        "intermediate": chain.intermediate.cert_pem.bytes(),
        "root": chain.root.cert_pem.bytes(),
    }[kind]
    expected = openssl_pin(pem)
    cert = x509.load_pem_x509_certificate(pem)
    assert spki_sha256(pem) == expected
    assert spki_sha256(cert) == expected
    assert spki_sha256(cert.public_bytes(Encoding.DER)) == expected
    assert spki_sha256_of_key(cert.public_key()) == expected


def test_describe_chain_names_each_position(chain: LiveChain) -> None:
    described = chain.describe()
    assert [c.kind for c in described] == ["leaf", "intermediate", "root"]
    assert [c.position for c in described] == [0, 1, 2]
    assert described[0].issuer == described[1].subject
    assert described[1].issuer == described[2].subject
    assert described[2].is_self_signed
    assert described[2].is_ca
    assert not described[0].is_ca
    assert len({c.spki_sha256 for c in described}) == 3
    assert {c.key_type for c in described} <= {"EC-256", "RSA-2048"}


def test_load_pem_chain_keeps_file_order(chain: LiveChain) -> None:
    bundle = b"".join(chain.pems)
    certs = load_pem_chain(bundle)
    assert [spki_sha256(c) for c in certs] == [c.spki_sha256 for c in chain.describe()]


@dataclass(frozen=True)
class HostCase:
    pinned: str
    include_subdomains: bool
    host: str
    matches: bool


HOST_CASES = [
    HostCase("example.com", False, "example.com", True),
    HostCase("example.com", False, "api.example.com", False),
    HostCase("example.com", True, "api.example.com", True),
    HostCase("example.com", True, "a.b.example.com", True),
    HostCase("example.com", True, "example.com", True),
    HostCase("example.com", True, "badexample.com", False),
    HostCase("example.com", True, "example.com.evil.net", False),
    HostCase("example.com", True, "com", False),
    HostCase("api.example.com", True, "example.com", False),  # never upwards
    HostCase("example.com", False, "EXAMPLE.com", True),
    HostCase("example.com", False, "example.com.", True),
    HostCase("example.com", True, "API.Example.COM.", True),
]


@pytest.mark.parametrize(
    "case",
    HOST_CASES,
    ids=lambda c: f"{c.pinned}{'+sub' if c.include_subdomains else ''} vs {c.host}",
)
def test_host_matching(case: HostCase) -> None:
    ps = pinset(case.pinned, include_subdomains=case.include_subdomains)
    assert host_matches(ps, case.host) is case.matches
    assert (find_pinset([ps], case.host) is ps) is case.matches


def test_most_specific_pinset_wins_in_any_order() -> None:
    parent = pinset("example.com", include_subdomains=True)
    api = pinset("api.example.com")
    deep = pinset("x.api.example.com", include_subdomains=True)
    for order in ([parent, api, deep], [deep, api, parent], [api, deep, parent]):
        assert find_pinset(order, "api.example.com") is api
        assert find_pinset(order, "x.api.example.com") is deep
        assert find_pinset(order, "y.x.api.example.com") is deep
        # api.example.com does not include subdomains: its children fall to the parent
        assert find_pinset(order, "z.api.example.com") is parent
        assert find_pinset(order, "www.example.com") is parent
        assert find_pinset(order, "example.org") is None


def test_expired_pinset_is_inactive() -> None:
    ps = pinset("example.com", expires=NOW)
    assert is_pinset_active(ps, NOW - timedelta(seconds=1))
    assert not is_pinset_active(ps, NOW)
    assert not is_pinset_active(ps, NOW + timedelta(days=1))


@pytest.mark.parametrize("kind", ["leaf", "intermediate", "root"])
def test_chain_matches_at_any_position(chain: LiveChain, kind: str) -> None:
    hashes = [c.spki_sha256 for c in chain.describe()]
    ps = pinset("api.example.com", [chain.pin(kind)])
    assert is_chain_pinned(ps, hashes)
    assert matching_pins(ps, hashes) == {chain.pin(kind)}


def test_chain_that_matches_no_pin(chain: LiveChain) -> None:
    hashes = [c.spki_sha256 for c in chain.describe()]
    other = live_chain()
    ps = pinset("api.example.com", [other.pin("leaf")], backup=[other.pin("intermediate")])
    assert not is_chain_pinned(ps, hashes)
    assert matching_pins(ps, hashes) == frozenset()
    assert not is_chain_pinned(pinset("api.example.com", [fake_pin("x")]), [])


def test_describe_chain_accepts_der_and_objects(chain: LiveChain) -> None:
    certs = load_pem_chain(b"".join(chain.pems))
    ders = [c.public_bytes(Encoding.DER) for c in certs]
    assert describe_chain(ders) == describe_chain(certs) == chain.describe()
