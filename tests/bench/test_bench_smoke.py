"""The benchmark scripts still run: each one's core function on tiny sizes.

No timing is asserted anywhere (speed lives in docs/benchmarks.md); these tests check
that every script measures what it says it measures: the cap refuses what it
should, a pinserver poll is one request, python-tuf's are two and five, every
server target serves the same bytes and answers If-None-Match, and a store filled
by the script verifies end to end.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from bench import _documents
from bench._common import parse_wrk
from pinserver.envelope import MAX_ENVELOPE_BYTES
from pinserver.keys import PrivateKey

needs_nginx_wrk = pytest.mark.skipif(
    (shutil.which("nginx") is None and not Path("/usr/sbin/nginx").exists())
    or shutil.which("wrk") is None,
    reason="nginx and wrk come from bench/setup.sh",
)

WRK_OUTPUT = """Running 1s test @ http://127.0.0.1:8080/v1/manifest.json
  2 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.02ms    2.11ms  40.00ms   95.12%
    Req/Sec    35.40k     3.01k   40.12k    70.00%
  Latency Distribution
     50%  705.00us
     75%    1.00ms
     90%    1.80ms
     99%    4.00ms
  70794 requests in 1.00s, 20.12MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 5
Requests/sec:  70794.10
Transfer/sec:     20.10MB
"""


def test_parse_wrk_reads_rate_percentiles_and_errors() -> None:
    result = parse_wrk(WRK_OUTPUT)
    assert result.requests_per_second == 70794.10
    assert result.p50_seconds == pytest.approx(705e-6)
    assert result.p99_seconds == pytest.approx(4e-3)
    assert (result.requests, result.errors, result.non_2xx_3xx) == (70794, 3, 5)
    with pytest.raises(ValueError, match="unexpected wrk output"):
        parse_wrk("wrk: connection refused")


def test_largest_fitting_manifest_is_the_cap() -> None:
    key = PrivateKey.generate()
    largest = _documents.largest_fitting([key])
    fits = _documents.manifest(largest, [key], version=2, previous="0" * 64)
    too_big = _documents.manifest(largest + 1, [key], version=2, previous="0" * 64)
    assert len(fits) <= MAX_ENVELOPE_BYTES < len(too_big)


def test_verify_cost_measures_ours_and_bare_and_shows_the_refusal(tmp_path: Path) -> None:
    from bench import verify_cost

    result = verify_cost.run(["10", "max"], runs=1, work_dir=tmp_path, target_seconds=0.01)
    small, largest = result["sizes"]
    assert small["pinsets"] == 10
    assert largest["pinsets"] == result["largest_fitting_pinsets"]
    assert largest["envelope_bytes"] <= MAX_ENVELOPE_BYTES
    for row in result["sizes"]:
        assert row["ours_ms"] > 0
        assert row["bare_ms"] > 0
        assert row["ratio"] > 0
    refused = result["refused"]
    assert (refused["pinsets"], refused["error"], refused["status"]) == (
        10_000,
        "TooLargeError",
        413,
    )
    assert refused["envelope_bytes"] > MAX_ENVELOPE_BYTES


@needs_nginx_wrk
@pytest.mark.slow
def test_client_poll_counts_requests_like_the_protocols_say(tmp_path: Path) -> None:
    pytest.importorskip("tuf.ngclient", reason="python-tuf is the `bench` extra")
    from bench import client_poll

    result = client_poll.run(runs=1, pinsets=2, work=tmp_path)
    no_change, update = result["results"]["no_change"], result["results"]["update"]
    for mode in ("warm", "cold"):
        assert no_change[f"pinserver_{mode}"]["requests"] == 1
        assert no_change[f"pinserver_{mode}"]["statuses"] == [304]
        assert update[f"pinserver_{mode}"]["requests"] == 1
        assert update[f"pinserver_{mode}"]["statuses"] == [200]
        assert no_change[f"tuf_{mode}"]["requests"] == 2
        assert update[f"tuf_{mode}"]["requests"] == 5
    assert set(result["ratios"]) == {
        "no_change_warm",
        "no_change_cold",
        "update_warm",
        "update_cold",
    }


@needs_nginx_wrk
@pytest.mark.slow
def test_server_wrk_targets_serve_the_same_bytes(tmp_path: Path) -> None:
    from bench import server_wrk

    result = server_wrk.run(
        runs=1,
        duration=1,
        pinsets=2,
        connections=4,
        work=tmp_path,
        only=frozenset({"pinserver_serve", "nginx_export"}),
        in_process_seconds=0.01,
    )
    for status in ("200", "304"):
        rows = result["results"][status]
        assert set(rows) == {"nginx_static", "pinserver_serve", "nginx_export"}
        assert rows["nginx_static"]["ratio_to_nginx_static"] == 1.0
        assert all(row["rps"] > 0 for row in rows.values())
        assert all(row["cpu_us_per_request"] > 0 for row in rows.values())
    assert set(result["in_process_us"]) == {
        "pinserver_app",
        "flask_reference",
        "bare_wsgi_reference",
    }


@needs_nginx_wrk
@pytest.mark.slow
def test_history_fills_audits_and_serves_a_store(tmp_path: Path) -> None:
    from bench import history

    result = history.run([30], tmp_path / "store", tmp_path)
    row = result["sizes"]["30"]
    assert row["audit_core"]["versions"] == 30
    assert row["host_page"]["status"] == 200
    assert row["pages"]["history_last_page_ms"] > 0
    assert row["http_publish_ms"] > 0
    large, small = result["memory_large"], result["memory_small"]
    assert large["latest_version"] == 30 + history.HTTP_PUBLISHES + 1
    assert large["gunicorn_worker_memory"]["workers"] >= 1
    assert large["client_memory"]["hosts"] == result["largest_fitting_pinsets"]
    assert small["client_memory"]["hosts"] == 10
