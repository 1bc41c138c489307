"""The service commands: ``init``, ``serve``, ``export`` and ``demo``."""

from __future__ import annotations

import os
import sys
import tempfile
import tomllib
from datetime import datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Any

import click

from pinserver.cli._common import utcnow
from pinserver.documents import Manifest, format_timestamp
from pinserver.envelope import MANIFEST_TYPE, Envelope, sign
from pinserver.errors import FormatError, PinserverError, VersionConflictError
from pinserver.export import ExportResult, export
from pinserver.export import watch as watch_export
from pinserver.keys import PrivateKey
from pinserver.store import DEFAULT_DATA_DIR, check_store, open_store, redact_database_url
from pinserver.store.base import NotInitialisedError, Store
from pinserver.trust import ManifestFloor, verify_anchor_root, verify_publication

DEMO_LIFETIME = timedelta(days=30)

data_option = click.option(
    "--data",
    "data_dir",
    envvar="PINSERVER_DATA",
    default=DEFAULT_DATA_DIR,
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Store directory (SQLite inside); env PINSERVER_DATA.",
)
database_option = click.option(
    "--database-url",
    envvar="PINSERVER_DATABASE_URL",
    default=None,
    help="postgresql:// URL instead of the SQLite store; env PINSERVER_DATABASE_URL.",
)


def _install_root(store: Store, root_bytes: bytes, *, where: str) -> bool:
    verified = verify_anchor_root(root_bytes)
    if verified.version != 1:
        raise PinserverError(
            f"this is root {verified.version}; a store starts from root 1 (later roots are"
            " published with `pinserver publish`)",
            code="not_root_1",
        )
    try:
        return store.install_first_root(verified, now=utcnow())
    except VersionConflictError as e:
        raise PinserverError(
            f"{where} already holds a different root 1; a store serves one trust root."
            " Use a new --data directory for a new root",
            code="different_root",
        ) from e


@click.command("init")
@click.option(
    "--root",
    "root_file",
    required=True,
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="Root 1 envelope (trusted out of band).",
)
@data_option
@database_option
def init_command(root_file: Path, data_dir: Path, database_url: str | None) -> None:
    """Create a store and install root 1 (refuses a different root 1)."""
    store = open_store(data_dir, database_url)
    try:
        installed = _install_root(
            store,
            root_file.read_bytes(),
            where=redact_database_url(database_url) if database_url else str(data_dir),
        )
    finally:
        store.close()
    where = "the database" if database_url else str(data_dir)
    if installed:
        click.echo(f"installed root 1 from {root_file} in {where}")
    else:
        click.echo(f"{where} already holds this root 1; nothing to do")
    click.echo(f"next: pinserver serve --data {data_dir}")


def _gunicorn_argv() -> list[str]:
    conf = resources.files("pinserver.server").joinpath("gunicorn_conf.py")
    return [sys.executable, "-m", "gunicorn", "-c", str(conf), "pinserver.server.wsgi:app"]


def _exec_gunicorn(
    data_dir: Path, database_url: str | None, bind: str, workers: int | None, threads: int | None
) -> None:
    env = dict(os.environ)
    env["PINSERVER_DATA"] = str(data_dir.resolve())
    env["PINSERVER_BIND"] = bind
    if database_url:
        env["PINSERVER_DATABASE_URL"] = database_url
    if workers:
        env["PINSERVER_WORKERS"] = str(workers)
    if threads:
        env["PINSERVER_THREADS"] = str(threads)
    argv = _gunicorn_argv()
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(argv[0], argv, env)  # noqa: S606 (gunicorn replaces this process)


def _check_ready(data_dir: Path, database_url: str | None) -> None:
    store = open_store(data_dir, database_url, create=False)
    try:
        check_store(store)
        if store.head().root_version == 0:
            raise NotInitialisedError(
                f"the store in {data_dir} has no root; run `pinserver init --root ROOT"
                f" --data {data_dir}` first"
            )
    finally:
        store.close()


@click.command("serve")
@data_option
@database_option
@click.option("--bind", default="127.0.0.1:8080", show_default=True, help="HOST:PORT to listen on.")
@click.option(
    "--workers",
    type=click.IntRange(1, 256),
    default=None,
    help="gunicorn workers (default: 2 per CPU).",
)
@click.option(
    "--threads", type=click.IntRange(1, 256), default=None, help="Threads per worker (default 4)."
)
def serve_command(
    data_dir: Path, database_url: str | None, bind: str, workers: int | None, threads: int | None
) -> None:
    """Run the service under gunicorn (PINSERVER_PUBLISH_TOKEN / _ADMIN_TOKEN from the env)."""
    _check_ready(data_dir, database_url)
    click.echo(f"serving {data_dir} on http://{bind}", err=True)
    _exec_gunicorn(data_dir, database_url, bind, workers, threads)


