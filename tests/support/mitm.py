"""A programmable man in the middle: an HTTP server on 127.0.0.1 in front of the real
pinserver, which passes traffic through unless a rule for the path says otherwise.

    with Mitm(server_url) as mitm:
        client = PinClient(mitm.url, ...)          # the client talks to the attacker
        mitm.rules["/v1/manifest.json"] = Replace(crafted)
        mitm.rules["/v1/manifest.json"] = Replace(mitm.captured["/v1/manifest.json"])
        mitm.rules["/v1/manifest.json"] = Freeze()  # keep serving what was last seen
        mitm.rules["/v1/manifest.json"] = ENDLESS   # or Trickle(0.05), Hold(), Status(503)
        mitm.rules["/v1/roots/3.json"] = Transform(lambda body: body + b" ")

Every rule is one thing an attacker on the path (a malicious mirror, CDN or proxy)
can do: answer with bytes of its choice, replay what it saw earlier, hide updates,
stream forever, trickle, or never answer. What it cannot do is sign. ``captured``
keeps the last 200 body the real server gave for each path, which is what a replay
attack replays; ``seen`` lists every request that reached the MITM.
"""

from __future__ import annotations

import http.client
import threading
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler

from pinserver.server.hotpath import etag_for
from tests.support import _httpd
from tests.support._httpd import ENDLESS, Seen, Status, Trickle, _Endless

__all__ = [
    "ENDLESS",
    "Freeze",
    "Hold",
    "Mitm",
    "Replace",
    "Rule",
    "Seen",
    "Status",
    "Transform",
    "Trickle",
]

_FORWARDED_REQUEST_HEADERS = ("Content-Type", "If-None-Match", "Authorization", "Accept")
_HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "server", "date"}
)


@dataclass(frozen=True)
class Replace:
    """Answer with ``body`` (a strong ETag over it, and 304 on a match, like the real
    service), whatever the real server holds."""

    body: bytes
    status: int = 200


@dataclass(frozen=True)
class Freeze:
    """Indefinite freeze: keep serving the body the MITM last saw for this path (304 to
    a matching ``If-None-Match``), hiding every later update."""


@dataclass(frozen=True)
class Transform:
    """Fetch from the real server, then answer with ``change(body)`` (status kept)."""

    change: Callable[[bytes], bytes]


@dataclass(frozen=True)
class Hold:
    """Accept the connection and the request, then say nothing at all."""


Rule = Replace | Freeze | Transform | Status | Trickle | _Endless | Hold


@dataclass
class Mitm(_httpd.BackgroundServer):
    """The attacker's server. ``rules`` maps a request path (no query) to a :data:`Rule`."""

    _label = "MITM"

    upstream: str
    rules: dict[str, Rule] = field(default_factory=dict)
    captured: dict[str, bytes] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)
    _frozen: dict[str, bytes] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def requests_for(self, path: str) -> list[Seen]:
        return [s for s in self.seen if s.path == path]

    def forward(
        self, method: str, path: str, headers: dict[str, str], body: bytes | None
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        """One request to the real server; the answer is also recorded in ``captured``."""
        target = urllib.parse.urlsplit(self.upstream)
        if target.hostname != "127.0.0.1":
            raise ValueError("the MITM only ever talks to 127.0.0.1")
        connection = http.client.HTTPConnection(target.hostname, target.port, timeout=30)
        try:
            connection.request(method, path, body=body, headers=headers)
            response = connection.getresponse()
            data = response.read()
            kept = [(k, v) for k, v in response.getheaders() if k.lower() not in _HOP_BY_HOP]
            status = response.status
        finally:
            connection.close()
        if method == "GET" and status == 200:
            with self._lock:
                self.captured[urllib.parse.urlsplit(path).path] = data
        return status, kept, data

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        mitm = self

        class Handler(_httpd.QuietLogging, BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self._handle("GET")

            def do_HEAD(self) -> None:
                self._handle("HEAD")

            def do_POST(self) -> None:
                self._handle("POST")

            def _handle(self, method: str) -> None:
                path = urllib.parse.urlsplit(self.path).path
                with mitm._lock:
                    mitm.seen.append(Seen(method, path, dict(self.headers.items())))
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                rule = mitm.rules.get(path)
                if isinstance(rule, Status):
                    self._send(rule.code, [("Content-Type", "application/json")], _error(rule.code))
                elif isinstance(rule, Replace):
                    self._send_document(rule.body, rule.status)
                elif isinstance(rule, Freeze):
                    with mitm._lock:
                        frozen = mitm._frozen.setdefault(path, mitm.captured[path])
                    self._send_document(frozen, 200)
                elif isinstance(rule, Trickle | _Endless):
                    self._never_ending(rule)
                elif isinstance(rule, Hold):
                    self.close_connection = True
                    mitm._stop.wait()
                else:
                    status, headers, data = mitm.forward(method, self.path, self._upstream(), body)
                    if isinstance(rule, Transform):
                        data = rule.change(data)
                        headers = [(k, v) for k, v in headers if k.lower() != "content-length"]
                        headers = [(k, v) for k, v in headers if k.lower() != "etag"]
                        if status == 200:
                            headers.append(("ETag", etag_for(data)))
                    else:
                        headers = [(k, v) for k, v in headers if k.lower() != "content-length"]
                    self._send(status, headers, data)

            def _upstream(self) -> dict[str, str]:
                return {
                    name: value
                    for name in _FORWARDED_REQUEST_HEADERS
                    if (value := self.headers.get(name)) is not None
                }

            def _send_document(self, body: bytes, status: int) -> None:
                etag = etag_for(body)
                if status == 200 and self.headers.get("If-None-Match") == etag:
                    self._send(304, [("ETag", etag)], b"")
                    return
                self._send(status, [("Content-Type", "application/json"), ("ETag", etag)], body)

            def _send(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
                self.send_response(status)
                for name, value in headers:
                    self.send_header(name, value)
                if status != 304:
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if status != 304 and self.command != "HEAD":
                    self.wfile.write(body)

            def _never_ending(self, rule: Trickle | _Endless) -> None:
                _httpd.write_never_ending(
                    self, mitm._stop, rule, trickle_chunk=b"[", endless_chunk=b"[" * 65536
                )

        return Handler


def _error(status: int) -> bytes:
    return b'{"error": {"code": "mitm", "message": "the man in the middle says %d"}}' % status
