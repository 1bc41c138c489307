"""Findings of an adversarial review of the client, each pinned by a test.

An attacker on the network path or a malicious mirror controls every byte of an
HTTP answer (status line, headers, redirects, bodies of any status); a co-resident
process can write the state directory; an application developer may send plain
http to a pinned host. Each test failed before the fix it names.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import pytest
import requests

from pinserver.client.session import PinChecker
from pinserver.client.state import STATE_FILE, StoredState, decode_state, encode_state
from pinserver.envelope import MANIFEST_TYPE, Envelope, sign
from pinserver.errors import FetchError, PinMismatchError
from pinserver.keys import PrivateKey
from tests.client.conftest import Clock, MakeClient
from tests.factory import NOW, Deployment, fake_pin, pinset
from tests.support.mirror import Mirror
from tests.support.tls_server import Pki, TlsServer

MANIFEST = "/v1/manifest.json"
BIG = 64 * 1024 * 1024  # far more than loopback socket buffers hold


@dataclass
class _Seen:
    method: str
    path: str
    headers: dict[str, str]


Handler = Callable[["_Seen", socket.socket, "RawServer"], None]


@dataclass
class RawServer:
    """HTTP on a bare socket, so that a test can send what no HTTP library would."""

    routes: dict[str, Handler]
    seen: list[_Seen] = field(default_factory=list)
    finished_big_body: threading.Event = field(default_factory=threading.Event)
    stop: threading.Event = field(default_factory=threading.Event)
    _listener: socket.socket | None = None

    @property
    def url(self) -> str:
        assert self._listener is not None
        return f"http://127.0.0.1:{self._listener.getsockname()[1]}"

    def __enter__(self) -> RawServer:
        self._listener = socket.create_server(("127.0.0.1", 0))
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        assert self._listener is not None
        self._listener.close()

    def _accept(self) -> None:
        assert self._listener is not None
        while not self.stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                data += chunk
            head, _, rest = data.partition(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, path, _ = lines[0].split(" ", 2)
            headers = dict(line.split(": ", 1) for line in lines[1:])
            length = int(headers.get("Content-Length", "0"))
            while len(rest) < length:
                rest += conn.recv(65536)
            seen = _Seen(method, path, headers)
            self.seen.append(seen)
            handler = self.routes.get(path)
            try:
                if handler is None:
                    conn.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
                else:
                    handler(seen, conn, self)
            except OSError:
                pass  # the client hung up

    def big_body(self, conn: socket.socket) -> None:
        """Send BIG bytes of body; flags when every byte went out."""
        chunk = b" " * 65536
        for _ in range(BIG // len(chunk)):
            conn.sendall(chunk)
        self.finished_big_body.set()


@pytest.fixture
def raw_routes() -> dict[str, Handler]:
    return {}


@pytest.fixture
def raw(raw_routes: dict[str, Handler]) -> Iterator[RawServer]:
    with RawServer(raw_routes) as server:
        yield server


def _ok(body: bytes) -> Handler:
    def handle(seen: _Seen, conn: socket.socket, server: RawServer) -> None:
        conn.sendall(
            b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body
        )

    return handle


# --- fetcher ----------------------------------------------------------------------------


def test_a_redirect_body_is_never_read(
    deployment: Deployment, raw: RawServer, make_client: MakeClient
) -> None:
    """requests reads (and gunzips) the whole body of every 3xx before following it:
    no size cap, no deadline. The client now follows redirects itself and never reads
    a 3xx body."""
    deployment.publish()

    def redirect(seen: _Seen, conn: socket.socket, server: RawServer) -> None:
        conn.sendall(b"HTTP/1.1 302 Found\r\nLocation: /real\r\nConnection: close\r\n\r\n")
        server.big_body(conn)

    raw.routes[MANIFEST] = redirect
    raw.routes["/real"] = _ok(deployment.manifests[-1])
    client = make_client(base_url=raw.url)
    assert client.refresh().manifest_version == 1
    assert not raw.finished_big_body.is_set()


def test_a_redirect_loop_ends_in_a_fetch_error(raw: RawServer, make_client: MakeClient) -> None:
    def loop(seen: _Seen, conn: socket.socket, server: RawServer) -> None:
        conn.sendall(b"HTTP/1.1 302 Found\r\nLocation: /v1/manifest.json\r\n\r\n")

    raw.routes[MANIFEST] = loop
    with pytest.raises(FetchError, match="redirects"):
        make_client(base_url=raw.url).refresh()
    assert len(raw.seen) <= 6


def test_a_redirect_to_another_scheme_is_refused(raw: RawServer, make_client: MakeClient) -> None:
    def to_file(seen: _Seen, conn: socket.socket, server: RawServer) -> None:
        conn.sendall(b"HTTP/1.1 302 Found\r\nLocation: file:///etc/passwd\r\n\r\n")

    raw.routes[MANIFEST] = to_file
    with pytest.raises(FetchError, match="redirect"):
        make_client(base_url=raw.url).refresh()


def test_trickled_headers_end_at_the_deadline(raw: RawServer, make_client: MakeClient) -> None:
    """requests' read timeout bounds each read, not the whole answer: a status line
    and headers trickled a byte at a time used to hold a refresh for as long as the
    mirror liked (here 8 s, then a plain connection error). The deadline (1 s here)
    now covers the whole exchange, headers and redirects included."""

    def trickle(seen: _Seen, conn: socket.socket, server: RawServer) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nX-Slow: ")
        for _ in range(160):
            if server.stop.wait(0.05):
                return
            conn.sendall(b"a")

    raw.routes[MANIFEST] = trickle
    client = make_client(base_url=raw.url, timeout=1.0)
    with pytest.raises(FetchError) as raised:
        client.refresh()
    assert raised.value.code == "fetch_timeout"


def test_a_304_to_an_unconditional_request_is_not_an_answer(
    deployment: Deployment, raw: RawServer, mirror: Mirror, make_client: MakeClient
) -> None:
    """A client with no manifest sends no If-None-Match; a mirror answering 304 anyway
    used to leave it with no pins and no failover. It is now a delivery failure, so
    the next mirror is asked."""
    deployment.publish()
    mirror.serve_deployment(deployment)

    def not_modified(seen: _Seen, conn: socket.socket, server: RawServer) -> None:
        conn.sendall(b'HTTP/1.1 304 Not Modified\r\nETag: "x"\r\n\r\n')

    raw.routes[MANIFEST] = not_modified
    client = make_client(base_url=[raw.url, mirror.url])
    result = client.refresh()
    assert (result.manifest_version, result.mirror) == (1, mirror.url)
    assert "If-None-Match" not in raw.seen[0].headers


# --- state directory --------------------------------------------------------------------


def _rewrite_state(state_dir: Path, **changes: object) -> None:
    path = state_dir / STATE_FILE
    stored = decode_state(path.read_bytes())
    fields = {
        "roots": stored.roots,
        "manifest": stored.manifest,
        "etags": stored.etags,
        "time_floor": stored.time_floor,
        **changes,
    }
    path.write_bytes(encode_state(StoredState(**fields)))  # type: ignore[arg-type]


def test_a_time_floor_planted_in_the_future_is_clamped_on_load(
    deployment: Deployment, mirror: Mirror, make_client: MakeClient, state_dir: Path
) -> None:
    """The checksum is no signature: a process that can write state_dir could set the
    time floor ten years ahead. Every manifest then looked expired, for good (the
    floor only rises): pins off under ca-only and every update refused. The floor
    can never legitimately pass the held manifest's issued_at, so it is clamped to it."""
    deployment.publish(pinsets=[pinset("api.example.com")])
    mirror.serve_deployment(deployment)
    make_client().refresh()
    _rewrite_state(state_dir, time_floor=NOW + timedelta(days=3650))

    restarted = make_client()
    assert restarted.now() == NOW
    assert restarted.pins_for("api.example.com") is not None
    deployment.publish(pinsets=[pinset("api.example.com")])
    mirror.serve_deployment(deployment)
    assert restarted.refresh().manifest_version == 2


