"""One client poll, pinserver against python-tuf 7.0.1, served by the same nginx.

Two cases, each measured warm and cold, interleaved, several runs:

* no change: the server holds what the client already has;
* update: one new manifest was published since the last poll.

pinserver: ``PinClient.refresh()`` against a static tree (``v1/manifest.json``,
``v1/roots/N.json``, ``v1/manifests/N.json``) as ``pinserver export`` writes it.
python-tuf: ``Updater.refresh()`` (plus ``get_targetinfo`` and ``download_target``
of the manifest in the update case) against an equivalent repository (root,
timestamp, snapshot, targets, consistent snapshots, the same manifest envelope as
its one target). Warm is a long-running poller: the client object and its HTTP
connection are reused (python-tuf allows one refresh per ``Updater``, so warm
makes a new ``Updater`` sharing one fetcher). Cold is a new client object that
loads and re-verifies its saved state, on a new connection.

The bare floor, same nginx, same run: a conditional GET (304) with ``requests`` on
a new connection, and for the update case a plain GET (200) plus one Ed25519 verify
of the envelope. Requests and bytes are counted by nginx (``$bytes_sent`` +
``$request_length``: headers included, both directions); wall time with
``perf_counter``; CPU time of the client process with ``process_time``.

    python -m bench.client_poll [--runs 15] [--pinsets 10]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
from nacl.signing import VerifyKey
from tuf.ngclient import Updater
from tuf.ngclient.urllib3_fetcher import Urllib3Fetcher

from bench import _documents
from bench._common import Nginx, Site, median, temp_dir, traffic, write_results
from bench._tuf_repo import TARGET_NAME, TufRepository
from pinserver.client import PinClient
from pinserver.envelope import MANIFEST_TYPE, pae
from pinserver.keys import PrivateKey
from tests.factory import payload_hash, root_document, root_envelope

METRICS = ("requests", "bytes", "bytes_received", "wall_ms", "cpu_ms")


# --- the served trees ------------------------------------------------------------------


class PinTree:
    """A static pinserver read API on disk, as ``pinserver export`` lays it out.

    Each publication gets an mtime one second after the last: nginx's ETag is
    ``mtime-size``, and successive manifests often have the same size.
    """

    def __init__(self, base: Path, root: bytes) -> None:
        self.base = base
        self.clock = int(time.time()) - 100_000
        self._put("v1/roots/1.json", root)

    def _put(self, relative: str, data: bytes) -> None:
        path = self.base / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(data)
        self.clock += 1
        os.utime(tmp, (self.clock, self.clock))
        os.replace(tmp, path)

    def publish(self, version: int, envelope: bytes) -> None:
        self._put(f"v1/manifests/{version}.json", envelope)
        self._put("v1/manifest.json", envelope)


@dataclass
class Lane:
    """One variant's own site, server-side series and client state."""

    name: str
    site: str
    poll: Callable[[], Any]
    publish_next: Callable[[], None]


def _timed(nginx: Nginx, site: str, fn: Callable[[], Any]) -> dict[str, Any]:
    mark = nginx.log_mark(site)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    outcome = fn()
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    time.sleep(0.005)  # let nginx write its log line (it logs after the response is sent)
    seen = traffic(nginx.log_since(site, mark))
    return {
        **seen,
        "wall_ms": wall * 1000,
        "cpu_ms": cpu * 1000,
        "outcome": outcome,
    }


