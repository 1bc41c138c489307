"""The stage for every attack: a real pinserver under gunicorn on 127.0.0.1, a
man in the middle in front of it, a real PinClient talking only to the MITM, and a
real HTTPS server that presents the attacker's certificate.

Before each attack the client has walked, honestly, to root 2 (the publisher keys
were rotated once; publisher threshold 2 of 3) and manifest 3, which pins
``localhost`` to keys the HTTPS server does not have. What almost every attacker
wants is a manifest that pins ``localhost`` to the attacker's own certificate
(:meth:`Stage.attacker_pinsets`); :meth:`Stage.assert_untouched` then shows that
the state file did not change by a byte, that a restarted client loads the same
pins, and that a real TLS handshake with the attacker's server is still refused.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests

from pinserver.client import PinClient
from pinserver.client.state import STATE_FILE
from pinserver.documents import PinSet
from pinserver.errors import PinMismatchError
from pinserver.keys import PrivateKey
from tests.factory import Deployment, fake_pin, pinset
from tests.support.gunicorn import init_store, running_server
from tests.support.mitm import Mitm
from tests.support.tls_server import Pki, TlsServer

HOST = "localhost"
JSON = {"Content-Type": "application/json"}


class Clock:
    """The client's clock: the real time unless a test moves it (nothing sleeps)."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC).replace(microsecond=0)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


def window(**extra: Any) -> dict[str, Any]:
    """Manifest times around the real clock, which is what the server judges by."""
    t = datetime.now(UTC).replace(microsecond=0)
    return {"issued_at": t - timedelta(hours=1), "expires": t + timedelta(days=30), **extra}


def keys(n: int) -> list[PrivateKey]:
    return [PrivateKey.generate() for _ in range(n)]


@dataclass
class Upstream:
    """A real pinserver (gunicorn, SQLite) holding ``deployment``."""

    url: str
    data_dir: Path
    deployment: Deployment
    retired_publisher: list[PrivateKey]

    def post(self, path: str, body: bytes) -> requests.Response:
        return requests.post(self.url + path, data=body, headers=JSON, timeout=30)

    def publish(self, **extra: Any) -> bytes:
        """Sign and publish the next manifest through the real API (201 or fail)."""
        body = self.deployment.next_manifest(**window(**extra))
        response = self.post("/v1/manifests", body)
        assert response.status_code == 201, response.text
        self.deployment.manifests.append(body)
        return body

    def rotate_publisher(self, new_keys: list[PrivateKey]) -> bytes:
        """Root N+1 with new publisher keys, signed by the root keys, posted (201)."""
        body = self.deployment.rotate_publisher(new_keys)
        response = self.post("/v1/roots", body)
        assert response.status_code == 201, response.text
        return body


@contextmanager
def serving(deployment: Deployment, retired: list[PrivateKey] | None = None) -> Iterator[Upstream]:
    """Install ``deployment``'s root 1 in a fresh store (as ``pinserver init`` does on
    the server host) and serve it with gunicorn; everything else goes through the API."""
    shm = Path("/dev/shm")
    base = Path(tempfile.mkdtemp(prefix="pinserver-attack-", dir=shm if shm.is_dir() else None))
    try:
        init_store(base / "data", Deployment(roots=deployment.roots[:1]))
        with running_server(base / "data", workers=1) as url:
            yield Upstream(url, base / "data", deployment, retired or [])
    finally:
        shutil.rmtree(base, ignore_errors=True)


def legitimate_history(upstream: Upstream) -> None:
    """Through the real API: manifest 1, a publisher rotation (root 2, publisher
    threshold 2 of 3), manifests 2 and 3. The first publisher keys become retired."""
    upstream.publish(pinsets=[pinset(HOST, [fake_pin("v1")])])
    upstream.retired_publisher = upstream.deployment.publisher_keys
    upstream.rotate_publisher(keys(3))
    upstream.publish(pinsets=[pinset(HOST, [fake_pin("v2")])])
    upstream.publish(pinsets=[pinset(HOST, [fake_pin("v3")])])


def new_deployment() -> Deployment:
    return Deployment(publisher_keys=keys(3), publisher_threshold=2)


