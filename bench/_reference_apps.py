"""Two reference WSGI apps that serve cached manifest bytes, to place pinserver's hot path.

Both read ``BENCH_MANIFEST_FILE`` once at import and answer every request with those
bytes and a strong ETag (304 on a matching ``If-None-Match``). They do no more than
that, so they measure what gunicorn and Flask cost per request on this machine:

    gunicorn bench._reference_apps:flask_app    # a plain Flask view returning cached bytes
    gunicorn bench._reference_apps:bare_app     # a bare WSGI callable
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from flask import Flask, Response, request

_BODY = Path(os.environ.get("BENCH_MANIFEST_FILE", "/dev/null")).read_bytes()
_ETAG = '"' + hashlib.sha256(_BODY).hexdigest()[:32] + '"'

flask_app = Flask(__name__)


@flask_app.get("/v1/manifest.json")
def manifest() -> Response:
    if request.headers.get("If-None-Match") == _ETAG:
        return Response(status=304, headers={"ETag": _ETAG})
    return Response(_BODY, mimetype="application/json", headers={"ETag": _ETAG})


_HEADERS_200 = [
    ("Content-Type", "application/json"),
    ("Content-Length", str(len(_BODY))),
    ("ETag", _ETAG),
]
_HEADERS_304 = [("ETag", _ETAG)]


def bare_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    if environ.get("HTTP_IF_NONE_MATCH") == _ETAG:
        start_response("304 Not Modified", _HEADERS_304)
        return []
    start_response("200 OK", _HEADERS_200)
    return [_BODY]
