"""`quoteapi dev` as a real process: how it stops (and stops its embedded PostgreSQL, which
runs in a session of its own and outlives a dev that is killed), and what its first screen says.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import psutil
import pytest

from quoteapi.dev.embedded import EmbeddedPostgres
from tests.support.polling import wait_until
from tests.support.processes import (
    clean_env,
    free_port,
    left_running,
    spawn,
    stop_process,
    wait_ready,
)


class DevProcess:
    def __init__(self, process: subprocess.Popen[bytes], log: Path, port: int, web_port: int):
        self.process, self.log_path, self.port, self.web_port = process, log, port, web_port
        # What was still running once this run was stopped (`running_dev` stops it then).
        self.left_running: list[str] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@contextmanager
def running_dev(tmp_path: Path) -> Iterator[DevProcess]:
    """`quoteapi dev` in a process group of its own, on free ports, with its data in
    `tmp_path/data`, ready (/readyz 200 and the greeting printed). On the way out, if a test
    left it running, it is stopped with SIGTERM (SIGKILL only if it hangs) and waited for. What
    is still running then (its group, or a PostgreSQL on its data dir) is recorded in
    `left_running` for the test to assert on, and stopped, so that the suite leaves nothing
    running whatever the test found."""
    port, web_port = free_port(), free_port()
    log = tmp_path / f"dev-{port}.log"  # one per run: a restart's log is its own
    process = spawn(
        [sys.executable, "-m", "quoteapi", "dev", "--port", str(port), "--web-port", str(web_port)],
        cwd=tmp_path,
        env=clean_env({"quoteapi_data_dir": tmp_path / "data"}),
        log=log,
        start_new_session=True,
    )
    dev = DevProcess(process, log, port, web_port)
    try:
        wait_ready(
            process,
            lambda: "quoteapi dev is ready" in dev.log,
            within=90,
            what="quoteapi dev greeting",
            log=log,
        )
        assert httpx.get(f"{dev.url}/readyz", timeout=5).status_code == 200
        yield dev
    finally:
        stop_process(process, signal.SIGTERM, within=60)
        dev.left_running = left_running(tmp_path / "data", process.pid)
        if _processes_on(tmp_path / "data"):
            EmbeddedPostgres(tmp_path / "data").stop()


def _listening(port: int) -> bool:
    try:
        httpx.get(f"http://127.0.0.1:{port}/", timeout=1)
    except httpx.TransportError:
        return False
    return True


def _processes_on(data_dir: Path) -> list[str]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if str(data_dir) in cmdline:
            found.append(cmdline)
    return found


def _postmaster_pid(data_dir: Path) -> int:
    return int((data_dir / "pg" / "postmaster.pid").read_text().splitlines()[0])


def _one_sigterm(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)


def _terminal_closed(process: subprocess.Popen[bytes]) -> None:
    # A closing terminal sends SIGHUP to the job in its foreground: dev's process group.
    os.killpg(process.pid, signal.SIGHUP)


@pytest.mark.parametrize("stop", [_one_sigterm, _terminal_closed], ids=lambda f: f.__name__[1:])
def test_dev_stops_cleanly_with_its_page_server_and_database(
    tmp_path: Path, stop: Callable[[subprocess.Popen[bytes]], None]
) -> None:
    with running_dev(tmp_path) as dev:
        assert _listening(dev.web_port)
        assert _processes_on(tmp_path / "data")  # the embedded PostgreSQL
        stop(dev.process)
        assert dev.process.wait(timeout=60) == 0, dev.log
    assert "Traceback" not in dev.log
    assert not _listening(dev.port)
    assert not _listening(dev.web_port)
    assert dev.left_running == []
    assert "event=embedded_postgres_stopped" in dev.log


def test_after_a_sigkill_the_next_dev_takes_over_the_database_left_running(
    tmp_path: Path,
) -> None:
    with running_dev(tmp_path) as killed:
        killed.process.kill()
        killed.process.wait(timeout=30)
        assert _processes_on(tmp_path / "data")  # nothing stopped the embedded PostgreSQL
        orphan = _postmaster_pid(tmp_path / "data")
        with running_dev(tmp_path) as next_start:
            assert _postmaster_pid(tmp_path / "data") == orphan  # the same server, taken over
            next_start.process.send_signal(signal.SIGTERM)
            assert next_start.process.wait(timeout=60) == 0, next_start.log
    assert "Traceback" not in next_start.log
    assert next_start.left_running == killed.left_running == []
    assert "event=embedded_postgres_stopped" in next_start.log


def _token(tmp_path: Path, user: str) -> str:
    return subprocess.run(
        [sys.executable, "-m", "quoteapi", "token", "--user", user],
        env=clean_env({"quoteapi_data_dir": tmp_path / "data"}),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.strip()


def _wait_for_role_check(dev: DevProcess) -> None:
    wait_until(
        lambda: "event=rls_role_" in dev.log or "event=rls_bypassed" in dev.log,
        within=30,
        what=f"a role check logged by quoteapi dev ({dev.log_path})",
    )


def test_dev_runs_the_api_as_the_least_privilege_role_across_restarts(tmp_path: Path) -> None:
    auth = {"Authorization": f"Bearer {_token(tmp_path, 'user_dev_role')}"}
    with running_dev(tmp_path) as first:
        _wait_for_role_check(first)
        with httpx.Client(base_url=first.url, headers=auth, timeout=10) as http:
            assert http.put("/me/message", json={"message": "Bound."}).status_code == 201
            assert http.get("/me/message").json()["message"] == "Bound."
        first.process.send_signal(signal.SIGTERM)
        first.process.wait(timeout=60)
    with running_dev(tmp_path) as second:  # the role and its password kept in the data dir
        _wait_for_role_check(second)
        with httpx.Client(base_url=second.url, headers=auth, timeout=10) as http:
            assert http.get("/me/message").json()["message"] == "Bound."
            assert http.delete("/me/message").status_code == 204
    for dev in (first, second):
        assert "event=rls_bypassed" not in dev.log
        assert "event=rls_role_ok role=quoteapi_app" in dev.log
    assert first.left_running == second.left_running == []