def test_a_time_floor_without_a_manifest_is_dropped(
    deployment: Deployment, mirror: Mirror, make_client: MakeClient, state_dir: Path
) -> None:
    deployment.publish()
    mirror.serve_deployment(deployment)
    make_client().refresh()
    _rewrite_state(state_dir, manifest=None, etags={}, time_floor=NOW + timedelta(days=3650))
    restarted = make_client()
    assert restarted.now() == NOW
    assert restarted.refresh().manifest_version == 1


def test_the_same_payload_resigned_after_a_publisher_rotation_reloads(
    deployment: Deployment, mirror: Mirror, make_client: MakeClient, state_dir: Path
) -> None:
    """Manifest 1 re-signed by the new publisher key only: the client walks to root 2
    and accepts it as the same manifest. It used to keep the old envelope, whose
    signatures do not meet root 2's publisher role, next to root 2: a state file that
    the next start-up threw away."""
    deployment.publish()
    mirror.serve_deployment(deployment)
    make_client().refresh()

    old_envelope = Envelope.from_bytes(deployment.manifests[0])
    new_key = PrivateKey.generate()
    deployment.rotate_publisher([new_key])
    resigned = sign(Envelope(MANIFEST_TYPE, old_envelope.payload), new_key).to_bytes()
    mirror.serve_deployment(deployment)
    mirror.files[MANIFEST] = resigned

    client = make_client()
    result = client.refresh()
    assert (result.root_version, result.manifest_version) == (2, 1)
    restarted = make_client()
    assert restarted.load_problem is None
    assert (restarted.root_version, restarted.manifest_version) == (2, 1)


# --- expiry -----------------------------------------------------------------------------


