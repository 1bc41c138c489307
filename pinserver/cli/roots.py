"""CLI commands for roots and signatures: ``root new``, ``sign`` and ``verify``.

``verify`` takes its verdict from :mod:`pinserver.trust` (the same functions the server
and client use) and only adds the explanation: every signature's fate from
``envelope.check_signatures``, the thresholds, and the validity window.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import click

from pinserver import trust
from pinserver.authoring import build_root, read_unverified_document, unsigned_envelope
from pinserver.cli._common import (
    emit_json,
    parse_expiry,
    read_envelope_file,
    read_passphrase,
    utcnow,
    write_file_atomically,
)
from pinserver.documents import Manifest, Role, Root, format_timestamp, parse_timestamp
from pinserver.envelope import (
    MANIFEST_TYPE,
    ROOT_TYPE,
    Envelope,
    SignatureStatus,
    check_signatures,
    sign,
)
from pinserver.errors import FormatError, KeyFileError, PinserverError
from pinserver.keys import (
    PrivateKey,
    PublicKey,
    is_encrypted_pem,
    load_private_key,
    load_public_key,
)

_EXISTING_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)
_STATUS_WORDS = {
    SignatureStatus.VALID: "valid, counted",
    SignatureStatus.INVALID: "INVALID signature (wrong key or altered payload), ignored",
    SignatureStatus.UNAUTHORISED: "not a key of this role, ignored",
    SignatureStatus.DUPLICATE: "second signature by the same key, ignored",
}


# --- root new -------------------------------------------------------------------------


@click.group("root")
def root_group() -> None:
    """Root documents: the offline k-of-n trust anchor (`root new`)."""


@root_group.command("new")
@click.option("--version", "version", type=click.IntRange(min=1), default=1, show_default=True)
@click.option(
    "--root-key",
    "root_keys",
    multiple=True,
    required=True,
    type=_EXISTING_FILE,
    metavar="PUB",
    help="Public key file (.pub) of a root key holder; repeat for each.",
)
@click.option("--root-threshold", type=int, required=True, metavar="T")
@click.option(
    "--publisher-key",
    "publisher_keys",
    multiple=True,
    required=True,
    type=_EXISTING_FILE,
    metavar="PUB",
    help="Public key file (.pub) of a publisher; repeat for each.",
)
@click.option("--publisher-threshold", type=int, required=True, metavar="T")
@click.option(
    "--expires", default="365d", show_default=True, help="Duration (365d) or 2027-12-01T00:00:00Z."
)
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True)
@click.option("--json", "as_json", is_flag=True, help="Print a summary as JSON.")
def root_new(
    *,
    version: int,
    root_keys: Sequence[Path],
    root_threshold: int,
    publisher_keys: Sequence[Path],
    publisher_threshold: int,
    expires: str,
    output: Path,
    as_json: bool,
) -> None:
    """Write an unsigned root envelope (empty signatures list).

    Each root key holder then adds a signature with `pinserver sign`, one after another.
    Root N+1 needs a threshold of root N's root keys AND of its own.

    \b
    Example (2-of-3 root, 1-of-1 publisher):
      pinserver root new --version 1 \\
        --root-key a.pub --root-key b.pub --root-key c.pub --root-threshold 2 \\
        --publisher-key pub.pub --publisher-threshold 1 --expires 365d -o root-1.json
    """
    now = utcnow()
    root = build_root(
        version=version,
        root_keys=[load_public_key(p) for p in root_keys],
        root_threshold=root_threshold,
        publisher_keys=[load_public_key(p) for p in publisher_keys],
        publisher_threshold=publisher_threshold,
        issued_at=now,
        expires=parse_expiry(expires, now=now),
    )
    write_file_atomically(output, unsigned_envelope(root).to_bytes(), overwrite=False)
    summary = _root_summary(root)
    if as_json:
        emit_json({"file": str(output), **summary})
        return
    click.echo(
        f"wrote {output}: unsigned root {root.version}, root role"
        f" {summary['root_role']['threshold']}-of-{len(root.root_role.keyids)},"
        f" publisher role {summary['publisher_role']['threshold']}-of-"
        f"{len(root.publisher_role.keyids)}, expires {summary['expires']}"
    )
    click.echo(
        f"next: each root key holder runs `pinserver sign {output} --key THEIR.key`", err=True
    )


def _root_summary(root: Root) -> dict[str, Any]:
    return {
        "version": root.version,
        "issued_at": format_timestamp(root.issued_at),
        "expires": format_timestamp(root.expires),
        "root_role": {"keyids": list(root.root_role.keyids), "threshold": root.root_role.threshold},
        "publisher_role": {
            "keyids": list(root.publisher_role.keyids),
            "threshold": root.publisher_role.threshold,
        },
    }


# --- sign -----------------------------------------------------------------------------


def _load_signing_key(path: Path, passphrase_env: str | None) -> PrivateKey:
    try:
        data = path.read_bytes()
    except OSError as e:
        raise KeyFileError(f"cannot read private key {path}: {e.strerror}") from e
    if b"PRIVATE KEY" not in data:
        raise KeyFileError(f"{path} is not a private key file (pass NAME.key, not NAME.pub)")
    passphrase = None
    if is_encrypted_pem(data):
        passphrase = read_passphrase(passphrase_env, prompt=f"Passphrase for {path}")
    return load_private_key(path, passphrase)


def _describe(document: Root | Manifest) -> str:
    if isinstance(document, Root):
        return (
            f"root {document.version} (root role {document.root_role.threshold}-of-"
            f"{len(document.root_role.keyids)}, expires {format_timestamp(document.expires)})"
        )
    return (
        f"manifest {document.version} under root {document.root_version}"
        f" ({len(document.pinsets)} pin set(s), expires {format_timestamp(document.expires)})"
    )


def _authorisation_warnings(
    keyid: str, document: Root | Manifest, trusted: Root | None
) -> list[str]:
    """Why this key's signature might not count, as far as we can tell offline."""
    warnings = []
    if isinstance(document, Root):
        if keyid not in document.root_role.keyids:
            if document.version == 1:
                counts = "root 1 has no previous root, so this signature will not count"
            else:
                counts = (
                    f"it counts only if it is in root {document.version - 1}'s root role"
                    " (check with --root)"
                )
            warnings.append(
                f"key {keyid} is not in the root role of root {document.version} itself; {counts}"
            )
        if (
            trusted is not None
            and trusted.version == document.version - 1
            and keyid not in trusted.root_role.keyids
        ):
            warnings.append(
                f"key {keyid} is not in the root role of root {trusted.version} (--root);"
                f" root {document.version} also needs a threshold of those keys"
            )
    elif trusted is not None and keyid not in trusted.publisher_role.keyids:
        warnings.append(
            f"key {keyid} is not a publisher key of root {trusted.version} (--root);"
            " its signature will not count"
        )
    elif trusted is None:
        warnings.append(
            "cannot tell whether this key is a publisher key without --root ROOT;"
            " run `pinserver verify` after signing"
        )
    return warnings


