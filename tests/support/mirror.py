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
from http.server import BaseHTTPRequestHandler
from typing import Any

from tests.factory import Deployment
from tests.support import _httpd
from tests.support._httpd import ENDLESS, Seen, Status, Trickle, _Endless

__all__ = ["ENDLESS", "Answer", "Mirror", "Seen", "Status", "Trickle"]

Answer = bytes | Status | Trickle | _Endless


@dataclass
class Mirror(_httpd.BackgroundServer):
    _label = "mirror"

    files: dict[str, Answer] = field(default_factory=dict)
    send_etags: bool = True
    seen: list[Seen] = field(default_factory=list)
    posts: list[tuple[str, Any]] = field(default_factory=list)
    post_received: threading.Event = field(default_factory=threading.Event)

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

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        mirror = self

        class Handler(_httpd.QuietLogging, BaseHTTPRequestHandler):
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
                _httpd.write_never_ending(
                    self, mirror._stop, answer, trickle_chunk=b"{", endless_chunk=b" " * 65536
                )

        return Handler