@pytest.fixture(scope="package")
def shared_upstream() -> Iterator[Upstream]:
    """One server for the attacks that only change what the MITM serves."""
    with serving(new_deployment()) as upstream:
        legitimate_history(upstream)
        yield upstream


@pytest.fixture(scope="package")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki.create(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="package")
def attacker_https(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsServer]:
    """The host the attacker wants clients to trust: its certificate is valid for
    ``localhost`` under a CA the client trusts, but its key is in no legitimate pin."""
    with TlsServer(pki.server_context(tmp_path_factory.mktemp("tls"))) as server:
        yield server


@dataclass
class Stage:
    upstream: Upstream
    mitm: Mitm
    client: PinClient
    state_dir: Path
    clock: Clock
    pki: Pki
    https: TlsServer
    state_before: bytes = b""
    pins_before: PinSet | None = None
    versions_before: tuple[int, int | None] = (0, None)
    _clients: list[PinClient] = field(default_factory=list)

    @property
    def deployment(self) -> Deployment:
        return self.upstream.deployment

    def attacker_pinsets(self) -> list[PinSet]:
        """What the attacker wants: ``localhost`` pinned to its own certificate."""
        return [pinset(HOST, [self.pki.leaf_pin])]

    def new_client(self, **overrides: Any) -> PinClient:
        kwargs: dict[str, Any] = {
            "base_url": self.mitm.url,
            "trusted_root": self.deployment.roots[0],
            "state_dir": self.state_dir,
            "clock": self.clock,
            "timeout": 10.0,
        }
        kwargs.update(overrides)
        client = PinClient(**kwargs)
        self._clients.append(client)
        return client

    def remember(self) -> None:
        """Record the last good state that every attack must leave alone."""
        self.state_before = (self.state_dir / STATE_FILE).read_bytes()
        self.pins_before = self.client.pins_for(HOST)
        self.versions_before = (self.client.root_version, self.client.manifest_version)
        assert self.pins_before is not None
        assert self.pki.leaf_pin not in {p.sha256 for p in self.pins_before.pins}

    def assert_untouched(self) -> None:
        """The state file is byte-for-byte the same, a restarted client loads the same
        pins, and both still refuse the attacker's certificate on a real handshake."""
        assert (self.state_dir / STATE_FILE).read_bytes() == self.state_before
        assert (self.client.root_version, self.client.manifest_version) == self.versions_before
        assert self.client.pins_for(HOST) == self.pins_before
        restarted = self.new_client()
        assert restarted.load_problem is None
        assert (restarted.root_version, restarted.manifest_version) == self.versions_before
        assert restarted.pins_for(HOST) == self.pins_before
        for client in (self.client, restarted):
            with client.session() as session, pytest.raises(PinMismatchError):
                session.get(self.https.url_for(HOST), timeout=10, verify=str(self.pki.ca_file))
        assert self.https.requests == []

    def close(self) -> None:
        for client in self._clients:
            client.close()


MakeStage = Callable[..., Stage]


@pytest.fixture
def make_stage(
    tmp_path: Path, pki: Pki, attacker_https: TlsServer
) -> Iterator[Callable[[Upstream], Stage]]:
    """A MITM in front of ``upstream`` and a client that walked through it honestly to
    the latest root and manifest; the last good state is remembered."""
    stages: list[Stage] = []
    mitms: list[Mitm] = []

    def make(upstream: Upstream, **client_options: Any) -> Stage:
        mitm = Mitm(upstream.url).start()
        mitms.append(mitm)
        stage = Stage(
            upstream=upstream,
            mitm=mitm,
            client=None,  # type: ignore[arg-type]
            state_dir=tmp_path / f"state-{len(stages)}",
            clock=Clock(),
            pki=pki,
            https=attacker_https,
        )
        stage.client = stage.new_client(**client_options)
        result = stage.client.refresh()
        assert result.updated
        assert stage.client.root_version == upstream.deployment.root_version
        assert stage.client.manifest_version == upstream.deployment.manifest_version
        stage.remember()
        stages.append(stage)
        return stage

    attacker_https.requests.clear()
    yield make
    for stage in stages:
        stage.close()
    for mitm in mitms:
        mitm.stop()


@pytest.fixture
def stage(make_stage: Callable[..., Stage], shared_upstream: Upstream) -> Stage:
    return make_stage(shared_upstream)
