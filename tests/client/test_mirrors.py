"""Mirror failover: network failures move on to the next mirror; a rejected document
never does (it is an attack signal, not an outage)."""

from __future__ import annotations

import logging
import socket
from pathlib import Path

import pytest

from pinserver.client.state import STATE_FILE
from pinserver.errors import FetchError, SignatureError
from tests.client.conftest import MakeClient
from tests.factory import Deployment
from tests.support.mirror import ENDLESS, Answer, Mirror, Status

MANIFEST = "/v1/manifest.json"


def _refused_url() -> str:
    """A 127.0.0.1 port with nothing listening (connection refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.fixture
def second_mirror() -> Mirror:
    with Mirror() as running:
        yield running


def test_connection_refused_fails_over(
    deployment: Deployment, second_mirror: Mirror, make_client: MakeClient
) -> None:
    deployment.publish()
    second_mirror.serve_deployment(deployment)
    client = make_client(base_url=[_refused_url(), second_mirror.url])
    result = client.refresh()
    assert result.updated
    assert result.mirror == second_mirror.url


def test_5xx_fails_over_and_the_walk_follows(
    deployment: Deployment, mirror: Mirror, second_mirror: Mirror, make_client: MakeClient
) -> None:
    deployment.publish()
    deployment.rotate_publisher()
    deployment.publish()
    mirror.files[MANIFEST] = Status(503)
    second_mirror.serve_deployment(deployment)
    client = make_client(base_url=[mirror.url, second_mirror.url])
    result = client.refresh()
    assert (result.root_version, result.manifest_version) == (2, 2)
    assert result.mirror == second_mirror.url
    assert [s.path for s in mirror.seen] == [MANIFEST]


def test_rejected_document_is_not_retried_elsewhere(
    *,
    deployment: Deployment,
    mirror: Mirror,
    second_mirror: Mirror,
    make_client: MakeClient,
    state_dir: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    deployment.publish()
    second_mirror.serve_deployment(deployment)
    forged = Deployment().publish()  # valid envelope, wrong keys
    mirror.files[MANIFEST] = forged
    client = make_client(base_url=[mirror.url, second_mirror.url])
    with caplog.at_level(logging.ERROR), pytest.raises(SignatureError):
        client.refresh()
    assert second_mirror.seen == []
    assert "attack signal" in caplog.text
    assert not (state_dir / STATE_FILE).exists()


@pytest.mark.parametrize("failure", [Status(404), Status(500), ENDLESS])
def test_any_fetch_failure_fails_over(
    failure: Answer,
    deployment: Deployment,
    mirror: Mirror,
    second_mirror: Mirror,
    make_client: MakeClient,
) -> None:
    """Delivery failures (a 404, a 5xx, an oversized body) move on to the next mirror:
    what it serves is verified all the same."""
    deployment.publish()
    mirror.files[MANIFEST] = failure
    second_mirror.serve_deployment(deployment)
    client = make_client(base_url=[mirror.url, second_mirror.url])
    assert client.refresh().mirror == second_mirror.url


def test_root_walk_stops_at_a_404(
    deployment: Deployment, mirror: Mirror, second_mirror: Mirror, make_client: MakeClient
) -> None:
    deployment.publish()
    deployment.rotate_publisher()
    deployment.publish()
    mirror.serve_deployment(deployment)
    second_mirror.serve_deployment(deployment)
    client = make_client(base_url=[mirror.url, second_mirror.url])
    assert client.refresh().root_version == 2
    assert second_mirror.seen == []  # "no root 3" came from the first mirror; no retry


def test_every_mirror_down_keeps_the_last_good_state(
    deployment: Deployment, mirror: Mirror, make_client: MakeClient, state_dir: Path
) -> None:
    deployment.publish()
    mirror.serve_deployment(deployment)
    make_client().refresh()
    before = (state_dir / STATE_FILE).read_bytes()
    client = make_client(base_url=[_refused_url(), _refused_url()])
    with pytest.raises(FetchError, match="every mirror failed"):
        client.refresh()
    assert (state_dir / STATE_FILE).read_bytes() == before
    assert client.manifest_version == 1
    assert client.pins_for("updates.example.com") is not None
