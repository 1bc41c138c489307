"""``pinserver drill``: rehearse every runbook against a throwaway local deployment.

A recovery process that has never been run is a hope, not a process. The drill makes
throwaway keys, a root, a store served by ``pinserver serve`` on a free 127.0.0.1 port,
and a local TLS host with two throwaway CAs (each root -> intermediate -> leaf, made
with ``cryptography``), then runs the commands of docs/operations.md one after another:
first publication, emergency rotation after a CA switch, renew, publisher key
compromise, root key rotation, history and monitor, with a real
:class:`pinserver.client.PinClient` checking that clients keep working throughout.

Nothing leaves 127.0.0.1, and nothing here is trusted for anything real.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import click
import click.testing
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from pinserver.errors import PinserverError
from pinserver.pins import spki_sha256, spki_sha256_of_key

SERVER_STARTUP = 30.0


class DrillStepError(Exception):
    """A step did not do what the runbook says it does."""


# --- throwaway PKI --------------------------------------------------------------------------


@dataclass
class ThrowawayCa:
    """A self-signed root CA, an intermediate under it and a leaf for localhost."""

    name: str
    root_cert: x509.Certificate
    intermediate_cert: x509.Certificate
    leaf_cert: x509.Certificate
    leaf_key: ec.EllipticCurvePrivateKey

    @property
    def intermediate_pin(self) -> str:
        return spki_sha256(self.intermediate_cert)

    def root_pem(self) -> bytes:
        return self.root_cert.public_bytes(serialization.Encoding.PEM)

    def write_server_files(self, directory: Path) -> tuple[Path, Path]:
        """(chain file: leaf then intermediate, key file) for ``load_cert_chain``."""
        chain = directory / f"{self.name}-chain.pem"
        key = directory / f"{self.name}-leaf.key"
        chain.write_bytes(
            self.leaf_cert.public_bytes(serialization.Encoding.PEM)
            + self.intermediate_cert.public_bytes(serialization.Encoding.PEM)
        )
        key.write_bytes(
            self.leaf_key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        key.chmod(0o600)
        return chain, key


def _certificate(
    *,
    subject: str,
    issuer: x509.Name | None,
    public_key: ec.EllipticCurvePublicKey,
    signer: ec.EllipticCurvePrivateKey,
    ca: bool,
    now: datetime,
    days: int,
    issuer_key: ec.EllipticCurvePublicKey | None = None,
    san: Sequence[str] = (),
) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer or name)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key or public_key),
            critical=False,
        )
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    else:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(n) for n in san]), critical=False
        ).add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
    return builder.sign(signer, hashes.SHA256())


def make_throwaway_ca(name: str, *, now: datetime) -> ThrowawayCa:
    """Root (10 years) -> intermediate (5 years) -> leaf for ``localhost`` (1 year)."""
    root_key = ec.generate_private_key(ec.SECP256R1())
    inter_key = ec.generate_private_key(ec.SECP256R1())
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    root = _certificate(
        subject=f"pinserver drill {name} root CA",
        issuer=None,
        public_key=root_key.public_key(),
        signer=root_key,
        ca=True,
        now=now,
        days=3650,
    )
    intermediate = _certificate(
        subject=f"pinserver drill {name} intermediate CA",
        issuer=root.subject,
        public_key=inter_key.public_key(),
        signer=root_key,
        issuer_key=root_key.public_key(),
        ca=True,
        now=now,
        days=1825,
    )
    leaf = _certificate(
        subject="localhost",
        issuer=intermediate.subject,
        public_key=leaf_key.public_key(),
        signer=inter_key,
        issuer_key=inter_key.public_key(),
        ca=False,
        now=now,
        days=365,
        san=["localhost"],
    )
    return ThrowawayCa(name, root, intermediate, leaf, leaf_key)


class LiveHost:
    """An HTTPS server on 127.0.0.1 that presents one CA's chain and can switch to
    another's for all later handshakes (the SNI callback picks the context)."""

    def __init__(self, cas: Sequence[ThrowawayCa], directory: Path, *, current: str) -> None:
        self._contexts: dict[str, ssl.SSLContext] = {}
        for ca in cas:
            chain, key = ca.write_server_files(directory)
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(str(chain), str(key))
            self._contexts[ca.name] = context
        self.current = current
        front = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        chain, key = next(c for c in cas if c.name == current).write_server_files(directory)
        front.load_cert_chain(str(chain), str(key))
        front.sni_callback = self._pick

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                body = b"hello from the drill's pinned host\n"
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # handshakes that only fetch the chain drop the connection

        self._server = Server(("127.0.0.1", 0), Handler)
        self._server.socket = front.wrap_socket(
            self._server.socket, server_side=True, do_handshake_on_connect=False
        )
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def _pick(self, sock: ssl.SSLObject, _name: str | None, _context: ssl.SSLContext) -> None:
        sock.context = self._contexts[self.current]

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)