@click.command("sign")
@click.argument("file", type=_EXISTING_FILE)
@click.option(
    "--key",
    "key_path",
    required=True,
    type=_EXISTING_FILE,
    metavar="KEY",
    help="Your private key file (NAME.key).",
)
@click.option("--passphrase-env", metavar="VAR", help="Read the key's passphrase from VAR.")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the signed envelope here instead of replacing FILE.",
)
@click.option(
    "--root",
    "root_path",
    type=_EXISTING_FILE,
    help="A trusted root, to warn when your key is not authorised by it.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def sign_command(
    *,
    file: Path,
    key_path: Path,
    passphrase_env: str | None,
    output: Path | None,
    root_path: Path | None,
    as_json: bool,
) -> None:
    """Add one signature to a root or manifest envelope (in place, atomically).

    k-of-n holders sign one after another, each on their own machine. A second
    signature by the same key is refused. The document is checked before signing, and
    you are warned when your key is not one the document's role will count.

    \b
    Example:
      PASS=... pinserver sign root-1.json --key alice-root.key --passphrase-env PASS
    """
    envelope = read_envelope_file(file)
    document = read_unverified_document(envelope)
    key = _load_signing_key(key_path, passphrase_env)
    if key.keyid in envelope.keyids:
        raise PinserverError(
            f"{file} is already signed by key {key.keyid} ({key_path})", code="already_signed"
        )
    trusted = _load_root_leniently(root_path)[1] if root_path else None
    warnings = _authorisation_warnings(key.keyid, document, trusted)
    signed = sign(envelope, key)
    target = output or file
    write_file_atomically(target, signed.to_bytes(), overwrite=output is None)
    if as_json:
        emit_json(
            {
                "file": str(target),
                "keyid": key.keyid,
                "signatures": len(signed.signatures),
                "document": _describe(document),
                "warnings": warnings,
            }
        )
        return
    for warning in warnings:
        click.echo(f"warning: {warning}", err=True)
    click.echo(
        f"signed {_describe(document)} with {key.keyid}; {target} now has"
        f" {len(signed.signatures)} signature(s)"
    )


