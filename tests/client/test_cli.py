"""``pinserver client poll``: one refresh as JSON, errors as non-zero exits, the pins
file for other languages, and ``--watch`` stopping cleanly on SIGTERM. Real
processes, real HTTP; the CLI uses the real clock, so documents are dated now."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.factory import Deployment, fake_pin, pinset
from tests.support.mirror import Mirror

REPO_ROOT = Path(__file__).resolve().parents[2]


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def _publish(deployment: Deployment, **kwargs: object) -> bytes:
    now = _now()
    kwargs.setdefault("issued_at", now - timedelta(hours=1))
    kwargs.setdefault("expires", now + timedelta(days=30))
    return deployment.publish(**kwargs)


def _poll(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pinserver", "client", "poll", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO_ROOT,
        check=False,
    )


@pytest.fixture
def root_file(tmp_path: Path, deployment: Deployment) -> Path:
    path = tmp_path / "root-1.json"
    path.write_bytes(deployment.roots[0])
    return path


def test_poll_prints_json_and_writes_the_pins_file(
    deployment: Deployment, mirror: Mirror, root_file: Path, tmp_path: Path
) -> None:
    _publish(
        deployment,
        pinsets=[
            pinset("api.example.com", [fake_pin("a")], include_subdomains=True),
            pinset("old.example.com", expires=_now() - timedelta(days=1)),
        ],
    )
    mirror.serve_deployment(deployment)
    pins_file = tmp_path / "pins.json"
    args = ("--server", mirror.url, "--root", str(root_file), "--state", str(tmp_path / "s"))
    first = _poll(*args, "--pins-out", str(pins_file))
    assert first.returncode == 0, first.stderr
    result = json.loads(first.stdout)
    assert result["ok"]
    assert result["updated"]
    assert result["manifest_version"] == 1
    assert result["enforcing"]

    pins = json.loads(pins_file.read_text())
    assert pins["manifest_version"] == 1
    assert pins["enforcing"]
    assert [p["host"] for p in pins["pinsets"]] == ["api.example.com"]  # expired set left out
    assert pins["pinsets"][0]["include_subdomains"] is True

    second = _poll(*args)
    assert second.returncode == 0
    assert json.loads(second.stdout)["not_modified"] is True


def test_poll_rejection_exits_non_zero_with_the_error_code(
    deployment: Deployment, mirror: Mirror, root_file: Path, tmp_path: Path
) -> None:
    _publish(deployment)
    mirror.serve_deployment(deployment)
    args = ("--server", mirror.url, "--root", str(root_file), "--state", str(tmp_path / "s"))
    assert _poll(*args).returncode == 0
    mirror.files["/v1/manifest.json"] = Deployment().publish()  # foreign keys

    rejected = _poll(*args)
    assert rejected.returncode == 1
    document = json.loads(rejected.stdout)
    assert document["ok"] is False
    assert document["error"]["code"] == "signature_threshold"
    assert document["attack_signal"] is True
    assert document["manifest_version"] == 1  # the last good pins stay
    assert "error [signature_threshold]" in rejected.stderr

    text = _poll(*args, "--text")
    assert text.returncode == 1
    assert text.stdout == ""
    assert "error [signature_threshold]" in text.stderr


def test_poll_with_no_reachable_server_says_fetch_failed(root_file: Path, tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    result = _poll("--server", dead, "--root", str(root_file), "--state", str(tmp_path / "s"))
    assert result.returncode == 1
    assert json.loads(result.stdout)["error"]["code"] == "fetch_failed"


def test_watch_polls_and_stops_cleanly_on_sigterm(
    deployment: Deployment, mirror: Mirror, root_file: Path, tmp_path: Path
) -> None:
    _publish(deployment, poll_interval=60)
    mirror.serve_deployment(deployment)
    pins_file = tmp_path / "pins.json"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pinserver",
            "client",
            "poll",
            "--watch",
            "--server",
            mirror.url,
            "--root",
            str(root_file),
            "--state",
            str(tmp_path / "s"),
            "--pins-out",
            str(pins_file),
        ],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert json.loads(line)["manifest_version"] == 1
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, err
    assert out == ""  # no second poll within poll_interval
    assert json.loads(pins_file.read_text())["manifest_version"] == 1
