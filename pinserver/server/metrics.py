"""Prometheus text metrics, summed over every gunicorn worker on this machine.

Each worker counts in memory and writes its totals to ``METRICS_DIR/<pid>.json`` at
most once a second (from a daemon thread, and when it exits); ``GET /metrics`` sums
every file, using live numbers for the worker that answers. So a scrape sees all
workers, at most about a second behind. The directory is emptied when the service
starts (counters restart from zero, as Prometheus expects of a restarted process).
A worker that dies keeps its file, so totals never go down during a run.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path

logger = logging.getLogger(__name__)

FLUSH_INTERVAL = 1.0

_HELP: dict[str, tuple[str, str]] = {
    "pinserver_polls_total": ("counter", "GET /v1/manifest.json answered, by status"),
    "pinserver_publishes_total": ("counter", "accepted publications, by kind"),
    "pinserver_rejections_total": ("counter", "error responses, by error code"),
    "pinserver_reports_total": ("counter", "client pin-failure reports stored"),
}

_Key = str  # name{labels} as it appears in the exposition format


def _key(name: str, labels: dict[str, str]) -> _Key:
    if not labels:
        return name
    inner = ",".join(
        f'{k}="{v.replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"'
        for k, v in sorted(labels.items())
    )
    return f"{name}{{{inner}}}"


_POLL_200 = _key("pinserver_polls_total", {"status": "200"})
_POLL_304 = _key("pinserver_polls_total", {"status": "304"})


class Metrics:
    """Per-worker counters with a cross-worker view through ``directory``."""

    def __init__(self, directory: Path | None) -> None:
        self.directory = directory
        self._lock = threading.Lock()
        self._counts: dict[_Key, int] = {}
        self._dirty = False
        self._pid = 0
        self._flusher: threading.Thread | None = None
        self._stop = threading.Event()

    def inc(self, name: str, by: int = 1, **labels: str) -> None:
        self._add(_key(name, labels), by)

    def _add(self, key: _Key, by: int = 1) -> None:
        with self._lock:
            self._counts[key] = self._counts.get(key, 0) + by
            self._dirty = True
        if self._pid != os.getpid():
            self._start_flusher()

    def poll(self, not_modified: bool) -> None:
        # Every poll comes here: the two keys are formatted once, not per request.
        self._add(_POLL_304 if not_modified else _POLL_200)

    def rejection(self, code: str) -> None:
        self.inc("pinserver_rejections_total", code=code)

    def snapshot(self) -> dict[_Key, int]:
        with self._lock:
            return dict(self._counts)

    def _start_flusher(self) -> None:
        # Started lazily in the process that counts, so a fork never inherits it.
        with self._lock:
            if self._pid == os.getpid() or self.directory is None:
                self._pid = os.getpid()
                return
            self._pid = os.getpid()
            self._counts = dict(self._counts)
            self._flusher = threading.Thread(
                target=self._flush_loop, name="pinserver-metrics", daemon=True
            )
            self._flusher.start()

    def _flush_loop(self) -> None:
        while not self._stop.wait(FLUSH_INTERVAL):
            self.flush()

    def flush(self) -> None:
        """Write this worker's totals (atomically) if they changed."""
        if self.directory is None:
            return
        with self._lock:
            if not self._dirty:
                return
            counts = dict(self._counts)
            self._dirty = False
        pid = os.getpid()
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            tmp = self.directory / f".{pid}.tmp"
            tmp.write_text(json.dumps(counts))
            os.replace(tmp, self.directory / f"{pid}.json")
        except OSError as e:
            logger.warning("cannot write metrics to %s: %s", self.directory, e)

    def totals(self) -> dict[_Key, int]:
        """Every worker's counters summed, this worker's taken live."""
        total: dict[_Key, int] = {}
        own = f"{os.getpid()}.json"
        if self.directory is not None and self.directory.is_dir():
            for path in self.directory.glob("*.json"):
                if path.name == own:
                    continue
                try:
                    counts = json.loads(path.read_text())
                except (OSError, ValueError):
                    continue
                for key, value in counts.items():
                    if isinstance(value, int):
                        total[key] = total.get(key, 0) + value
        for key, value in self.snapshot().items():
            total[key] = total.get(key, 0) + value
        return total

    def render(self, gauges: dict[str, float]) -> str:
        totals = self.totals()
        lines: list[str] = []
        for name, (kind, text) in _HELP.items():
            lines.append(f"# HELP {name} {text}")
            lines.append(f"# TYPE {name} {kind}")
            series = {k: v for k, v in totals.items() if k == name or k.startswith(name + "{")}
            if not series and kind == "counter" and "{" not in name:
                series = {name: 0} if name == "pinserver_reports_total" else {}
            for key in sorted(series):
                lines.append(f"{key} {series[key]}")
        polls_200 = totals.get(_key("pinserver_polls_total", {"status": "200"}), 0)
        polls_304 = totals.get(_key("pinserver_polls_total", {"status": "304"}), 0)
        ratio = polls_304 / (polls_200 + polls_304) if polls_200 + polls_304 else 0.0
        all_gauges = {"pinserver_poll_not_modified_ratio": ratio, **gauges}
        for name, value in all_gauges.items():
            lines.append(f"# TYPE {name} gauge")
            lines.append(f"{name} {value:g}")
        return "\n".join(lines) + "\n"


def clear_directory(directory: Path) -> None:
    """Forget the counters of a previous run (called once, by the gunicorn master)."""
    if directory.is_dir():
        for path in directory.iterdir():
            if path.suffix in (".json", ".tmp"):
                path.unlink(missing_ok=True)


OnError = Callable[[str], None]
