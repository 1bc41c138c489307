"""Crash safety: SIGKILL a process in the middle of many state swaps, over and over;
every restart must load a valid state, the old one or the new one."""

from __future__ import annotations

import base64
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from pinserver.client import PinClient
from pinserver.client.state import STATE_FILE, decode_state
from tests.factory import NOW, Deployment

CYCLES = 30
CHAIN_LENGTH = 1000
REPO_ROOT = Path(__file__).resolve().parents[2]


def test_sigkill_during_swaps_always_leaves_a_valid_state(tmp_path: Path) -> None:
    deployment = Deployment()
    for _ in range(CHAIN_LENGTH):
        deployment.publish()
    anchor = tmp_path / "root-1.json"
    anchor.write_bytes(deployment.roots[0])
    chain = tmp_path / "chain.txt"
    chain.write_text("\n".join(base64.b64encode(m).decode() for m in deployment.manifests))
    state_dir = tmp_path / "state"

    rng = random.Random(20261203)
    seen_version = 0
    for cycle in range(CYCLES):
        child = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.client.crash_child",
                str(state_dir),
                str(anchor),
                str(chain),
            ],
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            assert child.stdout is not None
            line = child.stdout.readline().decode()
            assert line.startswith("ready"), (line, child.stderr.read() if child.stderr else b"")
            # A random instant inside the swap loop (this picks the kill point; it
            # does not stand in for time passing in any assertion).
            time.sleep(rng.uniform(0.0, 0.06))
            os.kill(child.pid, signal.SIGKILL)
        finally:
            child.wait(timeout=30)
            for stream in (child.stdout, child.stderr):
                if stream is not None:
                    stream.close()
        assert child.returncode == -signal.SIGKILL, f"cycle {cycle}: child ended on its own"

        decode_state((state_dir / STATE_FILE).read_bytes())  # intact file, checksum good
        with PinClient(
            "http://chain.invalid", anchor.read_bytes(), state_dir, clock=lambda: NOW
        ) as restarted:
            assert restarted.load_problem is None, f"cycle {cycle}: {restarted.load_problem}"
            version = restarted.manifest_version
            assert version is not None
            assert version >= seen_version, "a restart went back to an older state"
            assert restarted.pins_for("updates.example.com") is not None
            seen_version = version
    assert seen_version > CYCLES  # the children really were swapping
