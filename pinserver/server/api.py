"""The HTTP API of SPEC section 7 (blueprint ``bp``).

Views are thin: they check HTTP-level things (token, media type, size, parameters),
hand the bytes to the pure trust core inside the store's write transaction, and
render what comes back. No verification rule lives here.
"""

from __future__ import annotations

import hmac
import json
import re
from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, Response, current_app, request
from flask.blueprints import BlueprintSetupState
from werkzeug.routing import IntegerConverter

from pinserver.documents import MAX_VERSION, Root, format_timestamp
from pinserver.envelope import MAX_ENVELOPE_BYTES, Envelope
from pinserver.errors import PinserverError
from pinserver.server.errors import ApiError
from pinserver.server.hotpath import LATEST_CACHE_CONTROL, etag_for
from pinserver.server.reports import (
    MAX_REPORT_BYTES,
    canonical_report,
    parse_report,
    rate_limit_key,
)
from pinserver.server.state import ServerState
from pinserver.store.base import NotInitialisedError, StoredManifest, StoredRoot
from pinserver.trust import (
    ManifestFloor,
    VerifiedManifest,
    VerifiedRoot,
    verify_manifest_signatures,
    verify_publication,
    verify_root_rotation,
)

bp = Blueprint("api", __name__)


class VersionConverter(IntegerConverter):
    """A version in a path: ASCII digits, no leading zero. Werkzeug's ``int`` matches
    any Unicode digit and leading zeros, so ``/v1/manifests/\uff11.json`` and ``01.json``
    were further URLs for manifest 1 that the static export does not have."""

    regex = r"0|[1-9][0-9]*"


@bp.record_once
def _add_version_converter(state: BlueprintSetupState) -> None:
    # Runs before any route of ``bp`` is bound: the rules below name this converter.
    state.app.url_map.converters.setdefault("version", VersionConverter)


IMMUTABLE = "public, max-age=31536000, immutable"
# A missing root N+1 is how clients learn the walk is over; it may appear at any time.
MISSING_CACHE_CONTROL = "public, max-age=60"
MAX_HISTORY_LIMIT = 1000
DEFAULT_HISTORY_LIMIT = 100
MAX_REASON_CHARS = 1024
REASON_HEADER = "X-Pinserver-Reason"
_DIGITS = re.compile(r"\A[0-9]{1,16}\Z")


def _state() -> ServerState:
    state: ServerState = current_app.extensions["pinserver"]
    return state


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def _json(value: Any, status: int = 200, **headers: str) -> Response:
    response = Response(
        json.dumps(value, separators=(",", ":")) + "\n", status=status, mimetype="application/json"
    )
    for name, header in headers.items():
        response.headers[name.replace("_", "-")] = header
    return response


def _envelope_response(envelope: bytes, cache_control: str) -> Response:
    response = Response(envelope, mimetype="application/json")
    response.headers["Cache-Control"] = cache_control
    response.headers["ETag"] = etag_for(envelope)
    return response


def _bearer_ok(configured: str, header: str | None) -> bool:
    """Constant-time comparison of ``Authorization: Bearer <token>``."""
    supplied = ""
    if header and header[:7].lower() == "bearer ":
        supplied = header[7:].strip()
    return hmac.compare_digest(supplied.encode("utf-8"), configured.encode("utf-8"))


def _require_token(configured: str | None, *, what: str) -> None:
    if configured and not _bearer_ok(configured, request.headers.get("Authorization")):
        raise ApiError(
            401,
            "unauthorized",
            f"{what} needs a valid bearer token (Authorization: Bearer ...)",
            headers={"WWW-Authenticate": 'Bearer realm="pinserver"'},
        )


def _require_json(limit: int) -> bytes:
    """413 over ``limit`` (before anything else), 415 unless JSON, then the body."""
    if request.content_length is not None and request.content_length > limit:
        raise ApiError(
            413, "too_large", f"the body is {request.content_length} bytes; the cap is {limit}"
        )
    mimetype = request.mimetype or ""
    if not (
        mimetype == "application/json"
        or (mimetype.startswith("application/") and mimetype.endswith("+json"))
    ):
        raise ApiError(
            415,
            "unsupported_media_type",
            f"send the body as application/json (got {mimetype or 'no content type'!r})",
        )
    body = _read_body(limit)
    if len(body) > limit:
        raise ApiError(413, "too_large", f"the body is over the cap of {limit} bytes")
    return body


