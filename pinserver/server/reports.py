"""Client pin-failure reports: a strict schema, a size cap and a per-address limit.

A report is a JSON object, every field required, nothing else allowed::

    {"host": "api.example.com", "port": 443,
     "observed": ["<base64 SPKI SHA-256>", ...],     # the verified chain, leaf first
     "manifest_version": 7 | null, "mode": "enforce" | "report",
     "time": "2026-12-03T12:00:00Z"}

Rate limit: a token bucket per client address (an IPv6 client's /64, see
:func:`rate_limit_key`), per worker process (no shared state
and no database write for a refused report). With W workers an address can get at
most W times the burst through in a burst, then ``REPORT_RATE_PER_HOUR`` per worker;
that bounds what a flood can write, which is the point.
"""

from __future__ import annotations

import ipaddress
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from pinserver._strictjson import dumps_canonical, loads_object
from pinserver.documents import MAX_VERSION, decode_pin, parse_timestamp, validate_host
from pinserver.errors import FormatError

MAX_REPORT_BYTES = 16 * 1024
MAX_OBSERVED = 16
REPORT_FIELDS = frozenset({"host", "port", "observed", "manifest_version", "mode", "time"})


def parse_report(data: bytes) -> dict[str, Any]:
    """Validate a report body; raise ``FormatError`` (code ``invalid_report``, HTTP 400)."""
    try:
        obj = loads_object(data, what="report")
        if set(obj) != REPORT_FIELDS:
            missing = sorted(REPORT_FIELDS - set(obj))
            unknown = sorted(set(obj) - REPORT_FIELDS)
            raise FormatError(f"report fields: missing {missing}, unknown {unknown}")
        validate_host(obj["host"], field="host")
        port = obj["port"]
        if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
            raise FormatError("must be an integer 1..65535", field="port")
        observed = obj["observed"]
        if not isinstance(observed, list) or not 1 <= len(observed) <= MAX_OBSERVED:
            raise FormatError(f"must be a list of 1..{MAX_OBSERVED} pins", field="observed")
        for i, pin in enumerate(observed):
            decode_pin(pin, field=f"observed[{i}]")
        version = obj["manifest_version"]
        if version is not None and (
            not isinstance(version, int)
            or isinstance(version, bool)
            or not 1 <= version <= MAX_VERSION
        ):
            raise FormatError("must be null or a manifest version", field="manifest_version")
        if obj["mode"] not in ("enforce", "report"):
            raise FormatError("must be 'enforce' or 'report'", field="mode")
        parse_timestamp(obj["time"], field="time")
    except FormatError as e:
        error = FormatError(e.message, code="invalid_report")
        error.status = 400
        raise error from e
    return obj


def rate_limit_key(address: str) -> str:
    """The bucket a client address draws from: an IPv4 address itself, an IPv6 address
    its /64. One host or site usually holds a whole /64 (SLAAC, privacy addresses), so
    keyed per IPv6 address it could send reports without limit by changing the low bits.
    A v4-mapped IPv6 address is the IPv4 client; anything unparsable is its own key."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


def canonical_report(report: dict[str, Any]) -> bytes:
    return dumps_canonical(report)


class RateLimiter:
    """Token buckets keyed by client address, bounded in memory (least recently seen
    addresses are forgotten first)."""

    def __init__(
        self,
        *,
        burst: int,
        per_hour: float,
        max_addresses: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.burst = burst
        self.rate = per_hour / 3600.0
        self.max_addresses = max_addresses
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()

    def allow(self, address: str) -> bool:
        now = self._clock()
        with self._lock:
            tokens, last = self._buckets.pop(address, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - last) * self.rate)
            allowed = tokens >= 1.0
            if allowed:
                tokens -= 1.0
            self._buckets[address] = (tokens, now)
            while len(self._buckets) > self.max_addresses:
                self._buckets.popitem(last=False)
            return allowed

    def retry_after(self) -> int:
        return max(1, int(1 / self.rate)) if self.rate > 0 else 3600
