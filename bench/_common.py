"""What every benchmark shares: nginx on a free 127.0.0.1 port, wrk, medians, results JSON.

Nothing here measures by itself. The rule every script follows: a figure is the
median of several runs, and the comparison it is reported next to (nginx static,
the bare cost of the same work, python-tuf) is measured in the same run, interleaved
with it, so that the ratio survives a noisy or slower machine.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"


# --- machine and results ---------------------------------------------------------------


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _tool_version(argv: Sequence[str]) -> str | None:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = (out.stdout + out.stderr).strip().splitlines()
    return text[0] if text else None


def machine_info() -> dict[str, Any]:
    """Where and when a result was measured: what docs/benchmarks.md prints next to it."""
    info: dict[str, Any] = {
        "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "cpus": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "nginx": _tool_version([nginx_binary(), "-v"]) if nginx_binary() else None,
        "wrk": _tool_version(["wrk", "--version"]) if shutil.which("wrk") else None,
    }
    with contextlib.suppress(OSError, ValueError):
        mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
        info["memory_gib"] = round(mem_kb / 1024 / 1024, 1)
    return info


def write_results(name: str, results: Mapping[str, Any], *, out_dir: Path | None = None) -> Path:
    """Write ``results`` plus the machine and command line to ``bench/results/NAME.json``."""
    directory = out_dir or RESULTS_DIR
    directory.mkdir(parents=True, exist_ok=True)
    document = {
        "benchmark": name,
        "command": " ".join(["python", *[_display_arg(a) for a in sys.argv]]),
        "machine": machine_info(),
        **results,
    }
    path = directory / f"{name}.json"
    path.write_text(json.dumps(document, indent=2, sort_keys=False) + "\n")
    print(f"results written to {path}")
    return path


def _display_arg(arg: str) -> str:
    with contextlib.suppress(ValueError):
        return str(Path(arg).resolve().relative_to(REPO_DIR))
    return arg


# --- timing ----------------------------------------------------------------------------


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def time_per_call(fn: Callable[[], object], *, number: int) -> float:
    """Seconds per call of ``fn`` over ``number`` back-to-back calls."""
    start = time.perf_counter()
    for _ in range(number):
        fn()
    return (time.perf_counter() - start) / number


def calibrate(fn: Callable[[], object], *, target_seconds: float = 0.2) -> int:
    """How many calls of ``fn`` take about ``target_seconds`` (at least 1)."""
    number = 1
    while True:
        elapsed = time_per_call(fn, number=number) * number
        if elapsed >= target_seconds / 4 or number >= 1 << 20:
            return max(1, int(number * target_seconds / max(elapsed, 1e-9)))
        number *= 4


@dataclass
class Paired:
    """Interleaved measurements of several variants, one sample each per run."""

    samples: dict[str, list[float]] = field(default_factory=dict)

    def add(self, name: str, value: float) -> None:
        self.samples.setdefault(name, []).append(value)

    def median(self, name: str) -> float:
        return median(self.samples[name])

    def ratio(self, name: str, baseline: str) -> float:
        """Median over runs of the per-run ratio: each run's pair shares the machine's state."""
        pairs = zip(self.samples[name], self.samples[baseline], strict=True)
        return median([a / b for a, b in pairs if b])

    def summary(self) -> dict[str, dict[str, Any]]:
        return {
            name: {"median": median(values), "runs": [round(v, 9) for v in values]}
            for name, values in self.samples.items()
        }


def interleave(
    variants: Mapping[str, Callable[[], float]], *, runs: int, warmup: int = 1
) -> Paired:
    """Call each variant once per run, in a rotating order, after ``warmup`` discarded runs."""
    names = list(variants)
    paired = Paired()
    for run in range(warmup + runs):
        order = names[run % len(names) :] + names[: run % len(names)]
        for name in order:
            value = variants[name]()
            if run >= warmup:
                paired.add(name, value)
    return paired


# --- processes and ports ---------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(
    port: int, *, timeout: float = 20.0, proc: subprocess.Popen[Any] | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listening on 127.0.0.1:{port} after {timeout} s")


def stop_process(proc: subprocess.Popen[Any], *, sig: int = signal.SIGTERM) -> None:
    """Stop a process we started (by its pid only) and wait for it."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def children_of(pid: int) -> list[int]:
    """Direct child pids (gunicorn workers of a master), from /proc."""
    result = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            stat = (entry / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid == pid:
                result.append(int(entry.name))
    return sorted(result)


def peak_rss_kib(pid: int) -> int:
    """VmHWM (peak resident set) of a running process, in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmHWM for pid {pid}")


# --- nginx -----------------------------------------------------------------------------


def nginx_binary() -> str | None:
    return shutil.which("nginx") or (
        "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None
    )


LOG_FORMAT = "$request_method $uri $status $bytes_sent $request_length"


@dataclass
class Site:
    """One nginx server block: a document root and extra directives for it."""

    root: Path
    directives: str = ""
    port: int = 0
    access_log: bool = False


class Nginx:
    """nginx in the foreground on 127.0.0.1, with a generated config in a temp dir.

    ``sites`` maps a name to a :class:`Site`; each gets its own free port. With
    ``access_log`` a site logs ``method uri status bytes_sent request_length`` per
    request, which is how the client benchmarks count requests and bytes on the wire.
    """

    def __init__(
        self,
        sites: Mapping[str, Site],
        *,
        http_directives: str = "",
        workers: str = "auto",
    ) -> None:
        binary = nginx_binary()
        if binary is None:
            raise RuntimeError("nginx is not installed: run bench/setup.sh")
        self.binary = binary
        self.sites = dict(sites)
        self.http_directives = http_directives
        self.workers = workers
        self.dir = Path(tempfile.mkdtemp(prefix="bench-nginx-"))
        self.proc: subprocess.Popen[bytes] | None = None

    def port(self, site: str) -> int:
        return self.sites[site].port

    def url(self, site: str, path: str = "") -> str:
        return f"http://127.0.0.1:{self.sites[site].port}{path}"

    def log_path(self, site: str) -> Path:
        return self.dir / f"access-{site}.log"

    def _config(self) -> str:
        user = "user root;" if os.geteuid() == 0 else ""
        servers = []
        for name, site in self.sites.items():
            if not site.port:
                site.port = free_port()
            log = (
                f"access_log {self.log_path(name)} counted;"
                if site.access_log
                else "access_log off;"
            )
            servers.append(
                f"""
    server {{
        listen 127.0.0.1:{site.port} reuseport;
        server_name localhost;
        root {site.root};
        {log}
        {site.directives}
    }}"""
            )
        return f"""
{user}
worker_processes {self.workers};
pid {self.dir}/nginx.pid;
error_log {self.dir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    types {{ application/json json; text/html html; }}
    default_type application/octet-stream;
    log_format counted '{LOG_FORMAT}';
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_timeout 65;
    keepalive_requests 1000000;
    client_body_temp_path {self.dir}/client_body;
    proxy_temp_path {self.dir}/proxy;
    fastcgi_temp_path {self.dir}/fastcgi;
    uwsgi_temp_path {self.dir}/uwsgi;
    scgi_temp_path {self.dir}/scgi;
    {self.http_directives}
    {"".join(servers)}
}}
"""

    def start(self) -> Nginx:
        conf = self.dir / "nginx.conf"
        conf.write_text(self._config())
        with (self.dir / "stderr.log").open("wb") as stderr:
            self.proc = subprocess.Popen(
                [self.binary, "-p", str(self.dir), "-c", str(conf), "-g", "daemon off;"],
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )
        for site in self.sites.values():
            try:
                wait_for_port(site.port, proc=self.proc)
            except RuntimeError as e:
                err = (
                    (self.dir / "error.log").read_text()
                    if (self.dir / "error.log").exists()
                    else ""
                )
                raise RuntimeError(f"nginx did not start: {e}\n{err}") from e
        return self

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, sig=signal.SIGQUIT)
            self.proc = None
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Nginx:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def log_mark(self, site: str) -> int:
        """The access log's current size: pass it to :meth:`log_since` after a request."""
        path = self.log_path(site)
        return path.stat().st_size if path.exists() else 0

    def log_since(self, site: str, mark: int) -> list[LoggedRequest]:
        path = self.log_path(site)
        with path.open("rb") as f:
            f.seek(mark)
            lines = f.read().decode().splitlines()
        return [LoggedRequest.parse(line) for line in lines if line.strip()]


