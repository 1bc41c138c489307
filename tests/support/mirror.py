"""A mirror on 127.0.0.1 whose every answer the test controls: honest or malicious.

    with Mirror() as mirror:
        mirror.serve_deployment(deployment)         # roots + latest manifest, honest
        mirror.files["/v1/manifest.json"] = crafted  # or replay, fork, ...
        mirror.files["/v1/manifest.json"] = ENDLESS  # or Trickle(0.05), Status(503)

It is a plain ``http.server`` in a thread: real sockets, real HTTP, strong ETags
and ``If-None-Match`` -> 304 like the real service, plus the misbehaviours the
client must survive. ``POST`` bodies (pin reports) are recorded.
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.factory import Deployment


@dataclass(frozen=True)
class Status:
    """Answer with this HTTP status and a JSON error body."""

    code: int


@dataclass(frozen=True)
class Trickle:
    """A body that never ends, one byte every ``interval`` seconds (a slow-loris mirror)."""

    interval: float


class _Endless:
    """A body that never ends, sent as fast as the client reads it."""


ENDLESS = _Endless()
Answer = bytes | Status | Trickle | _Endless


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    headers: dict[str, str]


@dataclass
class Mirror:
    files: dict[str, Answer] = field(default_factory=dict)
    send_etags: bool = True
    seen: list[Seen] = field(default_factory=list)
    posts: list[tuple[str, Any]] = field(default_factory=list)
    post_received: threading.Event = field(default_factory=threading.Event)
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None
    _stop: threading.Event = field(default_factory=threading.Event)

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("mirror not started")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def serve_deployment(
        self, deployment: Deployment, *, manifest_version: int | None = None
    ) -> None:
        """Honest content: every root, and the given (default latest) manifest."""
        for version, root in enumerate(deployment.roots, start=1):
            self.files[f"/v1/roots/{version}.json"] = root
        if deployment.manifests:
            index = (manifest_version or deployment.manifest_version) - 1
            self.files["/v1/manifest.json"] = deployment.manifests[index]

    def requests_for(self, path: str) -> list[Seen]:
        return [s for s in self.seen if s.path == path]

    def start(self) -> Mirror:
        mirror = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                mirror.seen.append(Seen("GET", self.path, dict(self.headers.items())))
                answer = mirror.files.get(self.path)
                if answer is None:
                    self._json(404, {"error": {"code": "not_found", "message": self.path}})
                elif isinstance(answer, Status):
                    self._json(answer.code, {"error": {"code": "x", "message": "mirror says"}})
                elif isinstance(answer, Trickle | _Endless):
                    self._never_ending(answer)
                else:
                    self._bytes(answer)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                mirror.seen.append(Seen("POST", self.path, dict(self.headers.items())))
                mirror.posts.append((self.path, json.loads(body)))
                mirror.post_received.set()
                self._json(202, {"status": "accepted"})

            def _bytes(self, body: bytes) -> None:
                etag = '"' + hashlib.sha256(body).hexdigest() + '"'
                if mirror.send_etags and self.headers.get("If-None-Match") == etag:
                    self.send_response(304)
                    self.send_header("ETag", etag)
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                if mirror.send_etags:
                    self.send_header("ETag", etag)
                self.end_headers()
                self.wfile.write(body)

            def _json(self, status: int, obj: object) -> None:
                body = json.dumps(obj).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _never_ending(self, answer: Trickle | _Endless) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Connection", "close")
                self.end_headers()
                self.close_connection = True
                chunk = b"{" if isinstance(answer, Trickle) else b" " * 65536
                try:
                    while not mirror._stop.is_set():
                        self.wfile.write(chunk)
                        self.wfile.flush()
                        if isinstance(answer, Trickle):
                            mirror._stop.wait(answer.interval)
                except OSError:
                    pass  # the client hung up, as it should

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # clients hanging up mid-answer is what these tests provoke

        self._server = Server(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(10)

    def __enter__(self) -> Mirror:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
