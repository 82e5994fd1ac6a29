"""The README's run command, end to end: a newcomer's first minutes, as a real process."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import psutil
import pytest

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


def _port_8000_is_free() -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", 8000)) != 0


def _wait_ready(process: subprocess.Popen[bytes], deadline_s: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < deadline_s:
        assert process.poll() is None, "the run command exited early"
        try:
            if httpx.get(f"{BASE}/readyz", timeout=1).status_code == 200:
                return time.monotonic() - started
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"/readyz was not 200 within {deadline_s} s")


@contextmanager
def run_command(
    command: str, cwd: Path, env: dict[str, str], log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """Start `command` in its own process group; Ctrl-C it (SIGINT) on the way out."""
    with log.open("ab") as out:
        process = subprocess.Popen(
            ["bash", "-c", command],
            cwd=cwd,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield process
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGINT)
            process.wait(timeout=60)


def _left_running(data_dir: Path, group: int) -> list[str]:
    """Processes of ours still alive: the command's group, or a server on its data dir."""
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        try:
            cmdline = " ".join(proc.info["cmdline"] or [])
            if os.getpgid(proc.info["pid"]) == group or str(data_dir) in cmdline:
                found.append(cmdline)
        except (psutil.Error, ProcessLookupError):
            continue
    return found


def test_readme_run_command_serves_the_api_and_stops_cleanly(
    repo_root: Path, tmp_path: Path
) -> None:
    if not _port_8000_is_free():
        if os.environ.get("CI"):
            pytest.fail("port 8000 is taken; the run command needs it")
        pytest.skip("port 8000 is taken (is `quoteapi dev` running?)")
    command = readme_command(repo_root, "run-command")
    data_dir = tmp_path / "data"
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DATABASE_", "CLERK_", "QUOTEAPI_"))
    }
    env["QUOTEAPI_DATA_DIR"] = str(data_dir)
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
        _wait_ready(first, 120)  # the first start also installs into .venv
        assert "curl -i -X PUT" in log.read_text()
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
    assert _left_running(data_dir, first.pid) == []

    with run_command(command, repo_root, env, log) as second:
        assert _wait_ready(second, 30) < 30
        with httpx.Client(base_url=BASE, headers=auth, timeout=10) as http:
            read = http.get("/me/message")
            assert read.json()["message"] == "Kept."  # the data survived the restart
            assert read.headers["etag"] == kept_etag
            assert http.delete("/me/message", headers={"If-Match": kept_etag}).status_code == 204
            assert http.get("/me/message").status_code == 404
    assert _left_running(data_dir, second.pid) == []