def _read_body(limit: int) -> bytes:
    """At most ``limit + 1`` bytes of the body: one byte more than the cap tells a body
    over it from one exactly at it. A chunked body has no Content-Length to refuse up
    front, and Werkzeug stops reading it at ``MAX_CONTENT_LENGTH`` (``limit + 1`` for
    envelopes) without an error, so the length read is what decides."""
    stream = request.stream
    parts: list[bytes] = []
    size = 0
    while size <= limit:
        part = stream.read(limit + 1 - size)
        if not part:
            break
        parts.append(part)
        size += len(part)
    return b"".join(parts)


def _client_address() -> str:
    return request.remote_addr or "unknown"


def _parse_int(name: str, default: int, *, low: int, high: int) -> int:
    raw = request.args.get(name)
    if raw is None:
        return default
    if not _DIGITS.match(raw) or not low <= int(raw) <= high:
        raise ApiError(400, "invalid_parameter", f"{name} must be an integer {low}..{high}")
    return int(raw)


def _reason() -> str | None:
    raw = request.headers.get(REASON_HEADER)
    if raw is None:
        return None
    try:
        text = raw.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        raise ApiError(400, "invalid_reason", f"{REASON_HEADER} must be UTF-8 text") from None
    text = text.strip()
    if not text or len(text) > MAX_REASON_CHARS or not text.isprintable():
        raise ApiError(
            400,
            "invalid_reason",
            f"{REASON_HEADER} must be 1..{MAX_REASON_CHARS} printable characters",
        )
    return text


# --- reads ------------------------------------------------------------------------------


@bp.get("/healthz")
def healthz() -> Response:
    # What this worker serves: the hot path's view, as fresh as the polls it answers.
    head = _state().cache.current().head
    return _json(
        {
            "status": "ok",
            "root_version": head.root_version,
            "manifest_version": head.manifest_version,
        },
        Cache_Control="no-store",
    )


@bp.get("/v1/roots/<version:version>.json")
def get_root(version: int) -> Response:
    stored = _state().store.get_root(version) if version <= MAX_VERSION else None
    if stored is None:
        raise ApiError(
            404,
            "not_found",
            f"there is no root version {version}",
            headers={"Cache-Control": MISSING_CACHE_CONTROL},
        )
    return _envelope_response(stored.envelope, IMMUTABLE)


@bp.get("/v1/manifest.json")
def get_latest_manifest() -> Response:
    # Normally answered by HotPathMiddleware; reached when there is no manifest yet.
    entry = _state().cache.current()
    if entry.body is None:
        if entry.head.root_version == 0:
            raise NotInitialisedError("the store has no root yet; run `pinserver init`")
        raise ApiError(
            404,
            "no_manifest",
            "no manifest has been published yet",
            headers={"Cache-Control": "no-cache"},
        )
    response = _envelope_response(entry.body, LATEST_CACHE_CONTROL)
    response.make_conditional(request)
    return response


@bp.get("/v1/manifests/<version:version>.json")
def get_manifest(version: int) -> Response:
    # Beyond MAX_VERSION there is nothing to find (and SQLite integers stop at 2^63).
    stored = _state().store.get_manifest(version) if version <= MAX_VERSION else None
    if stored is None:
        raise ApiError(
            404,
            "not_found",
            f"there is no manifest version {version}",
            headers={"Cache-Control": MISSING_CACHE_CONTROL},
        )
    return _envelope_response(stored.envelope, IMMUTABLE)


def _history_item(stored: StoredManifest) -> dict[str, Any]:
    return {
        "version": stored.version,
        "root_version": stored.root_version,
        "payload_sha256": stored.payload_sha256,
        "published_at": format_timestamp(stored.published_at),
        "keyids": list(stored.keyids),
        "envelope": json.loads(stored.envelope),
    }


