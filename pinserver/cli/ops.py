"""CLI commands for operations: ``spki``.

``spki`` shows every certificate of a chain with its pin-sha256 and says which to pin,
following the rules that keep pinning from bricking clients: the issuing intermediate
CA's key is the best primary pin; your own leaf key is good when you keep it across
renewals and hold a backup key; a leaf key that is re-generated at each renewal is
risky; a root CA key protects almost nothing.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import click
from cryptography.hazmat.primitives import serialization

from pinserver.cli._common import emit_json, utcnow
from pinserver.documents import format_timestamp
from pinserver.errors import FormatError
from pinserver.live import fetch_chain, parse_host_port
from pinserver.pins import ChainCert, describe_chain, load_pem_chain, spki_sha256_of_key

SHORT_LIVED_DAYS = 100
_PUBLIC_KEY_RE = re.compile(rb"-----BEGIN PUBLIC KEY-----.+?-----END PUBLIC KEY-----", re.DOTALL)


def recommendation(cert: ChainCert) -> tuple[str, str]:
    """(verdict, advice) for pinning ``cert``'s key: best, good, risky or wrong."""
    if cert.kind == "root":
        return (
            "wrong",
            "root CA key: every certificate this CA and its intermediates issue would match,"
            " which is almost no protection; pin the intermediate instead",
        )
    if cert.kind == "intermediate":
        return (
            "best",
            "issuing CA key: survives leaf renewals and re-keying; pin it as primary and add"
            " a backup pin for a key you hold in reserve (or a second CA)",
        )
    if cert.lifetime_days < SHORT_LIVED_DAYS:
        return (
            "risky",
            f"leaf key of a {cert.lifetime_days:.0f}-day certificate: automated renewal may"
            " replace the key and lock clients out; pin it only if you reuse the key across"
            " renewals, and always with a backup key",
        )
    return (
        "good",
        "leaf key: good when it is your own key, kept across renewals, with a backup key"
        " held in reserve as the second pin; risky if renewal makes a new key",
    )


def _cert_dict(cert: ChainCert) -> dict[str, Any]:
    verdict, advice = recommendation(cert)
    return {
        "position": cert.position,
        "kind": cert.kind,
        "subject": cert.subject,
        "issuer": cert.issuer,
        "not_before": format_timestamp(cert.not_before),
        "not_after": format_timestamp(cert.not_after),
        "key_type": cert.key_type,
        "pin_sha256": cert.spki_sha256,
        "recommendation": verdict,
        "advice": advice,
    }


def _public_keys(data: bytes) -> list[str]:
    """pin-sha256 of each bare ``PUBLIC KEY`` block: a reserve key for a backup pin."""
    pins = []
    for block in _PUBLIC_KEY_RE.findall(data):
        try:
            key = serialization.load_pem_public_key(block)
        except ValueError as e:
            raise FormatError(f"a PUBLIC KEY block does not parse: {e}", field="PEM") from e
        pins.append(spki_sha256_of_key(key))
    return pins


def _suggestion(chain: Sequence[ChainCert]) -> str:
    for cert in chain:
        if cert.kind == "intermediate":
            return (
                f"pin {cert.spki_sha256} (intermediate {cert.subject}) as primary, plus a backup"
                " pin for a reserve key (`pinserver spki reserve.pub` prints its pin)"
            )
    if chain and chain[0].kind == "leaf":
        return (
            "no intermediate in this chain: pin your own leaf key only if you keep it across"
            " renewals, with a reserve key as backup; or fetch the full chain the server sends"
        )
    return "no certificate here is a good primary pin"


def _print(chain: Sequence[ChainCert], key_pins: Sequence[str], source: str, now: datetime) -> None:
    click.echo(f"{source}: {len(chain)} certificate(s)")
    for cert in chain:
        verdict, advice = recommendation(cert)
        expired = " (EXPIRED)" if cert.not_after <= now else ""
        click.echo(f"[{cert.position}] {cert.kind}: {cert.subject}")
        click.echo(f"    issuer:     {cert.issuer}")
        click.echo(f"    not_after:  {format_timestamp(cert.not_after)}{expired}")
        click.echo(f"    key:        {cert.key_type}")
        click.echo(f"    pin-sha256: {cert.spki_sha256}")
        click.echo(f"    pin it?     {verdict}: {advice}")
    for pin in key_pins:
        click.echo(f"public key: pin-sha256 {pin} (a reserve key is the ideal backup pin)")
    if chain:
        click.echo(f"suggestion: {_suggestion(chain)}")


@click.command("spki")
@click.argument("pem", required=False, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--connect", metavar="HOST[:PORT]", help="Fetch the chain a live server presents.")
@click.option("--servername", help="SNI and certificate name for --connect (default: HOST).")
@click.option("--cafile", type=click.Path(exists=True, dir_okay=False), help="CA bundle to verify.")
@click.option(
    "--insecure", is_flag=True, help="With --connect, show the chain even if it does not verify."
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True, max=600),
    default=10.0,
    show_default=True,
    help="Seconds.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the chain as JSON.")
def spki_command(
    *,
    pem: Path | None,
    connect: str | None,
    servername: str | None,
    cafile: str | None,
    insecure: bool,
    timeout: float,
    as_json: bool,
) -> None:
    """Show every certificate of a chain with its pin-sha256, and which one to pin.

    PEM may hold certificates (leaf first) and bare public keys (a reserve key for the
    backup pin). With --connect the chain is the one the server presents, after the
    handshake verified it (system CAs or --cafile; --insecure to look anyway).

    \b
    Examples:
      pinserver spki chain.pem
      pinserver spki --connect updates.example.com:443 --json
    """
    key_pins: list[str] = []
    if (pem is None) == (connect is None):
        raise click.UsageError("give a PEM file or --connect HOST[:PORT], not both")
    if connect is not None:
        try:
            host, port = parse_host_port(connect)
        except ValueError as e:
            raise click.BadParameter(str(e), param_hint="--connect") from e
        certs = fetch_chain(
            host, port, servername=servername, cafile=cafile, timeout=timeout, verify=not insecure
        )
        source = f"{host}:{port}"
    elif pem is not None:
        data = pem.read_bytes()
        try:
            certs = load_pem_chain(data) if b"-----BEGIN CERTIFICATE-----" in data else []
        except ValueError as e:
            raise FormatError(f"{pem}: certificates do not parse: {e}", field="PEM") from e
        key_pins = _public_keys(data)
        if not certs and not key_pins:
            raise FormatError(f"{pem} holds no PEM certificate or public key", field="PEM")
        source = str(pem)
    chain = describe_chain(certs)
    if as_json:
        emit_json(
            {
                "source": source,
                "chain": [_cert_dict(c) for c in chain],
                "public_keys": [{"pin_sha256": p} for p in key_pins],
                "suggestion": _suggestion(chain) if chain else None,
            }
        )
        return
    _print(chain, key_pins, source, utcnow())


def register(group: click.Group) -> None:
    """Add this module's commands to the pinserver group."""
    group.add_command(spki_command)
