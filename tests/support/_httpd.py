"""What the test mirror and the test MITM share: the misbehaving answers both can give,
the never-ending body writer, and a quiet HTTP server run in a background thread."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self


@dataclass(frozen=True)
class Status:
    """Answer with this HTTP status and a JSON error body."""

    code: int


@dataclass(frozen=True)
class Trickle:
    """Slow retrieval (a slow-loris server): a 200 whose body arrives one chunk every
    ``interval`` seconds and never ends."""

    interval: float


@dataclass(frozen=True)
class _Endless:
    """Endless data: a 200 without Content-Length whose body never ends, sent as fast
    as the client reads."""


ENDLESS = _Endless()


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    headers: dict[str, str]


class QuietLogging:
    """Mixed into a :class:`BaseHTTPRequestHandler`: HTTP/1.1, and nothing logged."""

    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass


class QuietThreadingServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients hanging up mid-answer is what these tests provoke


def write_never_ending(
    handler: BaseHTTPRequestHandler,
    stop: threading.Event,
    rule: Trickle | _Endless,
    *,
    trickle_chunk: bytes,
    endless_chunk: bytes,
) -> None:
    """Send a 200 whose body never ends: ``trickle_chunk`` every ``rule.interval``
    seconds for a :class:`Trickle`, ``endless_chunk`` as fast as the client reads
    otherwise, until the client hangs up or ``stop`` is set."""
    handler.send_response(200)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Connection", "close")
    handler.end_headers()
    handler.close_connection = True
    chunk = trickle_chunk if isinstance(rule, Trickle) else endless_chunk
    try:
        while not stop.is_set():
            handler.wfile.write(chunk)
            handler.wfile.flush()
            if isinstance(rule, Trickle):
                stop.wait(rule.interval)
    except OSError:
        pass  # the client hung up, as it should


@dataclass
class BackgroundServer:
    """A :class:`QuietThreadingServer` on 127.0.0.1 in a daemon thread, usable as a
    context manager. Subclasses build the handler class in :meth:`_handler`."""

    _label = "server"

    _server: ThreadingHTTPServer | None = field(default=None, kw_only=True)
    _thread: threading.Thread | None = field(default=None, kw_only=True)
    _stop: threading.Event = field(default_factory=threading.Event, kw_only=True)

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError(f"{self._label} not started")
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        raise NotImplementedError

    def start(self) -> Self:
        self._server = QuietThreadingServer(("127.0.0.1", 0), self._handler())
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

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
