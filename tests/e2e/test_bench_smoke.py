"""bench/run.py end to end, briefly: every scenario and both baselines reach the results JSON.

The figures of so short a run mean nothing; this checks that the harness works (embedded
PostgreSQL, seeding, token minting, the three servers, wrk and its Lua script, the report).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

SCENARIOS = {"get-hit": 200, "get-miss": 404, "put": 200, "mix": 200}


@pytest.fixture
def wrk() -> str:
    found = shutil.which("wrk")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("wrk is not installed; .ci/run installs it (apt-get install wrk)")
        pytest.skip("wrk is not installed (apt-get install wrk)")
    return found


def test_bench_quick_run_reports_every_scenario_and_every_baseline(
    wrk: str, repo_root: Path, tmp_path: Path
) -> None:
    output = tmp_path / "latest.json"
    command = [
        sys.executable,
        str(repo_root / "bench" / "run.py"),
        "--quick",
        "--duration=1",
        "--users=1000",
        "--fresh-tokens=2000",
        "--connections=8",
        "--sweep=none",
        "--no-rls",
        f"--output={output}",
    ]
    run = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert run.returncode == 0, f"{run.stdout[-3000:]}\n{run.stderr[-3000:]}"

    results = json.loads(output.read_text())
    rows = {(row["scenario"], row["tokens"]): row for row in results["scenarios"]}
    assert set(rows) == {(s, t) for s in SCENARIOS for t in ("reuse", "fresh")}
    for (scenario, _), row in rows.items():
        assert row["service"]["statuses"].get(str(SCENARIOS[scenario]), 0) > 0
        for baseline in ("raw", "raw_gc", "tutorial"):
            assert row[baseline]["statuses"].get(str(SCENARIOS[scenario]), 0) > 0
            assert row[f"service_vs_{baseline}"] > 0
        assert row["bare"]["statuses"].get("200", 0) > 0
        assert row["service_vs_bare"] > 0
        for target in ("service", "raw", "tutorial"):
            cpu = row[target]["cpu_us_per_request"]
            assert cpu["server"] > 0, (target, cpu)
            assert cpu["postgres"] > 0, (target, cpu)
    assert set(results["baselines"]) == {"raw", "raw_gc", "tutorial", "bare"}
    for baseline in ("raw", "raw_gc", "tutorial"):
        assert set(results["baselines"][baseline]) == set(SCENARIOS)
    assert results["machine"]["postgresql"]
    for column in ("svc/raw", "svc/raw+gc", "svc/tut", "CPU per request"):
        assert column in run.stdout