def _wall_ms(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1000


def _summarise(samples: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {m: round(median([s[m] for s in samples]), 3) for m in METRICS}
    out["statuses"] = samples[-1]["statuses"]
    out["uris"] = samples[-1]["uris"]
    out["wall_ms_runs"] = [round(s["wall_ms"], 3) for s in samples]
    return out


# --- the benchmark ---------------------------------------------------------------------


def run(*, runs: int, pinsets: int, work: Path) -> dict[str, Any]:
    warmup = 2
    versions_needed = 2 * (warmup + runs) + 2
    root_key, publisher = PrivateKey.generate(), PrivateKey.generate()
    root = root_envelope(root_document(1, [root_key], [publisher]), [root_key])
    (work / "root-1.json").write_bytes(root)
    series = _documents.chain(pinsets, versions_needed, [publisher])
    verify_key = VerifyKey(publisher.public_key.raw)

    sites = {
        name: Site(root=work / "www" / name, access_log=True)
        for name in ("pin-warm", "pin-cold", "tuf-warm", "tuf-cold", "bare")
    }
    for site in sites.values():
        site.root.mkdir(parents=True)

    pin_trees = {s: PinTree(sites[s].root, root) for s in ("pin-warm", "pin-cold", "bare")}
    tuf_repos = {s: TufRepository(sites[s].root) for s in ("tuf-warm", "tuf-cold")}
    tuf_versions = {
        s: [repo.signed_version(v + 1, m) for v, m in enumerate(series)]
        for s, repo in tuf_repos.items()
    }
    position = dict.fromkeys(sites, 0)

    def publish(site: str) -> None:
        v = position[site]
        if site in tuf_repos:
            tuf_repos[site].publish(tuf_versions[site][v])
        else:
            pin_trees[site].publish(v + 1, series[v])
        position[site] = v + 1

    with Nginx(sites) as nginx:
        # --- pinserver clients: state after a first poll
        def pin_state(site: str) -> Path:
            return work / "state" / site

        pin_warm = PinClient(nginx.url("pin-warm"), root, pin_state("pin-warm"))

        def pin_cold_poll() -> Any:
            client = PinClient(nginx.url("pin-cold"), root, pin_state("pin-cold"))
            try:
                return client.refresh()
            finally:
                client.close()

        # --- python-tuf updaters
        def tuf_dirs(site: str) -> tuple[Path, Path]:
            metadata, targets = work / "tuf" / site / "metadata", work / "tuf" / site / "targets"
            if not metadata.exists():
                metadata.mkdir(parents=True)
                targets.mkdir(parents=True)
                (metadata / "root.json").write_bytes(tuf_repos[site].root_bytes)
            return metadata, targets

        shared_fetcher = Urllib3Fetcher()

        def tuf_poll(site: str, *, fetcher: Urllib3Fetcher | None, download: bool) -> Any:
            metadata, targets = tuf_dirs(site)
            updater = Updater(
                str(metadata),
                nginx.url(site, "/metadata/"),
                str(targets),
                nginx.url(site, "/targets/"),
                fetcher=fetcher if fetcher is not None else Urllib3Fetcher(),
                bootstrap=None,
            )
            updater.refresh()
            if download:
                info = updater.get_targetinfo(TARGET_NAME)
                if info is None:
                    raise RuntimeError("the TUF repository lost its target")
                if updater.find_cached_target(info) is None:
                    updater.download_target(info)
            return None

        # --- the bare floor
        bare_url = nginx.url("bare", "/v1/manifest.json")

        def bare_conditional_get_new() -> Any:
            etag = bare_state["etag"]
            with requests.Session() as s:
                r = s.get(bare_url, headers={"If-None-Match": etag}, timeout=10)
            if r.status_code != 304:
                raise RuntimeError(f"bare conditional GET answered {r.status_code}")
            return None

        keepalive = requests.Session()

        def bare_conditional_get_keepalive() -> Any:
            r = keepalive.get(bare_url, headers={"If-None-Match": bare_state["etag"]}, timeout=10)
            if r.status_code != 304:
                raise RuntimeError(f"bare conditional GET answered {r.status_code}")
            return None

        def bare_get_verify(session: requests.Session | None) -> Any:
            if session is None:
                with requests.Session() as s:
                    r = s.get(bare_url, timeout=10)
            else:
                r = session.get(bare_url, timeout=10)
            if r.status_code != 200:
                raise RuntimeError(f"bare GET answered {r.status_code}")
            envelope = json.loads(r.content)
            payload = base64.b64decode(envelope["payload"])
            sig = base64.b64decode(envelope["signatures"][0]["sig"])
            verify_key.verify(pae(MANIFEST_TYPE, payload), sig)
            bare_state["etag"] = r.headers["ETag"]
            return None

        bare_state: dict[str, str] = {}

        # --- first publication and first poll everywhere (not measured)
        for site in sites:
            publish(site)
        pin_warm.refresh()
        pin_cold_poll()
        tuf_poll("tuf-warm", fetcher=shared_fetcher, download=True)
        tuf_poll("tuf-cold", fetcher=None, download=True)
        bare_get_verify(None)

        lanes_nochange = {
            "pinserver_warm": ("pin-warm", pin_warm.refresh),
            "pinserver_cold": ("pin-cold", pin_cold_poll),
            "tuf_warm": (
                "tuf-warm",
                lambda: tuf_poll("tuf-warm", fetcher=shared_fetcher, download=True),
            ),
            "tuf_cold": ("tuf-cold", lambda: tuf_poll("tuf-cold", fetcher=None, download=True)),
            "bare_conditional_get_new_connection": ("bare", bare_conditional_get_new),
            "bare_conditional_get_keepalive": ("bare", bare_conditional_get_keepalive),
        }
        lanes_update = {
            "pinserver_warm": ("pin-warm", pin_warm.refresh),
            "pinserver_cold": ("pin-cold", pin_cold_poll),
            "tuf_warm": (
                "tuf-warm",
                lambda: tuf_poll("tuf-warm", fetcher=shared_fetcher, download=True),
            ),
            "tuf_cold": ("tuf-cold", lambda: tuf_poll("tuf-cold", fetcher=None, download=True)),
            "bare_get_verify_new_connection": ("bare", lambda: bare_get_verify(None)),
            "bare_get_verify_keepalive": ("bare", lambda: bare_get_verify(keepalive)),
        }

        samples: dict[str, dict[str, list[dict[str, Any]]]] = {"no_change": {}, "update": {}}
        for run_index in range(warmup + runs):
            for case, lanes in (("no_change", lanes_nochange), ("update", lanes_update)):
                names = list(lanes)
                shift = run_index % len(names)
                for name in names[shift:] + names[:shift]:
                    site, poll = lanes[name]
                    if case == "update":
                        publish(site)
                    sample = _timed(nginx, site, poll)
                    _check_outcome(name, case, sample)
                    if run_index >= warmup:
                        samples[case].setdefault(name, []).append(sample)
        pin_warm.close()
        keepalive.close()

        # What refresh() repeats on every poll: loading and re-verifying the saved
        # state from the shipped root (the constructor does the same work, no network).
        def load_state() -> None:
            PinClient(nginx.url("pin-warm"), root, pin_state("pin-warm")).close()

        state_load_ms = median([_wall_ms(load_state) for _ in range(warmup + runs)][warmup:])

    summary = {
        case: {name: _summarise(s) for name, s in by_name.items()}
        for case, by_name in samples.items()
    }
    return {
        "runs": runs,
        "pinsets": pinsets,
        "manifest_bytes": len(series[0]),
        "manifest_payload_sha256_example": payload_hash(series[0]),
        "results": summary,
        "ratios": _ratios(summary),
        "pinserver_state_load_ms": round(state_load_ms, 3),
    }


def _check_outcome(name: str, case: str, sample: dict[str, Any]) -> None:
    """A poll that did not do what its case says is a broken benchmark, not a data point."""
    outcome = sample["outcome"]
    if name.startswith("pinserver"):
        if outcome.updated != (case == "update"):
            raise RuntimeError(f"{name} {case}: refresh() said updated={outcome.updated}")
        if case == "no_change" and not outcome.not_modified:
            raise RuntimeError(f"{name} no_change: expected a 304")


def _ratios(summary: dict[str, dict[str, dict[str, Any]]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for case, bare_new, bare_keep in (
        ("no_change", "bare_conditional_get_new_connection", "bare_conditional_get_keepalive"),
        ("update", "bare_get_verify_new_connection", "bare_get_verify_keepalive"),
    ):
        rows = summary[case]
        for mode, bare in (("warm", bare_keep), ("cold", bare_new)):
            ours, tuf = rows[f"pinserver_{mode}"], rows[f"tuf_{mode}"]
            out[f"{case}_{mode}"] = {
                "requests": [ours["requests"], tuf["requests"]],
                "bytes_vs_tuf": round(ours["bytes"] / tuf["bytes"], 3),
                "bytes_received_vs_tuf": round(ours["bytes_received"] / tuf["bytes_received"], 3),
                "wall_vs_tuf": round(ours["wall_ms"] / tuf["wall_ms"], 3),
                "cpu_vs_tuf": round(ours["cpu_ms"] / tuf["cpu_ms"], 3),
                "wall_vs_bare": round(ours["wall_ms"] / rows[bare]["wall_ms"], 3),
                "bare": bare,
            }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--pinsets", type=int, default=10)
    parser.add_argument("--name", default="client_poll", help="results file name")
    args = parser.parse_args()
    with temp_dir("bench-client-") as work:
        results = run(runs=args.runs, pinsets=args.pinsets, work=work)
    for case in ("no_change", "update"):
        print(case)
        for name, row in results["results"][case].items():
            print(
                f"  {name:<40} {row['requests']:>3} req {row['bytes']:>7.0f} B"
                f" {row['wall_ms']:8.3f} ms wall {row['cpu_ms']:8.3f} ms cpu"
            )
    print(json.dumps(results["ratios"], indent=1))
    write_results(args.name, results)


if __name__ == "__main__":
    main()
