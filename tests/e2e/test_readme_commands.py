"""The README's run command, end to end: a newcomer's first minutes, as a real process."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.support.polling import wait_until
from tests.support.processes import (
    accepts_connections,
    answers_200,
    clean_env,
    left_running,
    spawn,
    stop_process,
    wait_ready,
)

BASE = "http://127.0.0.1:8000"


def readme_command(repo_root: Path, marker: str) -> str:
    """The shell line that follows `<!-- marker: ... -->` in the README."""
    lines = (repo_root / "README.md").read_text().splitlines()
    start = next(n for n, line in enumerate(lines) if line.startswith(f"<!-- {marker}:"))
    assert lines[start + 1] == "```sh"
    return lines[start + 2]


def test_ci_runs_the_readme_test_command_verbatim(repo_root: Path) -> None:
    command = readme_command(repo_root, "test-command")
    assert command in (repo_root / ".ci" / "run").read_text().splitlines()


def _wait_ready(process: subprocess.Popen[bytes], within: float, log: Path) -> float:
    """Poll GET /readyz until it answers 200; how long that took."""
    ready = f"{BASE}/readyz"
    return wait_ready(
        process, lambda: answers_200(ready), within=within, what=f"{ready} answering 200", log=log
    )


@contextmanager
def run_command(
    command: str, cwd: Path, env: dict[str, str], log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """Start `command` in its own process group; Ctrl-C it (SIGINT) on the way out."""
    process = spawn(["bash", "-c", command], cwd=cwd, env=env, log=log, start_new_session=True)
    try:
        yield process
    finally:
        stop_process(process, signal.SIGINT, within=60, group=True)


@pytest.mark.slow
def test_readme_run_command_serves_the_api_and_stops_cleanly(
    repo_root: Path, tmp_path: Path
) -> None:
    if accepts_connections(8000):
        if os.environ.get("CI"):
            pytest.fail("port 8000 is taken; the run command needs it")
        pytest.skip("port 8000 is taken (is `quoteapi dev` running?)")
    command = readme_command(repo_root, "run-command")
    data_dir = tmp_path / "data"
    env = clean_env({"quoteapi_data_dir": data_dir})
    log = tmp_path / "run.log"

    def token(user: str) -> str:
        return subprocess.run(
            [str(repo_root / ".venv/bin/quoteapi"), "token", "--user", user],
            env=env,
            cwd=repo_root,
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout.strip()

    auth = {"Authorization": f"Bearer {token('user_e2e')}"}
    with run_command(command, repo_root, env, log) as first:
        _wait_ready(first, 120, log)  # the first start also installs into .venv
        # The greeting is printed once uvicorn has started, which /readyz may beat by a poll.
        wait_until(lambda: "curl -i -X PUT" in log.read_text(), within=10, what="the greeting")
        with httpx.Client(base_url=BASE, headers=auth, timeout=10) as http:
            created = http.put("/me/message", json={"message": "First light."})
            assert created.status_code == 201
            etag = created.headers["etag"]
            assert http.get("/me/message").json()["message"] == "First light."
            replaced = http.put(
                "/me/message", json={"message": "Kept."}, headers={"If-Match": etag}
            )
            assert replaced.status_code == 200
            stale = http.put("/me/message", json={"message": "Lost."}, headers={"If-Match": etag})
            assert stale.status_code == 412
            kept_etag = replaced.headers["etag"]
    assert first.returncode is not None
    assert left_running(data_dir, first.pid) == []

    with run_command(command, repo_root, env, log) as second:
        assert _wait_ready(second, 30, log) < 30
        with httpx.Client(base_url=BASE, headers=auth, timeout=10) as http:
            read = http.get("/me/message")
            assert read.json()["message"] == "Kept."  # the data survived the restart
            assert read.headers["etag"] == kept_etag
            assert http.delete("/me/message", headers={"If-Match": kept_etag}).status_code == 204
            assert http.get("/me/message").status_code == 404
    assert left_running(data_dir, second.pid) == []
