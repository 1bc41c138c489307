"""CLI commands for keys: ``keygen``."""

from __future__ import annotations

import re
from pathlib import Path

import click

from pinserver.cli._common import emit_json, read_passphrase
from pinserver.keys import PrivateKey, write_key_pair

_NAME_RE = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9._-]{0,99}\Z")


@click.command("keygen")
@click.argument("name")
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("."),
    show_default=True,
    help="Directory for NAME.key and NAME.pub (created 0700 if missing).",
)
@click.option(
    "--passphrase-env",
    metavar="VAR",
    help="Read the passphrase from environment variable VAR instead of prompting.",
)
@click.option(
    "--no-passphrase",
    is_flag=True,
    help="Write the private key unencrypted (demos and HSM-less tests only).",
)
@click.option("--json", "as_json", is_flag=True, help="Print keyid and paths as JSON.")
def keygen(
    name: str, directory: Path, passphrase_env: str | None, no_passphrase: bool, as_json: bool
) -> None:
    """Make an Ed25519 key pair NAME.key (PKCS#8, encrypted, mode 0600) and NAME.pub.

    Prints the keyid (hex SHA-256 of the public key) on stdout. Existing files are never
    overwritten. Give NAME.pub to whoever writes the root (`pinserver root new`); keep
    NAME.key on the holder's machine.

    \b
    Example:
      PASS=... pinserver keygen alice-root --dir keys --passphrase-env PASS
    """
    if not _NAME_RE.match(name):
        raise click.BadParameter(
            "use letters, digits, '.', '_' and '-' only (no paths; see --dir)",
            param_hint="NAME",
        )
    if passphrase_env and no_passphrase:
        raise click.UsageError("--passphrase-env and --no-passphrase exclude each other")
    passphrase: bytes | None = None
    if not no_passphrase:
        passphrase = read_passphrase(
            passphrase_env, prompt=f"Passphrase for {name}.key", confirm=True
        )
        if not passphrase:
            raise click.UsageError("the passphrase is empty; choose one, or pass --no-passphrase")
    if not directory.exists():
        directory.mkdir(parents=True, mode=0o700)
    key = PrivateKey.generate()
    private_path, public_path = write_key_pair(directory, name, key, passphrase)
    if as_json:
        emit_json(
            {
                "keyid": key.keyid,
                "private_key": str(private_path),
                "public_key": str(public_path),
                "encrypted": passphrase is not None,
            }
        )
        return
    click.echo(key.keyid)
    state = "encrypted" if passphrase is not None else "NOT encrypted"
    click.echo(f"wrote {private_path} ({state}, mode 0600) and {public_path}", err=True)


def register(group: click.Group) -> None:
    """Add this module's commands to the pinserver group."""
    group.add_command(keygen)
