"""Fixtures for the operations tests: the ``pinserver`` command run as a user runs it,
a real gunicorn service, and a real TLS host whose certificate chain can be switched
from one CA to another while it runs (a CA migration, or an emergency)."""

from __future__ import annotations

import json
import ssl
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import click.testing
import pytest

from pinserver.cli import main
from tests.support.gunicorn import running_server
from tests.support.tls_server import Pki, TlsServer


@dataclass(frozen=True)
class Run:
    """What a user sees: exit status, stdout, stderr."""

    exit_code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


RunCli = Callable[..., Run]


def invoke(*args: str, env: Mapping[str, str] | None = None, input: str | None = None) -> Run:
    """``pinserver ARGS`` through the real entry point (errors become messages and exit
    codes in ``pinserver.cli.main``, as for a user)."""
    runner = click.testing.CliRunner()
    with runner.isolation(input=input, env=dict(env or {})) as (out, err, _mixed):
        try:
            main(list(args))
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
        else:  # main always exits
            code = -1
    return Run(code, out.getvalue().decode(), err.getvalue().decode())


@pytest.fixture
def run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> RunCli:
    monkeypatch.chdir(tmp_path)
    return invoke


def ok(result: Run) -> Run:
    """Assert a command succeeded, showing what it said when it did not."""
    assert result.exit_code == 0, result.output
    return result


# --- a TLS host that can change its certificate chain --------------------------------------


@dataclass
class SwitchableHost:
    """A real HTTPS server on 127.0.0.1 serving one Pki's leaf + intermediate; ``serve``
    switches every later handshake to another Pki's chain (the SNI callback picks the
    context per connection), as a load balancer does when its certificate is replaced."""

    pkis: Mapping[str, Pki]
    directory: Path
    current: str
    server: TlsServer | None = None
    _contexts: dict[str, ssl.SSLContext] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, pki in self.pkis.items():
            self._contexts[name] = pki.server_context(self.directory)
        front = self.pkis[self.current].server_context(self.directory)

        def pick(sock: ssl.SSLObject, _name: str | None, _ctx: ssl.SSLContext) -> None:
            sock.context = self._contexts[self.current]

        front.sni_callback = pick  # type: ignore[assignment]
        self.server = TlsServer(front).start()

    def serve(self, name: str) -> None:
        self.current = name

    @property
    def port(self) -> int:
        assert self.server is not None
        return self.server.port

    @property
    def url(self) -> str:
        return f"https://localhost:{self.port}/"

    @property
    def connect_to(self) -> str:
        return f"localhost=127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()


@dataclass
class TwoCas:
    """The CA a host uses now (``old``) and the one it moves to (``new``), each with an
    intermediate, and a CA bundle trusting both (as a client's system store would)."""

    old: Pki
    new: Pki
    ca_bundle: Path

    @property
    def pkis(self) -> dict[str, Pki]:
        return {"old": self.old, "new": self.new}


@pytest.fixture(scope="session")
def two_cas(tmp_path_factory: pytest.TempPathFactory) -> TwoCas:
    directory = tmp_path_factory.mktemp("cas")
    old, new = Pki.create(directory), Pki.create(directory)
    bundle = directory / "ca-bundle.pem"
    bundle.write_bytes(old.root.cert_pem.bytes() + new.root.cert_pem.bytes())
    return TwoCas(old, new, bundle)


@pytest.fixture
def live_host(two_cas: TwoCas, tmp_path: Path) -> Iterator[SwitchableHost]:
    host = SwitchableHost(two_cas.pkis, tmp_path, "old")
    yield host
    host.stop()


# --- a deployment made with the CLI --------------------------------------------------------


@dataclass
class Deployment:
    """Keys, root 1, a store and a running service, all made with ``pinserver`` commands.

    Root role ``root_threshold``-of-``len(root_keys)``; one publisher key. Keys are
    unencrypted except ``publisher`` (passphrase in env ``PUBLISH_PASS``), so that
    every test also exercises --passphrase-env on the key that signs most.
    """

    directory: Path
    root_keys: list[str]
    root_threshold: int
    publisher: str = "publisher"
    url: str = ""
    env: dict[str, str] = field(default_factory=lambda: {"PUBLISH_PASS": "correct horse"})

    def path(self, name: str) -> str:
        return str(self.directory / name)

    def key(self, name: str) -> str:
        return self.path(f"keys/{name}.key")

    def pub(self, name: str) -> str:
        return self.path(f"keys/{name}.pub")

    @property
    def root1(self) -> str:
        return self.path("root-1.json")

    def publisher_args(self, name: str | None = None) -> list[str]:
        name = name or self.publisher
        return ["--key", self.key(name), "--passphrase-env", "PUBLISH_PASS"]


def keygen(directory: Path, name: str, *, passphrase: bool = False) -> None:
    keys = str(directory / "keys")
    if passphrase:
        ok(
            invoke(
                "keygen",
                name,
                "--dir",
                keys,
                "--passphrase-env",
                "PUBLISH_PASS",
                env={"PUBLISH_PASS": "correct horse"},
            )
        )
    else:
        ok(invoke("keygen", name, "--dir", keys, "--no-passphrase"))


def make_root(
    d: Deployment,
    output: str,
    *,
    version: int,
    root_keys: Sequence[str],
    threshold: int,
    publisher: str,
    signers: Sequence[str],
) -> str:
    """``root new`` then ``sign`` by each holder in ``signers``, one after another."""
    args = ["root", "new", "--version", str(version), "--root-threshold", str(threshold)]
    for name in root_keys:
        args += ["--root-key", d.pub(name)]
    args += ["--publisher-key", d.pub(publisher), "--publisher-threshold", "1"]
    args += ["--expires", "365d", "-o", output]
    ok(invoke(*args))
    for name in signers:
        ok(invoke("sign", output, "--key", d.key(name)))
    return output


def write_pins(path: Path, host_pins: Mapping[str, Sequence[tuple[str, str]]]) -> Path:
    """A JSON pins file: per host a list of (sha256, role)."""
    pinsets = [
        {
            "host": host,
            "expires": "365d",
            "pins": [{"sha256": sha, "role": role} for sha, role in pins],
        }
        for host, pins in host_pins.items()
    ]
    path.write_text(json.dumps({"pinsets": pinsets, "poll_interval": 300}))
    return path


def publish_first(d: Deployment, host_pins: Mapping[str, Sequence[tuple[str, str]]]) -> None:
    pins = write_pins(d.directory / "pins.json", host_pins)
    manifest = d.path("manifest-1.json")
    ok(invoke("manifest", "new", str(pins), "--server", d.url, "-o", manifest))
    ok(invoke("sign", manifest, *d.publisher_args(), env=d.env))
    ok(invoke("publish", manifest, "--server", d.url))


MakeDeployment = Callable[..., Iterator[Deployment]]


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[Deployment]:
    """Three root keys (2-of-3), an encrypted publisher key, root 1 signed by two
    holders, ``pinserver init``, and the service under gunicorn."""
    d = Deployment(tmp_path, ["root-a", "root-b", "root-c"], 2)
    for name in d.root_keys:
        keygen(tmp_path, name)
    keygen(tmp_path, d.publisher, passphrase=True)
    make_root(
        d,
        d.root1,
        version=1,
        root_keys=d.root_keys,
        threshold=2,
        publisher=d.publisher,
        signers=["root-a", "root-b"],
    )
    data = tmp_path / "data"
    ok(invoke("init", "--root", d.root1, "--data", str(data)))
    with running_server(data, workers=1) as url:
        d.url = url
        yield d
