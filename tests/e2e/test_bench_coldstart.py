"""bench/coldstart.py end to end, briefly: one round of each start reaches the results JSON.

The figures of one round mean nothing; this checks that the harness works (embedded PostgreSQL,
the token, the floor's imports, `quoteapi serve` answering the authenticated GET, the Node peer
when node is installed, the report).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

MEASURES = ("seconds", "rss_mib", "cpu_seconds")


def test_coldstart_one_round_reports_the_floor_serve_and_their_ratios(
    repo_root: Path, tmp_path: Path
) -> None:
    output = tmp_path / "coldstart.json"
    node = shutil.which("node") is not None and shutil.which("npm") is not None
    command = [
        sys.executable,
        str(repo_root / "bench" / "coldstart.py"),
        "--rounds=1",
        "--warmup=0",
        f"--output={output}",
        *([] if node else ["--no-node"]),
    ]
    run = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert run.returncode == 0, f"{run.stdout[-3000:]}\n{run.stderr[-3000:]}"

    results = json.loads(output.read_text())
    targets = results["targets"]
    assert {"floor", "serve"} <= set(targets)
    for figures in targets.values():
        for measure in MEASURES:
            assert figures[measure]["median"] > 0, figures
    for measure in MEASURES:
        assert results["ratios"][f"serve/floor {measure}"] > 0
    if node and "node" in targets:
        assert results["ratios"]["serve/node seconds"] > 0
    assert results["machine"]["postgresql"]
    assert "| serve/floor |" in run.stdout