# --- verify ---------------------------------------------------------------------------


@dataclass
class _Check:
    """One threshold rule and every signature's fate under it."""

    rule: str
    threshold: int
    signatures: list[tuple[str, SignatureStatus]]

    @property
    def counted(self) -> int:
        return sum(1 for _k, st in self.signatures if st is SignatureStatus.VALID)

    @property
    def met(self) -> bool:
        return self.counted >= self.threshold

    def to_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "threshold": self.threshold,
            "counted": self.counted,
            "met": self.met,
            "signatures": [{"keyid": k, "status": str(st)} for k, st in self.signatures],
        }


@dataclass
class _Report:
    kind: str
    version: int | None
    payload_sha256: str
    trusted_root: int
    reference_time: datetime
    checks: list[_Check] = field(default_factory=list)
    window: dict[str, Any] | None = None
    error: PinserverError | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "valid": self.error is None,
            "kind": self.kind,
            "version": self.version,
            "payload_sha256": self.payload_sha256,
            "trusted_root": self.trusted_root,
            "reference_time": format_timestamp(self.reference_time),
            "checks": [c.to_dict() for c in self.checks],
            "window": self.window,
            "error": self.error.to_dict() if self.error else None,
        }


def _check(envelope: Envelope, rule: str, keys: Mapping[str, PublicKey], role: Role) -> _Check:
    statuses = check_signatures(envelope, keys=keys, authorised=role.keyids)
    return _Check(rule=rule, threshold=role.threshold, signatures=statuses)


def _span(delta: timedelta) -> str:
    seconds = int(abs(delta.total_seconds()))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    return f"{days}d {hours}h" if days else f"{hours}h {rest // 60}m"


def _window(start_name: str, start: datetime, end: datetime, now: datetime) -> dict[str, Any]:
    # Only a manifest's not_before binds (with the clients' default skew); a root's
    # issued_at is informational.
    if start_name == "not_before" and start > now + trust.DEFAULT_SKEW:
        state, note = "not_yet_valid", f"valid only in {_span(start - now)}"
    elif now >= end:
        state, note = "expired", f"expired {_span(now - end)} ago"
    else:
        state, note = "valid", f"expires in {_span(end - now)}"
    return {
        start_name: format_timestamp(start),
        "expires": format_timestamp(end),
        "state": state,
        "note": note,
    }


def _load_root_leniently(path: Path) -> tuple[Envelope, Root]:
    """ROOT's envelope and document, before its own signatures are judged."""
    envelope = read_envelope_file(path)
    if envelope.payload_type != ROOT_TYPE:
        raise FormatError(
            f"{path} is not a root envelope (payloadType {envelope.payload_type!r})",
            code="wrong_payload_type",
        )
    return envelope, Root.from_bytes(envelope.payload)


def _trusted_root(path: Path) -> Root:
    try:
        return trust.verify_anchor_root(read_envelope_file(path)).root
    except PinserverError as e:
        e.message = (
            f"--root {path} is not a valid trusted root: {e.message}"
            f" (run `pinserver verify {path} --root {path}` to see why)"
        )
        e.args = (e.message,)
        raise


def _verify_manifest(envelope: Envelope, root: Root, now: datetime) -> _Report:
    document: Manifest | None = None
    try:
        document = Manifest.from_bytes(envelope.payload)
    except FormatError:
        document = None  # reported through the verdict below, after the signatures
    report = _Report(
        kind="manifest",
        version=document.version if document else None,
        payload_sha256=envelope.payload_sha256,
        trusted_root=root.version,
        reference_time=now,
    )
    report.checks.append(
        _check(
            envelope, f"publisher threshold of root {root.version}", root.keys, root.publisher_role
        )
    )
    if document is not None:
        report.window = _window("not_before", document.not_before, document.expires, now)
        report.window["root_version"] = document.root_version
    try:
        trust.accept_manifest(root, envelope, floor=None, reference_time=now)
    except PinserverError as e:
        report.error = e
    return report