def test_the_expiry_warning_is_logged_even_when_the_poll_fails(
    deployment: Deployment,
    mirror: Mirror,
    make_client: MakeClient,
    clock: Clock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """SPEC 6: under ca-only 'a warning is logged each poll'. A poll that cannot reach
    any mirror is when it matters most, and it logged only the fetch failure."""
    deployment.publish(expires=NOW + timedelta(days=1))
    mirror.serve_deployment(deployment)
    client = make_client()
    client.refresh()
    clock.advance(days=2)
    mirror.files.clear()  # every answer is now a 404
    with caplog.at_level(logging.WARNING), pytest.raises(FetchError):
        client.refresh()
    assert any("NOT enforced" in r.getMessage() for r in caplog.records)


def test_a_stale_first_mirror_cannot_keep_expired_pins_lapsed(
    deployment: Deployment, mirror: Mirror, make_client: MakeClient, clock: Clock
) -> None:
    """Mirrors [stale, fresh]: once the held manifest has expired, a first mirror that
    answers 304 (or the same bytes) used to end every poll, so the pins stayed off
    under ca-only while the second mirror had a fresh manifest. A mirror with nothing
    newer than an expired manifest is now not the last word."""
    deployment.publish(expires=NOW + timedelta(days=1))
    mirror.serve_deployment(deployment)
    client = make_client(base_url=[mirror.url])
    client.refresh()
    clock.advance(days=2)
    deployment.publish(issued_at=clock.now - timedelta(hours=1))
    with Mirror() as fresh:
        fresh.serve_deployment(deployment)
        client = make_client(base_url=[mirror.url, fresh.url])
        result = client.refresh()
        assert (result.manifest_version, result.mirror) == (2, fresh.url)
        assert client.is_enforcing()
        # While the manifest held is fresh, a 304 is the answer: no other mirror asked.
        mirror.seen.clear()
        client = make_client(base_url=[fresh.url, mirror.url])
        assert client.refresh().not_modified
        assert mirror.seen == []


def test_pins_for_normalises_case_and_dot_and_refuses_u_labels(
    deployment: Deployment, mirror: Mirror, make_client: MakeClient
) -> None:
    """A U-label used to match nothing, silently: the caller took the host for
    unpinned. requests sends the A-label, which is what manifests hold."""
    deployment.publish(pinsets=[pinset("xn--bcher-kva.example")])
    mirror.serve_deployment(deployment)
    client = make_client()
    client.refresh()
    assert client.pins_for("XN--BCHER-KVA.example.") is not None
    with pytest.raises(ValueError, match="A-label"):
        client.pins_for("bücher.example")


# --- session ----------------------------------------------------------------------------


def test_plain_http_to_an_enforce_pinned_host_is_refused(
    deployment: Deployment, mirror: Mirror, make_client: MakeClient
) -> None:
    """A pin says 'this host is reached over TLS with these keys'; plain http to it
    (a typo, or a redirect from an unpinned host) would skip the pins entirely and
    send any cookies in clear. Refused before a byte is sent, like HSTS; report-mode
    and unpinned hosts still pass."""
    deployment.publish(pinsets=[pinset("localhost")])
    mirror.serve_deployment(deployment)
    client = make_client()
    client.refresh()
    port = mirror.url.rsplit(":", 1)[1]
    with client.session() as session:
        with pytest.raises(PinMismatchError, match="plain http") as raised:
            session.get(f"http://LocalHost:{port}/secret", timeout=10)
        assert not isinstance(raised.value, requests.RequestException)
        assert mirror.requests_for("/secret") == []
        assert session.get(f"{mirror.url}/unpinned", timeout=10).status_code == 404
    assert mirror.requests_for("/unpinned")


def test_plain_http_to_a_report_pinned_host_passes_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    report_only = pinset("localhost", mode="report")
    checker = PinChecker(lambda host: report_only if host == "localhost" else None, _no_report)
    with caplog.at_level(logging.WARNING):
        checker.check_plaintext("LOCALHOST.", 80)
    assert "report-mode pins" in caplog.text


def _no_report(host: str, port: int, observed: tuple[str, ...], pinset: object) -> None:
    raise AssertionError("nothing to report without a chain")


def test_a_report_answer_body_is_never_read(
    *,
    pki: Pki,
    tls_server: TlsServer,
    deployment: Deployment,
    mirror: Mirror,
    raw: RawServer,
    make_client: MakeClient,
) -> None:
    """The report POST used requests' defaults: the whole answer body read into memory
    (and redirects followed). A hostile report endpoint could exhaust the process from
    a background thread. The answer's status is all the client needs."""

    def accepted_forever(seen: _Seen, conn: socket.socket, server: RawServer) -> None:
        conn.sendall(b"HTTP/1.1 202 Accepted\r\nConnection: close\r\n\r\n")
        server.big_body(conn)

    raw.routes["/v1/reports"] = accepted_forever
    deployment.publish(
        pinsets=[pinset("localhost", [fake_pin("other")], mode="report")],
        report_uri=raw.url + "/v1/reports",
    )
    mirror.serve_deployment(deployment)
    client = make_client()
    client.refresh()
    with client.session() as session:
        response = session.get(
            tls_server.url_for("localhost", "/ok"), timeout=10, verify=str(pki.ca_file)
        )
        response.close()
    client.flush_reports(timeout=60)
    assert [s.path for s in raw.seen] == ["/v1/reports"]
    assert not raw.finished_big_body.is_set()
