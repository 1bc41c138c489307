"""Operational lint for pin manifests (SPEC section 10). Pure: no network, no clock.

Pinning fails in practice through operations, not cryptography: a forgotten
backup pin, a pinned leaf that Let's Encrypt rotates every 90 days, a manifest
that outlives its root. :func:`lint_manifest` turns those risks into
:class:`Finding` objects; ``error`` findings refuse publication unless forced
(the CLI records the reason), ``warning`` findings are advice.

Live chains (what a host serves now) are passed in by the caller as
:class:`pinserver.pins.ChainCert` lists from :func:`pinserver.pins.describe_chain`;
the rules that need them are skipped for hosts without one.

Codes, in the order they are reported:

* ``backup_pin_required`` (error) -- fewer than 2 pins or no ``backup`` pin;
  one finding per offending host, from the raw JSON, before strict parsing.
* any :class:`~pinserver.errors.FormatError` code (error) -- the first schema
  violation strict parsing finds (``invalid_document``, ``too_many_pins``, ...).
* ``expires_after_root`` (error) -- the manifest outlives the root it is signed under.
* ``pin_not_in_live_chain`` (error) -- no pin of the host's set is in its live chain.
* ``live_host_not_pinned`` (warning) -- a live chain was given for a host no pin set covers.
* ``backup_in_live_chain`` (warning) -- a ``backup`` pin is in the live chain.
* ``pins_root_ca`` (warning) -- a pin is the key of the self-signed root of the live chain.
* ``short_lived_leaf_only`` (warning) -- the only pinned key in the live chain is a
  leaf whose certificate lives under 100 days.
* ``single_ca`` (warning) -- every pin is a CA key of the live chain (see :func:`_lint_single_ca`).
* ``pinset_expiring_soon`` / ``manifest_expiring_soon`` (warning) -- within 14 days
  of ``reference_time`` (or already past).
* ``poll_interval_too_long`` (warning) -- ``poll_interval`` over a tenth of the
  manifest's lifetime (``expires - not_before``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from pinserver._strictjson import loads_object
from pinserver.documents import (
    MIN_PINS_PER_SET,
    Manifest,
    PinSet,
    Root,
    format_timestamp,
)
from pinserver.envelope import MANIFEST_TYPE, Envelope
from pinserver.errors import FormatError
from pinserver.pins import ChainCert, find_pinset

Severity = Literal["error", "warning"]

EXPIRY_WARNING = timedelta(days=14)
SHORT_LIVED_LEAF_DAYS = 100
POLL_INTERVAL_FRACTION = 10


@dataclass(frozen=True)
class Finding:
    """One lint result. ``host`` is None for findings about the whole manifest."""

    severity: Severity
    code: str
    message: str
    host: str | None = None

    def to_dict(self) -> dict[str, object]:
        return {
            "severity": self.severity,
            "code": self.code,
            "message": self.message,
            "host": self.host,
        }


def has_errors(findings: Iterable[Finding]) -> bool:
    """True when any finding is an error (publication needs ``--force``)."""
    return any(f.severity == "error" for f in findings)


def _error(code: str, message: str, host: str | None = None) -> Finding:
    return Finding("error", code, message, host)


def _warning(code: str, message: str, host: str | None = None) -> Finding:
    return Finding("warning", code, message, host)


def _backup_pin_message(host: str, pin_count: int, backup_count: int) -> str:
    where = host or "a pin set without a host"
    if pin_count < MIN_PINS_PER_SET:
        return (
            f"{where} has {pin_count} pin(s); every pin set needs at least {MIN_PINS_PER_SET}"
            " pins, one of them a backup, so that losing or replacing one key does not lock"
            " every client out"
        )
    return (
        f"{where} has {pin_count} pins but none is a backup; add the hash of a key you hold"
        " in reserve (role backup), so you can move to it when the current key must go"
    )


def _backup_findings_raw(obj: Mapping[str, Any]) -> list[Finding]:
    """The backup-pin rule on the raw JSON, tolerant of everything else being wrong,
    so that every offending host is named even when strict parsing stops early."""
    findings: list[Finding] = []
    raw_sets = obj.get("pinsets")
    if not isinstance(raw_sets, list):
        return findings
    for raw_set in raw_sets:
        if not isinstance(raw_set, dict) or not isinstance(raw_set.get("pins"), list):
            continue
        host = raw_set.get("host")
        host_text = host if isinstance(host, str) else ""
        pins = raw_set["pins"]
        backups = sum(1 for p in pins if isinstance(p, dict) and p.get("role") == "backup")
        if len(pins) < MIN_PINS_PER_SET or backups == 0:
            findings.append(
                _error(
                    "backup_pin_required",
                    _backup_pin_message(host_text, len(pins), backups),
                    host_text or None,
                )
            )
    return findings


def _backup_findings(manifest: Manifest) -> list[Finding]:
    findings = []
    for pinset in manifest.pinsets:
        backups = sum(1 for p in pinset.pins if p.role == "backup")
        if len(pinset.pins) < MIN_PINS_PER_SET or backups == 0:
            findings.append(
                _error(
                    "backup_pin_required",
                    _backup_pin_message(pinset.host, len(pinset.pins), backups),
                    pinset.host,
                )
            )
    return findings


def _parse(manifest_payload: bytes | Manifest) -> tuple[Manifest | None, list[Finding]]:
    """Backup-pin findings first, then strict parsing; a FormatError becomes one finding."""
    if isinstance(manifest_payload, Manifest):
        findings = _backup_findings(manifest_payload)
        payload = manifest_payload.to_bytes()
    else:
        payload = manifest_payload
        try:
            findings = _backup_findings_raw(loads_object(payload, what="manifest"))
        except FormatError as e:
            return None, [_error(e.code, e.message)]
    try:
        manifest = Manifest.from_bytes(payload)
    except FormatError as e:
        if e.code == "backup_pin_required" and findings:
            return None, findings  # already said, in plainer words and for every host
        return None, [*findings, _error(e.code, e.message)]
    return manifest, findings


def _expiry_warning(
    code: str, what: str, expires: datetime, reference_time: datetime, host: str | None
) -> Finding | None:
    left = expires - reference_time
    if left >= EXPIRY_WARNING:
        return None
    when = format_timestamp(expires)
    if left <= timedelta(0):
        return _warning(code, f"{what} expired at {when}", host)
    return _warning(
        code, f"{what} expires at {when}, in {_days(left)}; renew it well before then", host
    )


def _days(delta: timedelta) -> str:
    days = delta.total_seconds() / 86400
    return f"{days:.1f} days"


def _lint_live_chain(pinset: PinSet, chain: Sequence[ChainCert], host: str) -> list[Finding]:
    """Rules that compare a pin set with what ``host`` serves now."""
    findings: list[Finding] = []
    by_hash: dict[str, list[ChainCert]] = {}
    for cert in chain:
        by_hash.setdefault(cert.spki_sha256, []).append(cert)
    matched = [cert for cert in chain if cert.spki_sha256 in pinset.hashes]
    if not matched:
        served = ", ".join(f"{c.kind} {c.spki_sha256}" for c in chain) or "no certificate"
        findings.append(
            _error(
                "pin_not_in_live_chain",
                f"no pin of {pinset.host} matches the chain {host} serves now ({served});"
                " publishing this would lock clients out of the host",
                host,
            )
        )
    for pin in pinset.pins:
        if pin.role == "backup" and pin.sha256 in by_hash:
            kinds = "/".join(sorted({c.kind for c in by_hash[pin.sha256]}))
            findings.append(
                _warning(
                    "backup_in_live_chain",
                    f"backup pin {pin.sha256} of {pinset.host} is the {kinds} key {host} serves"
                    " now, so it is no backup: it fails together with the primary; use a key"
                    " held in reserve",
                    host,
                )
            )
    for cert in matched:
        if cert.kind == "root":
            findings.append(
                _warning(
                    "pins_root_ca",
                    f"{pinset.host} pins the root CA {cert.subject}: any certificate that CA"
                    " or its intermediates issue will match, which is almost no protection;"
                    " pin the leaf or intermediate key",
                    host,
                )
            )
    matched_positions = {cert.position for cert in matched}
    leaf = chain[0] if chain else None
    if (
        leaf is not None
        and leaf.kind == "leaf"
        and matched_positions == {0}
        and leaf.lifetime_days < SHORT_LIVED_LEAF_DAYS
    ):
        findings.append(
            _warning(
                "short_lived_leaf_only",
                f"{pinset.host} pins only the leaf key of {host}, whose certificate lives"
                f" {leaf.lifetime_days:.0f} days; automated renewal (Let's Encrypt style) may"
                " change the key and lock clients out: also pin the intermediate, or renew"
                " with the backup key",
                host,
            )
        )
    findings.extend(_lint_single_ca(pinset, chain, host))
    return findings


def _lint_single_ca(pinset: PinSet, chain: Sequence[ChainCert], host: str) -> list[Finding]:
    """``single_ca``: every pin of the set is the key of a CA certificate (position > 0)
    in the host's live chain. A live chain is one issuer path, so then only that CA
    hierarchy can ever issue a matching certificate: there is no way to move to another
    CA without a new manifest reaching every client first. A pin outside the live chain
    (a reserve key, another CA) or a pinned leaf key (which any CA can certify again)
    is a migration path, so either one silences the warning."""
    ca_hashes = {c.spki_sha256 for c in chain if c.position > 0 and c.is_ca}
    if not pinset.hashes or not pinset.hashes <= ca_hashes:
        return []
    issuers = sorted({c.subject for c in chain if c.spki_sha256 in pinset.hashes})
    return [
        _warning(
            "single_ca",
            f"every pin of {pinset.host} is a CA key of the chain {host} serves now"
            f" ({'; '.join(issuers)}): no other CA can issue a matching certificate; add a"
            " backup pin for a key you hold in reserve or for a second CA",
            host,
        )
    ]


def lint_manifest(
    manifest_payload: bytes | Manifest,
    *,
    root: Root | None,
    reference_time: datetime,
    live_chains: Mapping[str, Sequence[ChainCert]] | None = None,
) -> list[Finding]:
    """Every SPEC section 10 finding for a manifest payload (or parsed manifest).

    Args:
        manifest_payload: the manifest payload bytes exactly as they will be signed,
            or a :class:`Manifest`.
        root: the root the manifest will be published under (``expires_after_root``
            is skipped without one).
        reference_time: "now" for the expiry rules (UTC-aware).
        live_chains: per host, the chain it serves now (leaf first); hosts without a
            chain skip the live-chain rules.

    Returns:
        Findings, backup-pin errors first, then other errors, then warnings.
    """
    if reference_time.tzinfo is None:
        raise ValueError("reference_time must be timezone-aware (UTC)")
    manifest, findings = _parse(manifest_payload)
    if manifest is None:
        return findings
    errors: list[Finding] = []
    warnings: list[Finding] = []
    if root is not None and manifest.expires > root.expires:
        errors.append(
            _error(
                "expires_after_root",
                f"the manifest expires at {format_timestamp(manifest.expires)}, after root"
                f" {root.version} ({format_timestamp(root.expires)}); clients stop accepting"
                " manifests when the root expires, so shorten the manifest or renew the root",
            )
        )
    for host, chain in (live_chains or {}).items():
        pinset = find_pinset(manifest.pinsets, host)
        if pinset is None:
            warnings.append(
                _warning(
                    "live_host_not_pinned",
                    f"a live chain was given for {host}, but no pin set covers it",
                    host,
                )
            )
            continue
        for finding in _lint_live_chain(pinset, chain, host):
            (errors if finding.severity == "error" else warnings).append(finding)
    for pinset in manifest.pinsets:
        warning = _expiry_warning(
            "pinset_expiring_soon",
            f"the pin set of {pinset.host}",
            pinset.expires,
            reference_time,
            pinset.host,
        )
        if warning is not None:
            warnings.append(warning)
    warning = _expiry_warning(
        "manifest_expiring_soon", "the manifest", manifest.expires, reference_time, None
    )
    if warning is not None:
        warnings.append(warning)
    lifetime = manifest.expires - manifest.not_before
    if manifest.poll_interval * POLL_INTERVAL_FRACTION > lifetime.total_seconds():
        warnings.append(
            _warning(
                "poll_interval_too_long",
                f"poll_interval is {manifest.poll_interval} s, over a tenth of the manifest's"
                f" lifetime ({_days(lifetime)}): clients may poll too rarely to pick up the"
                " next manifest before this one expires",
            )
        )
    return [*findings, *errors, *warnings]


def lint_envelope(
    data: bytes | Envelope,
    *,
    root: Root | None,
    reference_time: datetime,
    live_chains: Mapping[str, Sequence[ChainCert]] | None = None,
) -> list[Finding]:
    """:func:`lint_manifest` for a (signed or still unsigned) manifest envelope.

    A malformed envelope or one that is not a manifest is a single error finding;
    signatures are not checked here (``pinserver verify`` does that).
    """
    try:
        envelope = data if isinstance(data, Envelope) else Envelope.from_bytes(data)
    except FormatError as e:
        return [_error(e.code, e.message)]
    if envelope.payload_type != MANIFEST_TYPE:
        return [
            _error(
                "wrong_payload_type",
                f"payloadType is {envelope.payload_type!r}; lint checks manifests"
                f" ({MANIFEST_TYPE!r})",
            )
        ]
    return lint_manifest(
        envelope.payload, root=root, reference_time=reference_time, live_chains=live_chains
    )
