"""One JSON error shape for every 4xx and 5xx the service sends.

``{"error": {"code": ..., "message": ...}}``: a ``PinserverError`` carries its own
code and status; Flask's and Werkzeug's own errors (404, 405, 413, ...) get a stable
code from :data:`HTTP_CODES`; anything else is logged and answered with a generic
500 that never shows a traceback.
"""

from __future__ import annotations

import logging

from flask import Flask, Response, json
from werkzeug.exceptions import HTTPException

from pinserver.errors import PinserverError

logger = logging.getLogger(__name__)

HTTP_CODES: dict[int, str] = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    408: "request_timeout",
    411: "length_required",
    413: "too_large",
    414: "uri_too_long",
    415: "unsupported_media_type",
    429: "rate_limited",
    431: "headers_too_large",
    500: "internal_error",
    501: "not_implemented",
    503: "unavailable",
}


class ApiError(PinserverError):
    """An HTTP-level refusal (auth, media type, parameters) with its own status."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message, code=code)
        self.status = status
        self.headers = headers or {}


def error_response(
    status: int, code: str, message: str, *, headers: dict[str, str] | None = None
) -> Response:
    body = json.dumps({"error": {"code": code, "message": message}})
    response = Response(body + "\n", status=status, mimetype="application/json")
    response.headers["Cache-Control"] = "no-store"
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def register_error_handlers(app: Flask, *, on_error: object = None) -> None:
    """Install the handlers; ``on_error(code)`` (if given) counts each rejection."""

    def count(code: str) -> None:
        if callable(on_error):
            on_error(code)

    @app.errorhandler(PinserverError)
    def pinserver_error(error: PinserverError) -> Response:
        count(error.code)
        if error.status >= 500:
            logger.error("store or server failure: %s", error.message)
        body = json.dumps({"error": error.to_dict()})
        response = Response(body + "\n", status=error.status, mimetype="application/json")
        response.headers["Cache-Control"] = "no-store"
        for name, value in getattr(error, "headers", {}).items():
            response.headers[name] = value
        return response

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> Response:
        status = error.code or 500
        code = HTTP_CODES.get(status, f"http_{status}")
        count(code)
        headers = {}
        allow = error.get_headers()
        for name, value in allow:
            if name.lower() in ("allow", "retry-after", "www-authenticate"):
                headers[name] = value
        return error_response(status, code, error.description or code, headers=headers)

    @app.errorhandler(Exception)
    def unexpected_error(error: Exception) -> Response:
        count("internal_error")
        logger.exception("unhandled error")
        return error_response(500, "internal_error", "internal server error")
