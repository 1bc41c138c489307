"""What ``rotate``, ``renew`` and ``monitor`` share: the server's state, VERIFIED before
anything is built on it, publishing with confirmation, and showing a diff.

Two ways to trust what the server says:

* ``--root ROOT`` (recommended): the root chain is walked forward from your own copy of
  a root, one version at a time (SPEC section 4), exactly as a client does. A server
  that substituted its roots, or serves a manifest its root chain does not authorise,
  is caught.
* no ``--root``: the server's current root is checked against its own root threshold
  only. That proves the root is self-consistent, not that it is *yours*: a compromised
  server could present a root of its own making. It is enough to build the next
  version on (the server re-verifies every publication against its stored chain, and
  your signature only counts under the real root), but use ``--root`` where you can.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import click

from pinserver.cli._http import REASON_HEADER, ServerClient
from pinserver.diff import ManifestDiff, PinSetChange
from pinserver.documents import Pin, format_timestamp
from pinserver.envelope import Envelope
from pinserver.errors import FetchError, SignatureError, VerificationError
from pinserver.trust import (
    MAX_ROOT_ROTATIONS,
    VerifiedManifest,
    VerifiedRoot,
    verify_anchor_root,
    verify_manifest_signatures,
    verify_next_root,
)

CONFIRM_TIMEOUT = 30.0
_CONFIRM_POLL = 0.2


@dataclass
class ServerView:
    """The server's roots as far as they were verified, its current root, and its latest
    manifest (signatures checked; None when nothing is published yet)."""

    current: VerifiedRoot
    anchored: bool
    roots: dict[int, VerifiedRoot] = field(default_factory=dict)
    latest: VerifiedManifest | None = None

    @property
    def trust_note(self) -> str:
        if self.anchored:
            return f"root chain walked from your --root to root {self.current.version}"
        return (
            f"root {self.current.version} checked against its own threshold only"
            " (pass --root to check it is yours)"
        )


def read_anchor(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise click.FileError(str(path), hint=e.strerror) from e


def walk_roots(client: ServerClient, anchor: bytes) -> list[VerifiedRoot]:
    """The anchor, then the server's roots N+1, N+2... until 404, each verified against
    the one before (bounded like a client's walk)."""
    walked = [verify_anchor_root(anchor)]
    served = client.get_optional_bytes(f"/v1/roots/{walked[0].version}.json")
    if served is None:
        raise VerificationError(
            f"{client.base_url} has no root {walked[0].version}: it is not the server"
            " this root belongs to",
            code="root_missing",
        )
    if Envelope.from_bytes(served).payload_sha256 != walked[0].envelope.payload_sha256:
        raise VerificationError(
            f"{client.base_url} serves a root {walked[0].version} other than your --root:"
            " it is another deployment, or it has been tampered with",
            code="root_substituted",
        )
    for _ in range(MAX_ROOT_ROTATIONS):
        data = client.get_optional_bytes(f"/v1/roots/{walked[-1].version + 1}.json")
        if data is None:
            return walked
        walked.append(verify_next_root(walked[-1].root, data))
    raise VerificationError(f"more than {MAX_ROOT_ROTATIONS} root rotations", code="too_many_roots")


def _server_root(client: ServerClient, version: int) -> VerifiedRoot:
    data = client.get_optional_bytes(f"/v1/roots/{version}.json")
    if data is None:
        raise FetchError(f"{client.base_url} has no root {version}", http_status=404)
    verified = verify_anchor_root(data)
    if verified.version != version:
        raise VerificationError(
            f"{client.base_url}/v1/roots/{version}.json holds root {verified.version}",
            code="version_mismatch",
        )
    return verified


def fetch_server_view(client: ServerClient, anchor: bytes | None) -> ServerView:
    """Verified roots and the verified latest manifest (see the module docstring)."""
    if anchor is not None:
        walked = walk_roots(client, anchor)
        view = ServerView(walked[-1], True, {r.version: r for r in walked})
    else:
        version = client.health().get("root_version")
        if not isinstance(version, int) or version < 1:
            raise FetchError(
                f"{client.base_url}/healthz names no root; the server needs `pinserver init`"
            )
        current = _server_root(client, version)
        view = ServerView(current, False, {version: current})
    raw = client.get_optional_bytes("/v1/manifest.json")
    if raw is not None:
        view.latest = _verify_latest(client, view, raw)
    return view


def _verify_latest(client: ServerClient, view: ServerView, raw: bytes) -> VerifiedManifest:
    """The latest manifest under the newest root whose publisher threshold it meets
    (normally the current root; an older one right after a root rotation). The payload
    is parsed only once a signature check has passed."""
    first_error: SignatureError | None = None
    for version in range(view.current.version, 0, -1):
        root = view.roots.get(version)
        if root is None:
            if view.anchored:
                break  # older than the anchor: cannot be verified from it
            root = view.roots[version] = _server_root(client, version)
        try:
            verified = verify_manifest_signatures(root.root, raw)
        except SignatureError as e:
            first_error = first_error or e
            continue
        if verified.manifest.root_version > view.current.version:
            raise VerificationError(
                f"the latest manifest names root {verified.manifest.root_version}, newer"
                f" than the server's current root {view.current.version}",
                code="unknown_root_version",
            )
        return verified
    message = first_error.message if first_error else "no root to check it under"
    raise SignatureError(
        f"the server's latest manifest does not verify ({view.trust_note}): {message}"
    )


def publish_and_confirm(
    client: ServerClient,
    envelope: Envelope,
    *,
    reason: str | None,
    timeout: float = CONFIRM_TIMEOUT,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, object]:
    """POST the manifest, then poll ``/v1/manifest.json`` until the server serves it
    (every worker or replica may take a moment to see the new head)."""
    headers: dict[str, str | bytes] = {"Content-Type": "application/json"}
    if reason:
        headers[REASON_HEADER] = reason.encode("utf-8")
    answer = client.post_envelope("/v1/manifests", envelope.to_bytes(), headers=headers)
    deadline = time.monotonic() + timeout
    served_hash = "nothing"
    while True:
        raw = client.get_optional_bytes("/v1/manifest.json")
        if raw is not None:
            served_hash = Envelope.from_bytes(raw).payload_sha256
            if served_hash == envelope.payload_sha256:
                return {**answer, "confirmed": True}
        if time.monotonic() >= deadline:
            raise FetchError(
                f"published version {answer.get('version')}, but after {timeout:g} s"
                f" {client.base_url}/v1/manifest.json still serves payload {served_hash};"
                " check the server's replicas and caches before relying on it",
                code="not_confirmed",
            )
        sleep(_CONFIRM_POLL)


def confirm_or_abort(question: str, *, yes: bool) -> None:
    if yes:
        return
    if not click.confirm(question, default=False, err=True):
        raise click.exceptions.Abort


# --- showing differences ------------------------------------------------------------------


def _pin_text(pin: Pin) -> str:
    note = f" ({pin.note})" if pin.note else ""
    return f"{pin.sha256} {pin.role}{note}"


def _pinset_change_lines(change: PinSetChange) -> Iterable[str]:
    yield f"  ~ {change.host}"
    for pin in change.pins_added:
        yield f"      + pin {_pin_text(pin)}"
    for pin in change.pins_removed:
        yield f"      - pin {_pin_text(pin)}"
    for pin_change in change.pins_changed:
        yield f"      ~ pin {pin_change.old.sha256}: {_pin_text(pin_change.old).split(' ', 1)[1]}"
        yield f"                -> {_pin_text(pin_change.new).split(' ', 1)[1]}"
    if change.mode:
        yield f"      mode {change.mode[0]} -> {change.mode[1]}"
    if change.include_subdomains:
        yield (
            f"      include_subdomains {change.include_subdomains[0]} ->"
            f" {change.include_subdomains[1]}"
        )
    if change.expires:
        yield (
            f"      expires {format_timestamp(change.expires[0])} ->"
            f" {format_timestamp(change.expires[1])}"
        )


def diff_lines(diff: ManifestDiff) -> list[str]:
    """A manifest diff as text: hosts added (+), removed (-), changed (~) pin by pin."""
    before = f"manifest {diff.old_version}" if diff.old_version else "nothing"
    lines = [f"{before} -> manifest {diff.new_version}"]
    for pinset in diff.hosts_added:
        lines.append(f"  + {pinset.host} ({len(pinset.pins)} pins)")
        lines.extend(f"      + pin {_pin_text(p)}" for p in pinset.pins)
    for pinset in diff.hosts_removed:
        lines.append(f"  - {pinset.host} (its {len(pinset.pins)} pins are no longer enforced)")
    for change in diff.hosts_changed:
        lines.extend(_pinset_change_lines(change))
    for field_change in diff.fields_changed:
        lines.append(f"  {field_change.name}: {field_change.old} -> {field_change.new}")
    if diff.is_empty:
        lines.append("  (no pin changes)")
    return lines


def diff_dict(diff: ManifestDiff) -> dict[str, object]:
    """A manifest diff as JSON-ready data."""
    return {
        "old_version": diff.old_version,
        "new_version": diff.new_version,
        "hosts_added": [p.to_dict() for p in diff.hosts_added],
        "hosts_removed": [p.host for p in diff.hosts_removed],
        "hosts_changed": [
            {
                "host": c.host,
                "pins_added": [p.to_dict() for p in c.pins_added],
                "pins_removed": [p.to_dict() for p in c.pins_removed],
                "pins_changed": [
                    {"old": pc.old.to_dict(), "new": pc.new.to_dict()} for pc in c.pins_changed
                ],
                "mode": list(c.mode) if c.mode else None,
                "include_subdomains": list(c.include_subdomains) if c.include_subdomains else None,
                "expires": [format_timestamp(t) for t in c.expires] if c.expires else None,
            }
            for c in diff.hosts_changed
        ],
        "fields_changed": [
            {"name": f.name, "old": f.old, "new": f.new} for f in diff.fields_changed
        ],
    }
