"""Fixtures for the client tests: a controllable mirror, a trustme PKI, real HTTPS
servers, a movable clock and a PinClient factory that cleans up after itself."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from pinserver.client import PinClient
from tests.factory import NOW, Deployment
from tests.support.mirror import Mirror
from tests.support.tls_server import Pki, TlsServer


class Clock:
    """The time the client sees; tests move it, nothing sleeps."""

    def __init__(self, now: datetime = NOW) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def deployment() -> Deployment:
    return Deployment()


@pytest.fixture
def mirror() -> Iterator[Mirror]:
    with Mirror() as running:
        yield running


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki.create(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def tls_server(pki: Pki, tmp_path: Path) -> Iterator[TlsServer]:
    with TlsServer(pki.server_context(tmp_path)) as server:
        yield server


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    return tmp_path / "state"


MakeClient = Callable[..., PinClient]


@pytest.fixture
def make_client(
    deployment: Deployment, mirror: Mirror, state_dir: Path, clock: Clock
) -> Iterator[MakeClient]:
    """PinClient(mirror, root 1 of ``deployment``, state_dir, clock) with overrides."""
    made: list[PinClient] = []

    def make(**overrides: Any) -> PinClient:
        kwargs: dict[str, Any] = {
            "base_url": mirror.url,
            "trusted_root": deployment.roots[0],
            "state_dir": state_dir,
            "clock": clock,
        }
        kwargs.update(overrides)
        client = PinClient(**kwargs)
        made.append(client)
        return client

    yield make
    for client in made:
        client.flush_reports()
        client.close()


@pytest.fixture
def fake_dns(monkeypatch: pytest.MonkeyPatch) -> None:
    """Resolve the ``*.test`` names of the trustme leaf to 127.0.0.1 (the only DNS
    trick: TLS, SNI, certificate and pin checks all run for real)."""
    real = socket.getaddrinfo

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(host, str) and (host == "pinned.test" or host.endswith(".pinned.test")):
            host = "127.0.0.1"
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