def _verify_root(envelope: Envelope, root_path: Path, now: datetime) -> _Report:
    trusted_envelope, trusted_doc = _load_root_leniently(root_path)
    document: Root | None = None
    try:
        document = Root.from_bytes(envelope.payload)
    except FormatError:
        document = None
    same = envelope.payload == trusted_envelope.payload
    report = _Report(
        kind="root",
        version=document.version if document else None,
        payload_sha256=envelope.payload_sha256,
        trusted_root=trusted_doc.version,
        reference_time=now,
    )
    try:
        if same:
            if document is not None:
                report.checks.append(
                    _check(
                        envelope,
                        f"root {document.version}'s own root role threshold",
                        document.keys,
                        document.root_role,
                    )
                )
            verified = trust.verify_anchor_root(envelope)
        else:
            trusted = _trusted_root(root_path)
            report.checks.append(
                _check(
                    envelope,
                    f"root role threshold of trusted root {trusted.version}",
                    trusted.keys,
                    trusted.root_role,
                )
            )
            if document is not None:
                report.checks.append(
                    _check(
                        envelope,
                        f"root {document.version}'s own root role threshold",
                        document.keys,
                        document.root_role,
                    )
                )
            verified = trust.verify_next_root(trusted, envelope)
        trust.verify_root_fresh(verified.root, now)
    except PinserverError as e:
        report.error = e
    if document is not None:
        report.window = _window("issued_at", document.issued_at, document.expires, now)
    return report


def _print_report(report: _Report, file: Path, root_path: Path) -> None:
    title = f"{report.kind} {report.version if report.version is not None else '(unreadable)'}"
    click.echo(f"{file}: {title}, payload sha256 {report.payload_sha256}")
    click.echo(f"checked against root {report.trusted_root} ({root_path})")
    for check in report.checks:
        verdict = "met" if check.met else "NOT MET"
        click.echo(f"- {check.rule}: {check.counted} of {check.threshold} required -> {verdict}")
        if not check.signatures:
            click.echo("    (no signatures)")
        for keyid, status in check.signatures:
            click.echo(f"    {keyid}  {_STATUS_WORDS[status]}")
    if report.window:
        start_name = "not_before" if "not_before" in report.window else "issued_at"
        click.echo(
            f"- validity: {start_name} {report.window[start_name]}, expires"
            f" {report.window['expires']}; at {format_timestamp(report.reference_time)}:"
            f" {report.window['state']} ({report.window['note']})"
        )
    if report.error is None:
        click.echo("VALID")
    else:
        click.echo(f"INVALID [{report.error.code}]: {report.error.message}")


@click.command("verify")
@click.argument("file", type=_EXISTING_FILE)
@click.option(
    "--root",
    "root_path",
    required=True,
    type=_EXISTING_FILE,
    help="The trusted root: for a manifest, the root it is published under; for root N+1,"
    " root N; FILE itself to check a root's own threshold.",
)
@click.option("--at", "at", help="Judge at this time (2026-12-03T12:00:00Z) instead of now.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.pass_context
def verify_command(
    ctx: click.Context, *, file: Path, root_path: Path, at: str | None, as_json: bool
) -> None:
    """Check a root or manifest envelope against a trusted root and say exactly why it
    fails: which keys signed, which counted, the threshold, the validity window.

    Exit status 0 when valid, 1 when not.

    \b
    Examples:
      pinserver verify manifest-7.json --root root-1.json
      pinserver verify root-2.json --root root-1.json     # rotation rule, SPEC 4
      pinserver verify root-1.json --root root-1.json     # its own threshold
    """
    try:
        now = utcnow() if at is None else parse_timestamp(at, field="--at")
    except FormatError as e:
        raise click.BadParameter(e.message, param_hint="--at") from e
    envelope = read_envelope_file(file)
    if envelope.payload_type == MANIFEST_TYPE:
        report = _verify_manifest(envelope, _trusted_root(root_path), now)
    elif envelope.payload_type == ROOT_TYPE:
        report = _verify_root(envelope, root_path, now)
    else:
        raise FormatError(
            f"{file}: payloadType {envelope.payload_type!r} is neither a root nor a manifest",
            code="wrong_payload_type",
        )
    if as_json:
        emit_json({"file": str(file), **report.to_dict()})
    else:
        _print_report(report, file, root_path)
    if report.error is not None:
        ctx.exit(1)


def register(group: click.Group) -> None:
    """Add this module's commands to the pinserver group."""
    group.add_command(root_group)
    group.add_command(sign_command)
    group.add_command(verify_command)
