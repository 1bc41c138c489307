"""A throwaway PostgreSQL server for the tests: initdb into a temp dir, pg_ctl start on
127.0.0.1 and a free port, one fresh database per caller, pg_ctl stop -m immediate.

initdb refuses to run as root, and CI runs as root: there the server runs as an
unprivileged user (``postgres`` when it exists, else ``nobody``) that owns the temp dir.
Nothing here is a mock: it is the machine's own PostgreSQL binaries.
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

_UNPRIVILEGED_USERS = ("postgres", "nobody")
_START_TIMEOUT_S = 60


class PostgresUnavailableError(RuntimeError):
    """The machine has no PostgreSQL binaries (the tests skip with this message)."""


def find_pg_bin() -> Path:
    """The directory holding initdb and pg_ctl: PATH first, then Debian's layout."""
    initdb = shutil.which("initdb")
    if initdb:
        real = Path(initdb).resolve().parent
        if (real / "pg_ctl").exists():
            return real
    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True):
        return Path(candidate).parent
    raise PostgresUnavailableError(
        "PostgreSQL is not installed (no initdb on PATH or in /usr/lib/postgresql/*/bin);"
        " install it, e.g. `apt-get install -y postgresql`"
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _run_as() -> pwd.struct_passwd | None:
    """The user to run PostgreSQL as: None (ourselves) unless we are root."""
    if os.geteuid() != 0:
        return None
    for name in _UNPRIVILEGED_USERS:
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise PostgresUnavailableError(
        "running as root and no unprivileged user (postgres or nobody) to run PostgreSQL as"
    )


@dataclass
class PostgresServer:
    """A running throwaway server; ``create_database()`` hands out empty databases."""

    base_dir: Path
    port: int
    user: pwd.struct_passwd | None
    bin_dir: Path
    _counter: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def data_dir(self) -> Path:
        return self.base_dir / "data"

    @property
    def log_file(self) -> Path:
        return self.base_dir / "postgres.log"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, prefix: str = "pinserver") -> str:
        """A new empty database; returns its ``postgresql://`` URL."""
        import psycopg

        with self._lock:
            name = f"{prefix}_{next(self._counter)}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def _run(server: PostgresServer, *args: str) -> None:
    kwargs: dict[str, object] = {}
    if server.user is not None:
        kwargs = {"user": server.user.pw_uid, "group": server.user.pw_gid, "extra_groups": []}
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "LANG": "C"}
    result = subprocess.run(
        args,
        cwd=server.base_dir,
        env=env,
        capture_output=True,
        text=True,
        timeout=_START_TIMEOUT_S,
        check=False,
        **kwargs,  # type: ignore[arg-type]
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"{' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
            f"\n--- server log ---\n{server.log_tail()}"
        )


@contextmanager
def running_postgres() -> Iterator[PostgresServer]:
    """Start a PostgreSQL server in a temp dir; stop it and remove the dir on exit.

    Raises ``PostgresUnavailableError`` when the binaries are missing; any other
    failure to start is a real error (with the server log attached).
    """
    bin_dir = find_pg_bin()
    user = _run_as()
    # Not under pytest's tmp dir: that is private to root, and the server user must
    # reach its data dir. The socket path must also stay short (107 bytes).
    base_dir = Path(tempfile.mkdtemp(prefix="pinserver-pg-"))
    if user is not None:
        os.chown(base_dir, user.pw_uid, user.pw_gid)
    server = PostgresServer(base_dir=base_dir, port=_free_port(), user=user, bin_dir=bin_dir)
    started = False
    try:
        _run(
            server,
            str(bin_dir / "initdb"),
            "-D",
            str(server.data_dir),
            "--username=postgres",
            "--auth=trust",
            "--encoding=UTF8",
            "--no-sync",
        )
        options = " ".join(
            [
                "-c listen_addresses=127.0.0.1",
                f"-c port={server.port}",
                f"-c unix_socket_directories={base_dir}",
                # A throwaway server: durability buys nothing and costs test time.
                "-c fsync=off",
                "-c synchronous_commit=off",
                "-c full_page_writes=off",
                "-c max_connections=200",
            ]
        )
        _run(
            server,
            str(bin_dir / "pg_ctl"),
            "start",
            "-D",
            str(server.data_dir),
            "-l",
            str(server.log_file),
            "-o",
            options,
            "-w",
            "-t",
            str(_START_TIMEOUT_S),
        )
        started = True
        yield server
    finally:
        if started:
            _run(
                server,
                str(bin_dir / "pg_ctl"),
                "stop",
                "-D",
                str(server.data_dir),
                "-m",
                "immediate",
            )
        shutil.rmtree(base_dir, ignore_errors=True)
