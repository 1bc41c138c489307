"""The pin server: a Flask application that stores and serves signed documents.

It holds no private key. ``create_app(config)`` builds the application; gunicorn
loads :mod:`pinserver.server.wsgi`. Settings (config keys, or the environment):

========================  ==============================  ==============================
key                       environment                     default
========================  ==============================  ==============================
``DATA_DIR``              ``PINSERVER_DATA``              ``./pinserver-data``
``DATABASE_URL``          ``PINSERVER_DATABASE_URL``      none (SQLite in ``DATA_DIR``)
``PUBLISH_TOKEN``         ``PINSERVER_PUBLISH_TOKEN``     none (signatures alone suffice)
``ADMIN_TOKEN``           ``PINSERVER_ADMIN_TOKEN``       none (``GET /v1/reports`` off)
``TRUSTED_PROXIES``       ``PINSERVER_TRUSTED_PROXIES``   0 (use the socket's address)
``HEAD_CHECK_INTERVAL``   ``PINSERVER_HEAD_CHECK``        1.0 s with SQLite, 0 with PostgreSQL
``REPORT_BURST``          ``PINSERVER_REPORT_BURST``      10 reports
``REPORT_PER_HOUR``       ``PINSERVER_REPORT_PER_HOUR``   60 reports
``CHECK_INTEGRITY``                                       True (gunicorn's master does it)
``STORE``                                                 an open Store to use instead
========================  ==============================  ==============================

``HEAD_CHECK_INTERVAL`` is how often a worker asks the store whether the head moved
(see :mod:`pinserver.server.hotpath`). The PostgreSQL store answers ``head()`` from its
LISTEN connection without a round trip, so there every poll asks, and a publication on
another replica is served within the NOTIFY latency; SQLite's ``head()`` is a query.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flask import Flask

from pinserver.envelope import MAX_ENVELOPE_BYTES
from pinserver.server.hotpath import GENERATION_FILE, HotPathMiddleware, ManifestCache
from pinserver.server.metrics import Metrics
from pinserver.server.reports import RateLimiter
from pinserver.server.state import ServerState
from pinserver.store import DEFAULT_DATA_DIR, check_store, open_store

SQLITE_HEAD_CHECK_INTERVAL = 1.0
POSTGRES_HEAD_CHECK_INTERVAL = 0.0


def _float_or_none(raw: str | None) -> float | None:
    return float(raw) if raw else None


def head_check_interval(configured: float | None, database_url: str | None) -> float:
    """The hot path's head check interval: as configured, else by backend."""
    if configured is not None:
        return float(configured)
    return POSTGRES_HEAD_CHECK_INTERVAL if database_url else SQLITE_HEAD_CHECK_INTERVAL


def _env_settings() -> dict[str, Any]:
    env = os.environ
    return {
        "DATA_DIR": env.get("PINSERVER_DATA") or DEFAULT_DATA_DIR,
        "DATABASE_URL": env.get("PINSERVER_DATABASE_URL") or None,
        "PUBLISH_TOKEN": env.get("PINSERVER_PUBLISH_TOKEN") or None,
        "ADMIN_TOKEN": env.get("PINSERVER_ADMIN_TOKEN") or None,
        "TRUSTED_PROXIES": int(env.get("PINSERVER_TRUSTED_PROXIES") or 0),
        "HEAD_CHECK_INTERVAL": _float_or_none(env.get("PINSERVER_HEAD_CHECK")),
        "REPORT_BURST": int(env.get("PINSERVER_REPORT_BURST") or 10),
        "REPORT_PER_HOUR": float(env.get("PINSERVER_REPORT_PER_HOUR") or 60),
        "CHECK_INTEGRITY": True,
        "STORE": None,
    }


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """Build the service; ``config`` overrides the environment (tests pass a dict)."""
    from pinserver.server.api import bp  # noqa: PLC0415
    from pinserver.server.audit import bp as audit_bp  # noqa: PLC0415
    from pinserver.server.errors import register_error_handlers  # noqa: PLC0415

    app = Flask(__name__)
    app.config.from_mapping(_env_settings())
    if config:
        app.config.from_mapping(config)
    # Werkzeug refuses a larger Content-Length with 413 before a view reads the body. One
    # byte over the cap, so that a chunked body (no Content-Length) read to this limit
    # shows it went past the cap (the view answers 413; see api._read_body).
    app.config["MAX_CONTENT_LENGTH"] = MAX_ENVELOPE_BYTES + 1
    app.json.sort_keys = False  # type: ignore[attr-defined]

    data_dir = Path(app.config["DATA_DIR"])
    store = app.config["STORE"] or open_store(data_dir, app.config["DATABASE_URL"])
    if app.config["CHECK_INTEGRITY"]:
        check_store(store)
    if not app.config["DATABASE_URL"]:
        data_dir.mkdir(parents=True, exist_ok=True)
    # The generation file tells the other workers on this machine at once; with
    # PostgreSQL it is used when there is a data directory (never created for it).
    generation = data_dir / GENERATION_FILE if data_dir.is_dir() else None
    metrics = Metrics(data_dir / "metrics" if data_dir.is_dir() else None)
    cache = ManifestCache(
        store,
        generation_file=generation,
        check_interval=head_check_interval(
            app.config["HEAD_CHECK_INTERVAL"], app.config["DATABASE_URL"]
        ),
    )
    state = ServerState(
        store=store,
        cache=cache,
        metrics=metrics,
        report_limiter=RateLimiter(
            burst=app.config["REPORT_BURST"], per_hour=app.config["REPORT_PER_HOUR"]
        ),
        publish_token=app.config["PUBLISH_TOKEN"],
        admin_token=app.config["ADMIN_TOKEN"],
    )
    app.extensions["pinserver"] = state

    app.register_blueprint(bp)
    app.register_blueprint(audit_bp)  # the read-only HTML auditor view, /audit
    register_error_handlers(app, on_error=metrics.rejection)

    if app.config["TRUSTED_PROXIES"]:
        from werkzeug.middleware.proxy_fix import ProxyFix  # noqa: PLC0415

        n = int(app.config["TRUSTED_PROXIES"])
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=n, x_proto=n, x_host=n)  # type: ignore[method-assign]
    app.wsgi_app = HotPathMiddleware(  # type: ignore[method-assign]
        app.wsgi_app, cache, on_poll=metrics.poll
    )
    return app


__all__ = ["create_app"]
