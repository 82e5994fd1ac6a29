"""bench/get_ladder.py end to end, briefly: every layer from raw to the service answers its GET
and reaches the report. The figures of so short a run mean nothing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

LAYERS = ("raw", "raw_cached", "session", "dependency", "middleware", "service")


def test_get_ladder_one_round_reports_every_layer(repo_root: Path) -> None:
    command = [sys.executable, str(repo_root / "bench" / "get_ladder.py"), "--requests=20"]
    run = subprocess.run(
        [*command, "--rounds=1"], capture_output=True, text=True, timeout=300, check=False
    )
    assert run.returncode == 0, f"{run.stdout[-3000:]}\n{run.stderr[-3000:]}"

    figures = json.loads(run.stdout.strip().splitlines()[-1])["figures"]
    assert tuple(figures) == LAYERS
    assert all(len(runs) == 1 and runs[0] > 0 for runs in figures.values())
    assert "raw/service" in run.stdout
