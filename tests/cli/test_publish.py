"""manifest new --server and publish against a real gunicorn on 127.0.0.1."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pinserver.envelope import Envelope
from pinserver.keys import PrivateKey, write_key_pair
from pinserver.store import open_store
from tests.cli.conftest import RunCli, write_pins_file
from tests.factory import Deployment, fake_pin, root_document, root_envelope
from tests.support.gunicorn import init_store, running_server

TOKEN = "publish-token-for-tests"


@dataclass(frozen=True)
class Service:
    base_url: str
    data_dir: Path
    files: Path  # root-1.json, root-2.json, keys/publisher.key
    deployment: Deployment


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """One server for the module (publish token required), root 1 installed."""
    files = tmp_path_factory.mktemp("admin")
    deployment = Deployment()
    (files / "keys").mkdir()
    write_key_pair(files / "keys", "publisher", deployment.publisher_keys[0], None)
    write_key_pair(files / "keys", "root", deployment.root_keys[0], None)
    (files / "root-1.json").write_bytes(deployment.roots[0])
    data_dir = tmp_path_factory.mktemp("data")
    init_store(data_dir, deployment)
    with running_server(data_dir, workers=1, env={"PINSERVER_PUBLISH_TOKEN": TOKEN}) as url:
        yield Service(url, data_dir, files, deployment)


@pytest.fixture
def admin(run: RunCli, service: Service) -> RunCli:
    """``pinserver`` with the admin's files at hand and the publish token in the env."""

    def invoke(*args: str, env: dict[str, str] | None = None) -> object:
        return run(*args, env={"PINSERVER_PUBLISH_TOKEN": TOKEN, **(env or {})})

    for name in ("root-1.json", "keys"):
        Path(name).symlink_to(service.files / name)
    write_pins_file(Path("pins.json"), {"api.example.com": (fake_pin("p"), fake_pin("b"))})
    return invoke  # type: ignore[return-value]


def new_signed_manifest(admin: RunCli, service: Service, output: str, *extra: str) -> None:
    made = admin("manifest", "new", "pins.json", "--server", service.base_url, "-o", output, *extra)
    assert made.exit_code == 0, made.stderr
    signed = admin("sign", output, "--key", "keys/publisher.key")
    assert signed.exit_code == 0, signed.stderr


def test_manifest_new_follows_the_server_and_publish_uploads(
    admin: RunCli, service: Service
) -> None:
    new_signed_manifest(admin, service, "a.json")
    first = Envelope.from_bytes(Path("a.json").read_bytes())
    published = admin("publish", "a.json", "--server", service.base_url, "--json")
    assert published.exit_code == 0, published.stderr
    answer = json.loads(published.stdout)["answer"]
    assert answer["payload_sha256"] == first.payload_sha256
    version = answer["version"]

    new_signed_manifest(admin, service, "b.json")
    made = admin("lint", "b.json", "--json")
    assert made.exit_code == 0
    text = admin("publish", "b.json", "--server", service.base_url)
    assert text.exit_code == 0, text.stderr
    assert f"published manifest version {version + 1}" in text.stdout
    stored = open_store(service.data_dir)
    try:
        latest = stored.latest_manifest()
    finally:
        stored.close()
    assert latest is not None
    assert latest.version == version + 1
    assert latest.reason is None

    # The same file again is not the next version: the server's 409, with a hint.
    again = admin("publish", "a.json", "--server", service.base_url)
    assert again.exit_code == 1
    assert "error [version_conflict]: server refused (409)" in again.stderr
    assert "what to do: rebuild it on the latest version" in again.stderr


def test_publish_maps_an_unsigned_manifest_to_the_threshold_error(
    admin: RunCli, service: Service
) -> None:
    made = admin("manifest", "new", "pins.json", "--server", service.base_url, "-o", "u.json")
    assert made.exit_code == 0, made.stderr
    result = admin("publish", "u.json", "--server", service.base_url)
    assert result.exit_code == 1
    assert "error [signature_threshold]: server refused (403)" in result.stderr
    assert "what to do: collect more signatures" in result.stderr


def test_publish_needs_the_token_the_server_asks_for(admin: RunCli, service: Service) -> None:
    new_signed_manifest(admin, service, "t.json")
    result = admin("publish", "t.json", "--server", service.base_url, "--token-env", "NO_SUCH_VAR")
    assert result.exit_code == 1
    assert "error [unauthorized]: server refused (401)" in result.stderr
    assert "PINSERVER_PUBLISH_TOKEN" in result.stderr


def test_lint_errors_refuse_publication_unless_forced_with_a_reason(
    admin: RunCli, service: Service
) -> None:
    # Root 1 expires in 365 days: a manifest for 400 days outlives it.
    new_signed_manifest(admin, service, "long.json", "--expires", "400d")
    refused = admin("publish", "long.json", "--server", service.base_url)
    assert refused.exit_code == 1
    assert "error: [expires_after_root]" in refused.stdout
    assert "error [lint_failed]" in refused.stderr
    assert "--force --reason" in refused.stderr

    no_reason = admin("publish", "long.json", "--server", service.base_url, "--force")
    assert no_reason.exit_code == 2
    assert "--force needs --reason" in no_reason.stderr

    reason = "root renewal signed tomorrow; ticket OPS-1234 – approved"
    forced = admin(
        "publish", "long.json", "--server", service.base_url, "--force", "--reason", reason
    )
    assert forced.exit_code == 0, forced.stderr
    stored = open_store(service.data_dir)
    try:
        latest = stored.latest_manifest()
    finally:
        stored.close()
    assert latest is not None
    assert (
        latest.payload_sha256 == Envelope.from_bytes(Path("long.json").read_bytes()).payload_sha256
    )
    assert latest.reason == reason


def test_publish_a_root_rotation(admin: RunCli, service: Service) -> None:
    # Root 2 keeps the keys (same roles), signed by root 1's root key: a valid rotation.
    deployment = service.deployment
    root2 = root_document(2, deployment.root_keys, deployment.publisher_keys)
    Path("root-2.json").write_bytes(root_envelope(root2, []))
    signed = admin("sign", "root-2.json", "--key", "keys/root.key", "--root", "root-1.json")
    assert signed.exit_code == 0, signed.stderr
    assert admin("verify", "root-2.json", "--root", "root-1.json").exit_code == 0
    published = admin("publish", "root-2.json", "--server", service.base_url)
    assert published.exit_code == 0, published.stderr
    assert "published root version 2" in published.stdout
    # manifest new --server now names root 2.
    made = admin("manifest", "new", "pins.json", "--server", service.base_url, "-o", "r2.json",
                 "--json")  # fmt: skip
    assert made.exit_code == 0, made.stderr
    assert json.loads(made.stdout)["root_version"] == 2
    again = admin("publish", "root-2.json", "--server", service.base_url)
    assert again.exit_code == 1
    assert "server refused (409)" in again.stderr


def test_publish_to_nothing_listening_says_so(admin: RunCli) -> None:
    from tests.support.gunicorn import free_port

    Path("x.json").write_bytes(
        root_envelope(root_document(2, [PrivateKey.generate()], [PrivateKey.generate()]), [])
    )
    result = admin("publish", "x.json", "--server", f"http://127.0.0.1:{free_port()}")
    assert result.exit_code == 1
    assert "error [fetch_failed]: cannot reach" in result.stderr
    assert "what to do: check --server" in result.stderr
    assert admin("publish", "x.json", "--server", "ftp://example.com").exit_code == 2
