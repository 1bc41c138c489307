"""``pinserver drill`` (runbook 5): every runbook against a throwaway deployment."""

from __future__ import annotations

from pathlib import Path

from tests.ops.conftest import RunCli


def test_the_drill_passes_every_step_and_keeps_its_evidence(run: RunCli, tmp_path: Path) -> None:
    workdir = tmp_path / "drill"
    result = run("drill", "--workdir", str(workdir), "--keep")
    assert result.exit_code == 0, result.output
    steps = [line for line in result.stdout.splitlines() if line.startswith("[")]
    assert len(steps) == 12
    assert all(" PASS " in line for line in steps), steps
    assert "drill PASSED: 12 of 12 steps" in result.stdout
    assert "$ pinserver rotate --server http://127.0.0.1:" in result.stdout
    assert (workdir / "server.log").exists()
    assert (workdir / "root-3.json").exists()

    refused = run("drill", "--workdir", str(workdir))
    assert refused.exit_code == 2
    assert "is not empty" in refused.stderr
