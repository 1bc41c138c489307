"""Real HTTPS servers on 127.0.0.1 with trustme chains (root, intermediate, leaf).

    pki = Pki.create()                       # CA -> intermediate -> leaf
    with TlsServer(pki.server_context()) as server:
        session.verify = str(pki.ca_file)
        session.get(server.url_for("localhost"))
    server.requests                          # paths of requests that reached the server

``server_context(extra=...)`` appends certificates the server sends but that are
not part of its chain (to show that pins match only the verified chain).
"""

from __future__ import annotations

import ssl
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import trustme
from cryptography import x509

from pinserver.pins import spki_sha256

SERVER_NAMES = ("localhost", "127.0.0.1", "pinned.test", "api.pinned.test", "deep.api.pinned.test")


@dataclass
class Pki:
    """A trustme root, an intermediate under it and a leaf under that."""

    root: trustme.CA
    intermediate: trustme.CA
    leaf: trustme.LeafCert
    ca_file: Path

    @classmethod
    def create(cls, directory: Path) -> Pki:
        root = trustme.CA()
        intermediate = root.create_child_ca()
        leaf = intermediate.issue_cert(*SERVER_NAMES)
        ca_file = directory / f"ca-{id(root)}.pem"
        root.cert_pem.write_to_path(str(ca_file))
        return cls(root=root, intermediate=intermediate, leaf=leaf, ca_file=ca_file)

    @property
    def leaf_pin(self) -> str:
        return spki_sha256(self.leaf.cert_chain_pems[0].bytes())

    @property
    def intermediate_pin(self) -> str:
        return spki_sha256(self.intermediate.cert_pem.bytes())

    @property
    def root_pin(self) -> str:
        return spki_sha256(self.root.cert_pem.bytes())

    def server_context(self, directory: Path, *, extra: tuple[bytes, ...] = ()) -> ssl.SSLContext:
        """Serves leaf + intermediate (+ ``extra`` PEM certificates the peer merely sends)."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        if not extra:
            self.leaf.configure_cert(context)
            return context
        for pem in extra:
            x509.load_pem_x509_certificate(pem)  # must be a certificate
        bundle = directory / f"chain-{id(self)}-{len(extra)}.pem"
        bundle.write_bytes(
            self.leaf.private_key_pem.bytes()
            + b"".join(blob.bytes() for blob in self.leaf.cert_chain_pems)
            + b"".join(extra)
        )
        context.load_cert_chain(str(bundle))
        return context


@dataclass
class TlsServer:
    """An HTTPS server in a thread; ``requests`` lists what reached the handler."""

    context: ssl.SSLContext
    requests: list[str] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("server not started")
        return int(self._server.server_address[1])

    def url_for(self, host: str, path: str = "/") -> str:
        return f"https://{host}:{self.port}{path}"

    def start(self) -> TlsServer:
        seen = self.requests

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                seen.append(self.path)
                body = b"hello from the pinned host\n"
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # clients that drop the connection after the handshake are expected

        server = Server(("127.0.0.1", 0), Handler)
        server.socket = self.context.wrap_socket(
            server.socket, server_side=True, do_handshake_on_connect=False
        )
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(10)

    def __enter__(self) -> TlsServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
