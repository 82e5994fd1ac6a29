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

from tests.servers import clean_env, free_port


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
