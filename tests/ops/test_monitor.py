"""``pinserver monitor``: live chains against pins, and everything that can expire."""

from __future__ import annotations

import json

from tests.factory import fake_pin
from tests.ops.conftest import Deployment, RunCli, SwitchableHost, TwoCas, ok, publish_first
from tests.support.gunicorn import free_port


def test_monitor_exit_codes_follow_the_worst_finding(
    run: RunCli, deployment: Deployment, live_host: SwitchableHost, two_cas: TwoCas
) -> None:
    d = deployment
    old_int, new_int = two_cas.old.intermediate_pin, two_cas.new.intermediate_pin
    publish_first(d, {"localhost": [(old_int, "primary"), (new_int, "backup")]})
    monitor = [
        "monitor",
        "--server",
        d.url,
        "--root",
        d.root1,
        "--cafile",
        str(two_cas.ca_bundle),
        "--connect-to",
        live_host.connect_to,
    ]

    healthy = ok(run(*monitor))
    assert "OK" in healthy.stdout.splitlines()[-1]
    assert "live chain of localhost" in healthy.stdout
    report = json.loads(ok(run(*monitor, "--json")).stdout)
    assert report["status"] == "ok"
    assert report["exit_code"] == 0
    kinds = {c["kind"] for c in report["checks"]}
    assert kinds == {"root", "manifest", "pinset", "live", "certificate"}
    live = next(c for c in report["checks"] if c["kind"] == "live")
    assert "matches its pins (intermediate" in live["message"]

    # The manifest (30 days) inside a 40-day warning window: a warning, exit 1.
    warned = run(*monitor, "--manifest-warn-days", "40", "--json")
    assert warned.exit_code == 1
    assert json.loads(warned.stdout)["counts"]["warning"] == 1

    # The host moves to a CA whose key no pin names: clients are refused; exit 2.
    ok(
        run(
            "rotate",
            "--server",
            d.url,
            "--root",
            d.root1,
            *d.publisher_args(),
            "--host",
            "localhost",
            "--remove-pin",
            new_int,
            "--add-pin",
            f"{fake_pin('r')}:backup",
            "--cafile",
            str(two_cas.ca_bundle),
            "--connect-to",
            live_host.connect_to,
            "--yes",
            env=d.env,
        )
    )
    live_host.serve("new")
    failing = run(*monitor)
    assert failing.exit_code == 2
    assert "FAIL" in failing.stdout
    assert "clients enforcing these pins are refused now" in failing.stdout


def test_an_unreachable_host_or_server_is_a_failure_not_a_crash(
    run: RunCli, deployment: Deployment, two_cas: TwoCas
) -> None:
    d = deployment
    publish_first(
        d,
        {"localhost": [(two_cas.old.intermediate_pin, "primary"), (fake_pin("reserve"), "backup")]},
    )
    closed = f"localhost=127.0.0.1:{free_port()}"
    result = run("monitor", "--server", d.url, "--root", d.root1, "--connect-to", closed)
    assert result.exit_code == 2
    assert "cannot check localhost: cannot connect" in result.stdout

    nobody = run(
        "monitor", "--server", f"http://127.0.0.1:{free_port()}", "--root", d.root1, "--json"
    )
    assert nobody.exit_code == 2
    (check,) = json.loads(nobody.stdout)["checks"]
    assert check["kind"] == "server"
    assert "fetch_failed" in check["message"]