@dataclass(frozen=True)
class LoggedRequest:
    method: str
    uri: str
    status: int
    bytes_sent: int
    request_length: int

    @classmethod
    def parse(cls, line: str) -> LoggedRequest:
        method, uri, status, sent, length = line.split()
        return cls(method, uri, int(status), int(sent), int(length))


def traffic(requests: Sequence[LoggedRequest]) -> dict[str, Any]:
    """Requests made and bytes on the wire (both directions, headers included)."""
    return {
        "requests": len(requests),
        "bytes": sum(r.bytes_sent + r.request_length for r in requests),
        "bytes_received": sum(r.bytes_sent for r in requests),
        "statuses": [r.status for r in requests],
        "uris": [r.uri for r in requests],
    }


# --- wrk -------------------------------------------------------------------------------

_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}


def _seconds(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    if not match:
        raise ValueError(f"cannot read wrk duration {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


@dataclass(frozen=True)
class WrkResult:
    requests_per_second: float
    p50_seconds: float
    p99_seconds: float
    requests: int
    non_2xx_3xx: int
    errors: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "rps": round(self.requests_per_second, 1),
            "p50_ms": round(self.p50_seconds * 1000, 3),
            "p99_ms": round(self.p99_seconds * 1000, 3),
            "requests": self.requests,
            "non_2xx_3xx": self.non_2xx_3xx,
            "errors": self.errors,
        }


def parse_wrk(output: str) -> WrkResult:
    """Read requests/sec, the 50% and 99% latencies (``--latency``) and errors."""
    rps = re.search(r"Requests/sec:\s+([\d.]+)", output)
    total = re.search(r"(\d+) requests in", output)
    p50 = re.search(r"^\s+50%\s+(\S+)", output, re.MULTILINE)
    p99 = re.search(r"^\s+99%\s+(\S+)", output, re.MULTILINE)
    if not (rps and total and p50 and p99):
        raise ValueError(f"unexpected wrk output:\n{output}")
    non = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    errs = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    return WrkResult(
        requests_per_second=float(rps.group(1)),
        p50_seconds=_seconds(p50.group(1)),
        p99_seconds=_seconds(p99.group(1)),
        requests=int(total.group(1)),
        non_2xx_3xx=int(non.group(1)) if non else 0,
        errors=sum(int(g) for g in errs.groups()) if errs else 0,
    )


def run_wrk(
    url: str,
    *,
    headers: Mapping[str, str] | None = None,
    threads: int = 2,
    connections: int = 64,
    duration: int = 5,
) -> WrkResult:
    """One wrk run against ``url`` on 127.0.0.1 (the only place benchmarks send traffic)."""
    if not url.startswith("http://127.0.0.1:"):
        raise ValueError("benchmarks only send traffic to 127.0.0.1")
    argv = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--latency"]
    for key, value in (headers or {}).items():
        argv += ["-H", f"{key}: {value}"]
    out = subprocess.run(
        [*argv, url], capture_output=True, text=True, timeout=duration + 60, check=True
    )
    return parse_wrk(out.stdout)


@contextlib.contextmanager
def temp_dir(prefix: str) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
