"""What ``pinserver monitor`` alerts on, decided by one pure function.

Given a verified manifest, the root it was checked under, each pinned host's live
chain (or why it could not be had) and ``now``, :func:`evaluate` says for every root,
manifest, pin set and certificate how long it has left, and whether each host's live
chain still matches its pins. Statuses: ``ok``, ``warning``, ``failure``; the worst
one decides the exit code (0, 1, 2).

Two sets of thresholds: certificates, pin sets and the root change by hand and need
weeks of notice (warning under 30 days, failure under 15 by default). The manifest is
short-lived by design and re-signed by ``pinserver renew`` from cron, so it gets its
own, shorter ones (warning under 5 days, failure under 2): a 30-day manifest renewed
weekly must not alert all the time, but one whose renewal has stopped must.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from pinserver.documents import Manifest, PinSet, Root, format_timestamp
from pinserver.pins import ChainCert, matching_pins

Status = Literal["ok", "warning", "failure"]
CheckKind = Literal["server", "root", "manifest", "pinset", "certificate", "live"]

_RANK: dict[Status, int] = {"ok": 0, "warning": 1, "failure": 2}


@dataclass(frozen=True)
class Thresholds:
    """Time left under which something is a warning or a failure."""

    warn: timedelta = timedelta(days=30)
    fail: timedelta = timedelta(days=15)
    manifest_warn: timedelta = timedelta(days=5)
    manifest_fail: timedelta = timedelta(days=2)

    def __post_init__(self) -> None:
        if self.fail > self.warn or self.manifest_fail > self.manifest_warn:
            raise ValueError("a failure threshold must not be longer than its warning threshold")


@dataclass(frozen=True)
class Unreachable:
    """A pinned host whose live chain could not be fetched (the reason, for the report)."""

    message: str


LiveChain = Sequence[ChainCert] | Unreachable


@dataclass(frozen=True)
class Check:
    """One line of the monitor's report."""

    kind: CheckKind
    subject: str
    status: Status
    message: str
    host: str | None = None
    expires: datetime | None = None
    days_left: float | None = None

    def to_dict(self) -> dict[str, object]:
        return {
            "kind": self.kind,
            "subject": self.subject,
            "status": self.status,
            "message": self.message,
            "host": self.host,
            "expires": format_timestamp(self.expires) if self.expires else None,
            "days_left": round(self.days_left, 2) if self.days_left is not None else None,
        }


@dataclass(frozen=True)
class MonitorReport:
    reference_time: datetime
    checks: tuple[Check, ...] = field(default_factory=tuple)

    @property
    def status(self) -> Status:
        worst: Status = "ok"
        for check in self.checks:
            if _RANK[check.status] > _RANK[worst]:
                worst = check.status
        return worst

    @property
    def exit_code(self) -> int:
        """0 ok, 1 warnings, 2 failures."""
        return _RANK[self.status]

    def counts(self) -> dict[Status, int]:
        out: dict[Status, int] = {"ok": 0, "warning": 0, "failure": 0}
        for check in self.checks:
            out[check.status] += 1
        return out

    def to_dict(self) -> dict[str, object]:
        return {
            "status": self.status,
            "exit_code": self.exit_code,
            "reference_time": format_timestamp(self.reference_time),
            "counts": dict(self.counts()),
            "checks": [c.to_dict() for c in self.checks],
        }


def _days(delta: timedelta) -> float:
    return delta.total_seconds() / 86400


def _expiry(
    kind: CheckKind,
    subject: str,
    expires: datetime,
    now: datetime,
    *,
    warn: timedelta,
    fail: timedelta,
    host: str | None = None,
    consequence: str,
) -> Check:
    left = expires - now
    when = format_timestamp(expires)
    if left <= timedelta(0):
        status: Status = "failure"
        message = f"{subject} expired at {when}: {consequence}"
    elif left < fail:
        status = "failure"
        message = f"{subject} expires at {when}, in {_days(left):.1f} days: {consequence}"
    elif left < warn:
        status = "warning"
        message = f"{subject} expires at {when}, in {_days(left):.1f} days"
    else:
        status = "ok"
        message = f"{subject} expires at {when}, in {_days(left):.0f} days"
    return Check(kind, subject, status, message, host, expires, _days(left))


