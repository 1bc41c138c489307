"""What one application instance (one gunicorn worker) holds: store, caches, limits."""

from __future__ import annotations

from dataclasses import dataclass, field

from pinserver.documents import Root
from pinserver.server.hotpath import ManifestCache
from pinserver.server.metrics import Metrics
from pinserver.server.reports import RateLimiter
from pinserver.store.base import Store


@dataclass
class ServerState:
    store: Store
    cache: ManifestCache
    metrics: Metrics
    report_limiter: RateLimiter
    publish_token: str | None = None
    admin_token: str | None = None
    parsed_roots: dict[tuple[int, str], Root] = field(default_factory=dict)

    def after_change(self) -> None:
        """After a commit: make every worker serve the new state."""
        self.cache.bump()
