"""Fixtures for the admin CLI tests: run ``pinserver`` as a user would, real TLS chains."""

from __future__ import annotations

import json
import socket
import ssl
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import click.testing
import pytest
import trustme

from pinserver.cli import main


@dataclass(frozen=True)
class Run:
    """What a user sees: exit status, stdout, stderr."""

    exit_code: int
    stdout: str
    stderr: str


RunCli = Callable[..., Run]


@pytest.fixture
def run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> RunCli:
    """Run ``pinserver ARGS`` through the real entry point (``pinserver.cli.main``, the
    one place errors become messages and exit codes) in ``tmp_path``."""
    monkeypatch.chdir(tmp_path)

    def invoke(*args: str, env: Mapping[str, str] | None = None, input: str | None = None) -> Run:
        runner = click.testing.CliRunner()
        with runner.isolation(input=input, env=dict(env or {})) as (out, err, _mixed):
            try:
                main(list(args))
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else 1
            else:  # main always exits
                code = -1
        return Run(code, out.getvalue().decode(), err.getvalue().decode())

    return invoke


@dataclass(frozen=True)
class TlsChain:
    """A trustme root CA, an intermediate CA and a leaf for localhost/127.0.0.1."""

    ca: trustme.CA
    intermediate: trustme.CA
    leaf: trustme.LeafCert
    ca_file: Path
    chain_file: Path  # leaf then intermediate, as a server would send them


@pytest.fixture(scope="session")
def tls_chain(tmp_path_factory: pytest.TempPathFactory) -> TlsChain:
    ca = trustme.CA()
    intermediate = ca.create_child_ca()
    leaf = intermediate.issue_cert("localhost", "127.0.0.1")
    directory = tmp_path_factory.mktemp("tls")
    ca_file = directory / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    chain_file = directory / "chain.pem"
    chain_file.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    return TlsChain(ca, intermediate, leaf, ca_file, chain_file)


@pytest.fixture(scope="session")
def tls_server(tls_chain: TlsChain) -> Iterator[int]:
    """A TLS server on 127.0.0.1 presenting leaf + intermediate; yields its port."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls_chain.leaf.configure_cert(context)
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)  # so that the loop notices ``stop``
    port = listener.getsockname()[1]
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _addr = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(5)
            try:
                with context.wrap_socket(conn, server_side=True) as tls:
                    tls.recv(1)
            except (OSError, ssl.SSLError):
                conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield port
    stop.set()
    listener.close()
    thread.join(timeout=5)


def write_pins_file(path: Path, pins: Mapping[str, tuple[str, str]], **extra: object) -> Path:
    """A JSON pins file: per host a (primary, backup) pair; defaults left to the CLI."""
    pinsets = [
        {
            "host": host,
            "expires": "365d",
            "pins": [{"sha256": primary, "role": "primary"}, {"sha256": backup, "role": "backup"}],
        }
        for host, (primary, backup) in pins.items()
    ]
    path.write_text(json.dumps({"pinsets": pinsets, **extra}))
    return path
