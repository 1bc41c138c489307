"""The ``pinserver`` command: one click group, one module per area.

Every failure that pinserver raises on purpose is caught once, in :func:`main`,
and printed as what was wrong plus what to do, with exit code 1 (2 for usage).
"""

from __future__ import annotations

import logging
import sys

import click

from pinserver import __version__
from pinserver.cli._common import CliState, report_error
from pinserver.errors import PinserverError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="pinserver")
@click.option("--verbose", "-v", is_flag=True, help="Show tracebacks and debug logging.")
@click.pass_context
def cli(ctx: click.Context, verbose: bool) -> None:
    """pinserver: signed pin manifests for TLS certificate pinning.

    Keys and roots (keygen, root new, sign, verify), manifests (manifest new, lint,
    publish, rotate, renew), the service (init, serve, export, demo), operations
    (spki, monitor, history, drill) and the client (client poll).
    """
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING)
    ctx.obj = CliState(verbose=verbose)


def _register() -> None:
    # Each area module adds its commands to the group; imported here so that
    # ``pinserver --help`` lists everything.
    from pinserver.cli import (  # noqa: PLC0415
        audit,
        client,
        keys,
        manifests,
        ops,
        roots,
        rotation,
        server,
    )

    for module in (keys, roots, manifests, rotation, ops, audit, client, server):
        module.register(cli)


_register()


def main(argv: list[str] | None = None) -> None:
    """Entry point: the one place that turns a ``PinserverError`` into an exit code."""
    verbose = "--verbose" in (argv or sys.argv) or "-v" in (argv or sys.argv)
    try:
        # Non-standalone click returns ctx.exit(N)'s code instead of raising it.
        result = cli.main(args=argv, prog_name="pinserver", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(1)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except PinserverError as e:
        report_error(e, verbose=verbose)
        sys.exit(1)
    except OSError as e:
        # A file or directory the command could not read or write (permissions, a file
        # where a directory is expected, a full disk): a message, not a traceback.
        where = f"{e.filename}: " if e.filename else ""
        error = PinserverError(f"{where}{e.strerror or e}", code="file_error")
        error.__traceback__ = e.__traceback__
        report_error(error, verbose=verbose)
        sys.exit(1)
    sys.exit(result if isinstance(result, int) else 0)