@click.command("export")
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@data_option
@database_option
@click.option("--watch", is_flag=True, help="Keep running; re-export whenever the store changes.")
@click.option(
    "--interval",
    type=click.FloatRange(0.05, 3600),
    default=1.0,
    show_default=True,
    help="Seconds between checks with --watch.",
)
def export_command(
    out_dir: Path, data_dir: Path, database_url: str | None, watch: bool, interval: float
) -> None:
    """Write a static copy of the read API (v1/manifest.json, v1/manifests/N.json,
    v1/roots/N.json) that nginx, an object store or a CDN can serve as is."""
    store = open_store(data_dir, database_url, create=False)

    def report(result: ExportResult) -> None:
        click.echo(
            f"exported root {result.head.root_version}, manifest {result.head.manifest_version}"
            f" to {out_dir}: {len(result.written)} file(s) written, {result.unchanged} unchanged",
        )

    try:
        if watch:
            try:
                watch_export(store, out_dir, interval=interval, on_export=report)
            except KeyboardInterrupt:
                return
        else:
            report(export(store, out_dir))
    finally:
        store.close()


# --- demo -------------------------------------------------------------------------------


def _demo_file(name: str) -> bytes:
    return resources.files("pinserver.demo_data").joinpath(name).read_bytes()


def demo_manifest(
    *, version: int, previous: str | None, report_uri: str | None, now: datetime
) -> bytes:
    """The demo manifest from DEMO-ONLY-pins.toml, signed with the DEMO-ONLY publisher key."""
    pins: dict[str, Any] = tomllib.loads(_demo_file("DEMO-ONLY-pins.toml").decode())
    pinsets = [
        {"include_subdomains": False, "mode": "enforce", **raw} for raw in pins.get("pinsets", [])
    ]
    manifest = Manifest.from_dict(
        {
            "type": "manifest",
            "spec_version": 1,
            "version": version,
            "root_version": 1,
            "issued_at": format_timestamp(now),
            "not_before": format_timestamp(now),
            "expires": format_timestamp(now + DEMO_LIFETIME),
            "previous": previous,
            "poll_interval": int(pins.get("poll_interval", 3600)),
            "report_uri": report_uri,
            "pinsets": pinsets,
        }
    )
    key = PrivateKey.from_pem(_demo_file("DEMO-ONLY-publisher.key"), None)
    return sign(Envelope(MANIFEST_TYPE, manifest.to_bytes()), key).to_bytes()


def seed_demo(store: Store, *, bind: str, now: datetime) -> str:
    """Install the demo root 1 and publish a fresh demo manifest unless a valid one is
    there; returns what was done. Publication goes through the trust core as usual."""
    _install_root(store, _demo_file("DEMO-ONLY-root-1.json"), where="the demo store")
    latest = store.latest_manifest()
    if latest is not None:
        envelope = Envelope.from_bytes(latest.envelope)
        if Manifest.from_bytes(envelope.payload).expires > now + timedelta(days=1):
            return f"manifest {latest.version} is already published and valid"
    body = demo_manifest(
        version=(latest.version + 1) if latest else 1,
        previous=latest.payload_sha256 if latest else None,
        report_uri=f"http://{bind}/v1/reports",
        now=now,
    )
    root = verify_anchor_root(_demo_file("DEMO-ONLY-root-1.json")).root

    def verify(_: object, current: Any) -> Any:
        floor = ManifestFloor(current.version, current.payload_sha256) if current else None
        return verify_publication(root, body, latest=floor, reference_time=now)

    stored = store.publish_manifest(verify, now=now, source="pinserver demo")
    return f"published demo manifest {stored.version} (DEMO-ONLY publisher key)"


@click.command("demo")
@click.option(
    "--data",
    "data_dir",
    default=None,
    type=click.Path(file_okay=False, path_type=Path),
    help="Store directory (default: a new temporary directory).",
)
@click.option("--bind", default="127.0.0.1:8080", show_default=True, help="HOST:PORT to listen on.")
@click.option("--workers", type=click.IntRange(1, 64), default=2, show_default=True)
def demo_command(data_dir: Path | None, bind: str, workers: int) -> None:
    """Seed a store with the DEMO-ONLY root and a demo manifest, then serve it.

    The demo keys are public: never trust this server's pins for anything real.
    """
    if data_dir is None:
        data_dir = Path(tempfile.mkdtemp(prefix="pinserver-demo-"))
    store = open_store(data_dir)
    try:
        try:
            done = seed_demo(store, bind=bind, now=utcnow())
        except FormatError as e:
            raise PinserverError(f"the demo pins file is invalid: {e.message}") from e
    finally:
        store.close()
    root_file = resources.files("pinserver.demo_data").joinpath("DEMO-ONLY-root-1.json")
    click.echo(
        f"pinserver demo (DEMO-ONLY keys: public, never use them for real)\n"
        f"  store:    {data_dir.resolve()}\n"
        f"  root 1:   installed from {root_file}\n"
        f"  manifest: {done}\n"
        f"  serving:  http://{bind}\n"
        f"poll it:\n"
        f"  curl -si http://{bind}/v1/manifest.json\n"
        f"  curl -si -H 'If-None-Match: <ETag from above>' http://{bind}/v1/manifest.json\n"
        f"  curl -s http://{bind}/healthz\n"
        f"  pinserver client poll --server http://{bind} --root {root_file}"
        f" --state {data_dir.resolve() / 'client-state'}\n"
        f"stop with Ctrl-C.",
        err=False,
    )
    _exec_gunicorn(data_dir, None, bind, workers, None)


def register(group: click.Group) -> None:
    """Add this module's commands to the pinserver group."""
    for command in (init_command, serve_command, export_command, demo_command):
        group.add_command(command)