def _live(pinset: PinSet, live: LiveChain | None, now: datetime, t: Thresholds) -> list[Check]:
    host = pinset.host
    subject = f"live chain of {host}"
    if live is None:
        return [Check("live", subject, "failure", f"{host} was not checked", host)]
    if isinstance(live, Unreachable):
        return [Check("live", subject, "failure", f"cannot check {host}: {live.message}", host)]
    matched = matching_pins(pinset, (c.spki_sha256 for c in live))
    checks: list[Check] = []
    if matched:
        where = ", ".join(f"{c.kind} {c.subject}" for c in live if c.spki_sha256 in matched)
        checks.append(Check("live", subject, "ok", f"{host} matches its pins ({where})", host))
    else:
        enforced = pinset.mode == "enforce" and now < pinset.expires
        served = ", ".join(f"{c.kind} {c.spki_sha256}" for c in live) or "nothing"
        checks.append(
            Check(
                "live",
                subject,
                "failure" if enforced else "warning",
                f"no pin of {host} is in the chain it serves ({served}): "
                + (
                    "clients enforcing these pins are refused now; rotate the pins"
                    " (`pinserver rotate`) or serve a pinned key"
                    if enforced
                    else f"clients only report it (mode {pinset.mode}, or the pin set expired)"
                ),
                host,
            )
        )
    for cert in live:
        checks.append(
            _expiry(
                "certificate",
                f"{cert.kind} certificate {cert.subject} of {host}",
                cert.not_after,
                now,
                warn=t.warn,
                fail=t.fail,
                host=host,
                consequence="renew it; if the key changes, put the new key's pin in place first",
            )
        )
    return checks


def server_failure(server: str, message: str, now: datetime) -> MonitorReport:
    """The report when the server's state cannot be fetched or does not verify: that is
    a failure to alert on, not a crash of the monitor."""
    return MonitorReport(
        reference_time=now,
        checks=(Check("server", server, "failure", message),),
    )


def evaluate(
    manifest: Manifest,
    root: Root,
    live_chains: Mapping[str, LiveChain],
    now: datetime,
    thresholds: Thresholds | None = None,
) -> MonitorReport:
    """Everything the monitor reports: root, manifest, then per host its pin set, live
    match and certificates.

    Args:
        manifest: the latest manifest, its signatures already verified.
        root: the newest verified root (the one clients judge manifests under).
        live_chains: per pinned host, its verified live chain (``describe_chain``) or
            :class:`Unreachable`; a host missing here is reported as not checked.
        now: the reference time (UTC-aware).
        thresholds: warning and failure thresholds (defaults: :class:`Thresholds`).
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware (UTC)")
    t = thresholds or Thresholds()
    checks = [
        _expiry(
            "root",
            f"root {root.version}",
            root.expires,
            now,
            warn=t.warn,
            fail=t.fail,
            consequence="clients accept no new manifest once it expires; the root holders"
            " must sign the next root (`pinserver root new`, `sign`, `publish`)",
        ),
        _expiry(
            "manifest",
            f"manifest {manifest.version}",
            manifest.expires,
            now,
            warn=t.manifest_warn,
            fail=t.manifest_fail,
            consequence="clients stop enforcing (ca-only) or keep stale pins (fail-closed);"
            " run `pinserver renew` and check its cron job",
        ),
    ]
    for pinset in manifest.pinsets:
        checks.append(
            _expiry(
                "pinset",
                f"pin set of {pinset.host}",
                pinset.expires,
                now,
                warn=t.warn,
                fail=t.fail,
                host=pinset.host,
                consequence="pins stop being enforced; publish the set with a later expires",
            )
        )
        checks.extend(_live(pinset, live_chains.get(pinset.host), now, t))
    return MonitorReport(reference_time=now, checks=tuple(checks))