@bp.get("/v1/history")
def history() -> Response:
    after = _parse_int("after", 0, low=0, high=2**53 - 1)
    limit = _parse_int("limit", DEFAULT_HISTORY_LIMIT, low=1, high=MAX_HISTORY_LIMIT)
    rows = _state().store.manifests_after(after, limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    return _json(
        {
            "items": [_history_item(r) for r in rows],
            "next_after": rows[-1].version if more else None,
        },
        Cache_Control="no-cache",
    )


# --- publication ------------------------------------------------------------------------


def _root_of(stored: StoredRoot) -> Root:
    """Parse a stored (already verified) root, cached by version and payload hash."""
    state = _state()
    key = (stored.version, stored.payload_sha256)
    root = state.parsed_roots.get(key)
    if root is None:
        root = Root.from_bytes(Envelope.from_bytes(stored.envelope).payload)
        state.parsed_roots[key] = root
    return root


@bp.post("/v1/manifests")
def publish_manifest() -> Response:
    state = _state()
    _require_token(state.publish_token, what="publishing")
    body = _require_json(MAX_ENVELOPE_BYTES)
    reason = _reason()
    now = _now()
    current = state.store.latest_root()
    if current is None:
        raise NotInitialisedError("the store has no root yet; run `pinserver init`")
    # Early refusal of malformed or unsigned bodies without taking the write lock; the
    # decision that counts is made again inside the transaction below.
    verify_manifest_signatures(_root_of(current), body)

    def verify(root: StoredRoot, latest: StoredManifest | None) -> VerifiedManifest:
        floor = ManifestFloor(latest.version, latest.payload_sha256) if latest else None
        return verify_publication(_root_of(root), body, latest=floor, reference_time=now)

    stored = state.store.publish_manifest(verify, now=now, source=_client_address(), reason=reason)
    state.after_change()
    state.metrics.inc("pinserver_publishes_total", kind="manifest")
    return _json(
        {"version": stored.version, "payload_sha256": stored.payload_sha256},
        201,
        Location=f"/v1/manifests/{stored.version}.json",
    )


@bp.post("/v1/roots")
def rotate_root() -> Response:
    state = _state()
    _require_token(state.publish_token, what="publishing")
    body = _require_json(MAX_ENVELOPE_BYTES)
    now = _now()

    def verify(current: StoredRoot) -> VerifiedRoot:
        return verify_root_rotation(_root_of(current), body, reference_time=now)

    stored = state.store.rotate_root(verify, now=now, source=_client_address())
    state.after_change()
    state.metrics.inc("pinserver_publishes_total", kind="root")
    return _json(
        {"version": stored.version, "payload_sha256": stored.payload_sha256},
        201,
        Location=f"/v1/roots/{stored.version}.json",
    )


# --- reports ----------------------------------------------------------------------------


@bp.post("/v1/reports")
def post_report() -> Response:
    state = _state()
    body = _require_json(MAX_REPORT_BYTES)
    address = _client_address()
    if not state.report_limiter.allow(rate_limit_key(address)):
        raise ApiError(
            429,
            "rate_limited",
            "too many reports from this address; clients send at most one report per host"
            " and chain per hour",
            headers={"Retry-After": str(state.report_limiter.retry_after())},
        )
    report = parse_report(body)
    report_id = state.store.add_report(
        client_address=address, body=canonical_report(report), now=_now()
    )
    state.metrics.inc("pinserver_reports_total")
    return _json({"status": "accepted", "id": report_id}, 202)


@bp.get("/v1/reports")
def list_reports() -> Response:
    state = _state()
    if not state.admin_token:
        raise ApiError(
            403,
            "admin_disabled",
            "reading reports needs PINSERVER_ADMIN_TOKEN to be set on the server",
        )
    _require_token(state.admin_token, what="reading reports")
    after = _parse_int("after", 0, low=0, high=2**63 - 1)
    limit = _parse_int("limit", DEFAULT_HISTORY_LIMIT, low=1, high=MAX_HISTORY_LIMIT)
    rows = state.store.reports(after=after, limit=limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    items = [
        {
            "id": r.id,
            "received_at": format_timestamp(r.received_at),
            "client_address": r.client_address,
            "report": json.loads(r.body),
        }
        for r in rows
    ]
    return _json(
        {"items": items, "next_after": rows[-1].id if more else None}, Cache_Control="no-store"
    )


@bp.get("/metrics")
def metrics() -> Response:
    state = _state()
    entry = state.cache.current()
    text = state.metrics.render(
        {
            "pinserver_manifest_version": float(entry.head.manifest_version),
            "pinserver_root_version": float(entry.head.root_version),
        }
    )
    response = Response(text, mimetype="text/plain")
    response.headers["Content-Type"] = "text/plain; version=0.0.4; charset=utf-8"
    response.headers["Cache-Control"] = "no-store"
    return response


__all__ = ["PinserverError", "bp"]
