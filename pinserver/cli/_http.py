"""Talking to a pinserver service from the CLI: timeouts, size caps, and the server's
JSON errors turned back into the matching ``PinserverError`` (so the CLI prints the
same code and hint the server meant)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import click
import requests

from pinserver import errors
from pinserver.envelope import MAX_ENVELOPE_BYTES

_LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})

DEFAULT_TIMEOUT = 30.0
MAX_JSON_BYTES = 64 * MAX_ENVELOPE_BYTES
REASON_HEADER = "X-Pinserver-Reason"

# Status -> class for error codes this client does not know (a newer server).
_BY_STATUS: dict[int, type[errors.PinserverError]] = {
    400: errors.EnvelopeError,
    403: errors.SignatureError,
    409: errors.VersionConflictError,
    413: errors.TooLargeError,
    422: errors.VerificationError,
}


def _error_classes() -> dict[str, type[errors.PinserverError]]:
    found: dict[str, type[errors.PinserverError]] = {}
    pending: list[type[errors.PinserverError]] = [errors.PinserverError]
    while pending:
        cls = pending.pop()
        found.setdefault(cls.code, cls)
        pending.extend(cls.__subclasses__())
    return found


# Codes that are raised with a code= override rather than by their own class.
_EXTRA_CODES: dict[str, type[errors.PinserverError]] = {
    "not_yet_valid": errors.ExpiredError,
    "root_expired": errors.ExpiredError,
    "equal_version_mismatch": errors.RollbackError,
    "backup_pin_required": errors.FormatError,
    "wrong_payload_type": errors.EnvelopeError,
    "unknown_root_version": errors.VerificationError,
    "root_version_gap": errors.VerificationError,
}


def error_from_response(status: int, body: object, *, url: str) -> errors.PinserverError:
    """The ``PinserverError`` for an HTTP error answer ``{"error": {"code", "message"}}``.

    The server's code and message are kept; a body that is not our JSON error becomes a
    ``FetchError`` that names the URL and status.
    """
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict) or not isinstance(error.get("code"), str):
        return errors.FetchError(f"{url} answered HTTP {status}", http_status=status)
    code = error["code"]
    message = f"server refused ({status}): {error.get('message', '')}"
    cls = _error_classes().get(code) or _EXTRA_CODES.get(code)
    if cls is None:
        cls = _BY_STATUS.get(status, errors.FetchError)
    result: errors.PinserverError
    if issubclass(cls, errors.VersionConflictError):
        latest = error.get("latest_version")
        result = cls(message, latest_version=latest if isinstance(latest, int) else None)
    elif issubclass(cls, errors.FetchError):
        result = cls(message, http_status=status)
    else:
        result = cls(message)
    result.code = code
    return result


def validate_server_url(
    _ctx: click.Context, _param: click.Parameter, value: str | None
) -> str | None:
    """click callback for ``--server``: an http(s) base URL, without a trailing slash."""
    if value is None:
        return None
    if not value.startswith(("http://", "https://")):
        raise click.BadParameter(f"{value!r} is not an http:// or https:// URL")
    return value.rstrip("/")


class ServerClient:
    """A pinserver service at ``base_url`` (``https://pins.example.com``)."""

    def __init__(
        self, base_url: str, *, token: str | None = None, timeout: float = DEFAULT_TIMEOUT
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self._session = requests.Session()
        self._session.headers["User-Agent"] = "pinserver-cli"
        if token:
            self._session.headers["Authorization"] = f"Bearer {token}"
            host = urlsplit(self.base_url).hostname or ""
            if self.base_url.startswith("http://") and host not in _LOOPBACK:
                click.echo(
                    f"warning: sending the bearer token to {self.base_url} in clear text;"
                    " use https:// (signatures protect the documents, not the token)",
                    err=True,
                )

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> ServerClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _request(
        self,
        method: str,
        path: str,
        *,
        data: bytes | None = None,
        headers: Mapping[str, str | bytes] | None = None,
        max_bytes: int,
        missing_ok: bool = False,
    ) -> tuple[int, bytes]:
        url = self.base_url + path
        try:
            with self._session.request(
                method, url, data=data, headers=headers, timeout=self.timeout, stream=True
            ) as response:
                body = bytearray()
                for chunk in response.iter_content(65536):
                    body += chunk
                    if len(body) > max_bytes:
                        raise errors.FetchError(f"{url}: answer larger than {max_bytes} bytes")
                status = response.status_code
        except requests.RequestException as e:
            raise errors.FetchError(f"cannot reach {url}: {e}") from e
        if status == 404 and missing_ok:
            return status, bytes(body)
        if status >= 400:
            try:
                parsed: object = json.loads(body)
            except ValueError:
                parsed = None
            raise error_from_response(status, parsed, url=url)
        return status, bytes(body)

    def get_bytes(self, path: str, *, max_bytes: int = MAX_ENVELOPE_BYTES) -> bytes:
        """The exact bytes of a GET (envelopes are verified over these bytes)."""
        return self._request("GET", path, max_bytes=max_bytes)[1]

    def get_optional_bytes(self, path: str, *, max_bytes: int = MAX_ENVELOPE_BYTES) -> bytes | None:
        """As :meth:`get_bytes`, but ``None`` for a 404 (no such version yet)."""
        status, body = self._request("GET", path, max_bytes=max_bytes, missing_ok=True)
        return None if status == 404 else body

    def get_json(self, path: str, *, max_bytes: int = MAX_JSON_BYTES) -> dict[str, Any]:
        body = self.get_bytes(path, max_bytes=max_bytes)
        try:
            value = json.loads(body)
        except ValueError as e:
            raise errors.FetchError(f"{self.base_url}{path} did not answer JSON") from e
        if not isinstance(value, dict):
            raise errors.FetchError(f"{self.base_url}{path} did not answer a JSON object")
        return value

    def post_envelope(
        self, path: str, envelope: bytes, *, headers: Mapping[str, str | bytes] | None = None
    ) -> dict[str, Any]:
        """POST an envelope as JSON; the server's JSON answer (or its error, raised)."""
        all_headers: dict[str, str | bytes] = {"Content-Type": "application/json"}
        all_headers.update(headers or {})
        _status, body = self._request(
            "POST", path, data=envelope, headers=all_headers, max_bytes=MAX_JSON_BYTES
        )
        try:
            value = json.loads(body) if body else {}
        except ValueError as e:
            raise errors.FetchError(f"{self.base_url}{path} did not answer JSON") from e
        return value if isinstance(value, dict) else {"answer": value}

    def health(self) -> dict[str, Any]:
        """``GET /healthz``: ``{"status", "root_version", "manifest_version"}``."""
        return self.get_json("/healthz")
