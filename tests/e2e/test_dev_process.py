"""`quoteapi dev` as a real process: how it stops, and what its first screen says."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import psutil

from tests.support.processes import clean_env, free_port


class DevProcess:
    def __init__(self, process: subprocess.Popen[bytes], log: Path, port: int, web_port: int):
        self.process, self.log_path, self.port, self.web_port = process, log, port, web_port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@contextmanager
def running_dev(tmp_path: Path) -> Iterator[DevProcess]:
    """`quoteapi dev` on free ports with its data in `tmp_path/data`, ready (/readyz 200 and the
    greeting printed); SIGKILLed on the way out if a test left it running."""
    port, web_port = free_port(), free_port()
    log = tmp_path / "dev.log"
    env = clean_env({"quoteapi_data_dir": tmp_path / "data"})
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "quoteapi",
                "dev",
                "--port",
                str(port),
                "--web-port",
                str(web_port),
            ],
            cwd=tmp_path,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    dev = DevProcess(process, log, port, web_port)
    try:
        deadline = time.monotonic() + 90
        while "quoteapi dev is ready" not in dev.log:
            assert process.poll() is None, f"quoteapi dev exited early:\n{dev.log}"
            assert time.monotonic() < deadline, f"quoteapi dev was not ready:\n{dev.log}"
            time.sleep(0.1)  # poll interval
        assert httpx.get(f"{dev.url}/readyz", timeout=5).status_code == 200
        yield dev
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)


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


def test_one_sigterm_stops_dev_its_page_server_and_database_cleanly(tmp_path: Path) -> None:
    with running_dev(tmp_path) as dev:
        assert _listening(dev.web_port)
        assert _processes_on(tmp_path / "data")  # the embedded PostgreSQL
        dev.process.send_signal(signal.SIGTERM)
        assert dev.process.wait(timeout=60) == 0, dev.log
    assert "Traceback" not in dev.log
    assert not _listening(dev.port)
    assert not _listening(dev.web_port)
    assert _processes_on(tmp_path / "data") == []
    assert "event=embedded_postgres_stopped" in dev.log


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
    deadline = time.monotonic() + 30
    while "event=rls_role_" not in dev.log and "event=rls_bypassed" not in dev.log:
        assert time.monotonic() < deadline, f"no role check logged:\n{dev.log}"
        time.sleep(0.1)  # poll interval


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