# --- the service ----------------------------------------------------------------------------


# The admin's own service settings, which the drill must never follow: with the real
# PINSERVER_DATABASE_URL in the environment, `init` would install the drill's throwaway
# root 1 in that database (for ever: roots are append-only) and `serve` would serve it.
_FOREIGN_SETTINGS: dict[str, str | None] = {
    "PINSERVER_DATABASE_URL": None,
    "PINSERVER_DATA": None,
    "PINSERVER_PUBLISH_TOKEN": None,
    "PINSERVER_ADMIN_TOKEN": None,
}


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def served(data_dir: Path, log_path: Path) -> Iterator[str]:
    """``pinserver serve`` on a free 127.0.0.1 port until the block ends."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    for name in _FOREIGN_SETTINGS:
        env.pop(name, None)
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pinserver",
                "serve",
                "--data",
                str(data_dir),
                "--bind",
                f"127.0.0.1:{port}",
                "--workers",
                "1",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + SERVER_STARTUP
            while True:
                if process.poll() is not None:
                    raise DrillStepError(
                        f"pinserver serve exited with {process.returncode}; see {log_path}"
                    )
                try:
                    if requests.get(url + "/healthz", timeout=2).status_code == 200:
                        break
                except requests.ConnectionError:
                    pass
                if time.monotonic() > deadline:
                    raise DrillStepError(f"pinserver serve did not answer in {SERVER_STARTUP:g} s")
                time.sleep(0.05)
            yield url
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
                try:
                    process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait(timeout=5)


# --- running commands and steps -------------------------------------------------------------


@dataclass
class StepResult:
    name: str
    passed: bool
    detail: str = ""


@dataclass
class Drill:
    """The state one drill builds up, step by step."""

    cli: click.Command
    workdir: Path
    echo: Callable[[str], None]
    url: str = ""
    results: list[StepResult] = field(default_factory=list)
    log: list[str] = field(default_factory=list)

    def path(self, name: str) -> str:
        return str(self.workdir / name)

    def key(self, name: str) -> str:
        return self.path(f"keys/{name}.key")

    def pub(self, name: str) -> str:
        return self.path(f"keys/{name}.pub")

    def run(self, *args: str, expect: int = 0) -> str:
        """``pinserver ARGS``; the step fails unless it exits with ``expect``."""
        command = "pinserver " + " ".join(shlex.quote(a) for a in args)
        self.log.append(command)
        result = click.testing.CliRunner().invoke(
            self.cli, list(args), catch_exceptions=True, env=dict(_FOREIGN_SETTINGS)
        )
        output = result.output
        if isinstance(result.exception, PinserverError):
            output += f"error [{result.exception.code}]: {result.exception.message}\n"
        elif result.exception is not None and not isinstance(result.exception, SystemExit):
            output += f"{type(result.exception).__name__}: {result.exception}\n"
        if result.exit_code != expect:
            raise DrillStepError(
                f"exited {result.exit_code}, expected {expect}:\n{output.rstrip()}"
            )
        return output

    def step(self, name: str, action: Callable[[], object]) -> None:
        number = len(self.results) + 1
        self.log = []
        try:
            action()
        except (DrillStepError, PinserverError, requests.RequestException, OSError) as e:
            detail = str(e) if not isinstance(e, PinserverError) else f"[{e.code}] {e.message}"
            self.results.append(StepResult(name, False, detail))
            self.echo(f"[{number:2}] FAIL  {name}")
            for command in self.log:
                self.echo(f"        $ {command}")
            for line in detail.splitlines():
                self.echo(f"        {line}")
            raise DrillStepError(name) from e
        self.results.append(StepResult(name, True))
        self.echo(f"[{number:2}] PASS  {name}")
        for command in self.log:
            self.echo(f"        $ {command}")


def _client_get(client: Any, port: int, ca_bundle: Path) -> int:
    with client.session() as session:
        response = session.get(f"https://localhost:{port}/", timeout=10, verify=str(ca_bundle))
        response.close()
        return int(response.status_code)


def _expect(condition: bool, message: str) -> None:
    if not condition:
        raise DrillStepError(message)


@dataclass(frozen=True)
class DrillOutcome:
    results: list[StepResult]
    total: int

    @property
    def passed(self) -> bool:
        """Every step ran and passed (a failed step stops the drill)."""
        return len(self.results) == self.total and all(r.passed for r in self.results)


def run_drill(cli: click.Command, workdir: Path, echo: Callable[[str], None]) -> DrillOutcome:
    """Every runbook, in order; stops at the first failed step (later steps build on it).
    A failed step is in the outcome, not raised."""
    from pinserver.client import PinClient  # noqa: PLC0415 (client pulls in requests adapters)

    d = Drill(cli, workdir, echo)
    workdir.mkdir(parents=True, exist_ok=True)
    now = datetime.now(UTC)
    old_ca, new_ca = make_throwaway_ca("old", now=now), make_throwaway_ca("new", now=now)
    ca_bundle = workdir / "ca-bundle.pem"
    ca_bundle.write_bytes(old_ca.root_pem() + new_ca.root_pem())
    reserve = spki_sha256_of_key(ec.generate_private_key(ec.SECP256R1()).public_key())
    host = LiveHost([old_ca, new_ca], workdir, current="old")
    roots = ["root-a", "root-b", "root-c"]
    state = workdir / "client-state"
    live = ["--cafile", str(ca_bundle), "--connect-to", f"localhost=127.0.0.1:{host.port}"]

    def keys() -> None:
        for name in [*roots, "publisher"]:
            d.run("keygen", name, "--dir", d.path("keys"), "--no-passphrase")

    def root_doc(
        version: int, holders: Sequence[str], publisher: str, signers: Sequence[str]
    ) -> str:
        out = d.path(f"root-{version}.json")
        args = ["root", "new", "--version", str(version), "--root-threshold", "2"]
        for name in holders:
            args += ["--root-key", d.pub(name)]
        d.run(
            *args,
            "--publisher-key",
            d.pub(publisher),
            "--publisher-threshold",
            "1",
            "--expires",
            "365d",
            "-o",
            out,
        )
        for name in signers:
            d.run("sign", out, "--key", d.key(name))
        return out

    def first_manifest() -> None:
        pins = workdir / "pins.toml"
        pins.write_text(
            'poll_interval = 300\n[[pinsets]]\nhost = "localhost"\nexpires = "365d"\n'
            f'pins = [{{sha256 = "{old_ca.intermediate_pin}", role = "primary"}},\n'
            f'        {{sha256 = "{new_ca.intermediate_pin}", role = "backup"}}]\n'
        )
        d.run("manifest", "new", str(pins), "--server", d.url, "-o", d.path("manifest-1.json"))
        d.run("sign", d.path("manifest-1.json"), "--key", d.key("publisher"))
        d.run(
            "lint", d.path("manifest-1.json"), "--root", d.path("root-1.json"), "--connect", *live
        )
        d.run("publish", d.path("manifest-1.json"), "--server", d.url)

    client_box: list[Any] = []

    def client_connects() -> None:
        client = PinClient(d.url, trusted_root=d.path("root-1.json"), state_dir=state)
        client_box.append(client)
        client.refresh()
        _expect(_client_get(client, host.port, ca_bundle) == 200, "the client was refused")

    def ca_switch() -> None:
        host.current = "new"
        _expect(
            _client_get(client_box[0], host.port, ca_bundle) == 200,
            "the client was refused after the CA switch although the backup pin was placed",
        )

    def rotate() -> list[str]:
        root1 = d.path("root-1.json")
        return ["rotate", "--server", d.url, "--root", root1, "--host", "localhost", "--yes", *live]

    def bad_rotation_refused() -> None:
        d.run(
            *rotate(),
            "--key",
            d.key("publisher"),
            "--remove-pin",
            new_ca.intermediate_pin,
            "--add-pin",
            f"{reserve}:backup",
            expect=1,
        )

    def rotation() -> None:
        d.run(
            *rotate(),
            "--key",
            d.key("publisher"),
            "--add-pin",
            f"{new_ca.intermediate_pin}:primary",
            "--remove-pin",
            old_ca.intermediate_pin,
            "--add-pin",
            f"{reserve}:backup",
        )
        client = client_box[0]
        _expect(client.refresh().manifest_version == 2, "the client did not take version 2")
        _expect(_client_get(client, host.port, ca_bundle) == 200, "refused after rotation")

    def renew() -> list[str]:
        return ["renew", "--server", d.url, "--root", d.path("root-1.json"), "--expires", "30d"]

    def renewal() -> None:
        idle = d.run(*renew(), "--key", d.key("publisher"), "--if-expiring-within", "7d")
        _expect("nothing to do" in idle, "renew --if-expiring-within 7d did not hold back")
        d.run(*renew(), "--key", d.key("publisher"))

    def publisher_compromise() -> None:
        d.run("keygen", "publisher-2", "--dir", d.path("keys"), "--no-passphrase")
        root2 = root_doc(2, roots, "publisher-2", ["root-a", "root-c"])
        d.run("verify", root2, "--root", d.path("root-1.json"))
        d.run("publish", root2, "--server", d.url)
        d.run(*renew(), "--key", d.key("publisher-2"))
        d.run(*renew(), "--key", d.key("publisher"), expect=1)  # the stolen key: refused
        result = client_box[0].refresh()
        _expect(result.root_version == 2, "the client did not walk to root 2")

    def root_rotation() -> None:
        new_roots = ["root-d", "root-e", "root-f"]
        for name in new_roots:
            d.run("keygen", name, "--dir", d.path("keys"), "--no-passphrase")
        root3 = root_doc(3, new_roots, "publisher-2", ["root-a", "root-b"])
        d.run("publish", root3, "--server", d.url, expect=1)  # old holders alone: refused
        for name in ("root-d", "root-e"):
            d.run("sign", root3, "--key", d.key(name))
        d.run("publish", root3, "--server", d.url)
        d.run(*renew(), "--key", d.key("publisher-2"))
        result = client_box[0].refresh()
        _expect(result.root_version == 3, "the client did not walk to root 3")
        _expect(_client_get(client_box[0], host.port, ca_bundle) == 200, "refused under root 3")

    def audit() -> None:
        d.run("history", "--server", d.url, "--root", d.path("root-1.json"))
        d.run("monitor", "--server", d.url, "--root", d.path("root-1.json"), *live)

    stack = contextlib.ExitStack()

    def start_service() -> None:
        d.run("init", "--root", d.path("root-1.json"), "--data", d.path("data"))
        d.url = stack.enter_context(served(workdir / "data", workdir / "server.log"))
        echo(f"     service on {d.url}; TLS host on 127.0.0.1:{host.port}; work in {workdir}")

    steps: list[tuple[str, Callable[[], object]]] = [
        ("throwaway keys: 3 root holders (2-of-3) and a publisher", keys),
        (
            "root 1: `root new`, signed by 2 of the 3 holders",
            lambda: root_doc(1, roots, "publisher", ["root-a", "root-b"]),
        ),
        ("`pinserver init` a store and `pinserver serve` it on 127.0.0.1", start_service),
        ("first manifest: old CA primary, new CA backup; lint --connect; publish", first_manifest),
        ("a client refreshes and connects to the pinned host", client_connects),
        ("runbook 1: the host switches CA; the backup pin keeps clients up", ca_switch),
        ("runbook 1: rotate refuses pins the live host would not match", bad_rotation_refused),
        ("runbook 1: rotate to the new CA's intermediate; clients follow", rotation),
        ("renew: a no-op while the window is long, then a fresh window", renewal),
        ("runbook 2: publisher key compromise: root 2 names a new publisher", publisher_compromise),
        ("runbook 3: root key rotation, 2 old + 2 new holders sign root 3", root_rotation),
        ("audit: history verifies everything; monitor is green", audit),
    ]
    try:
        for name, action in steps:
            d.step(name, action)
    except DrillStepError:
        pass
    finally:
        for client in client_box:
            client.close()
        stack.close()
        host.close()
    return DrillOutcome(d.results, total=len(steps))
