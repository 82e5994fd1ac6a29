"""A real `quoteapi serve` process on loopback (uvicorn, uvloop, httptools), for the tests that
need what only a process shows: signals, sockets, timeouts, its stderr."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

# Variables of the developer's shell that would change the server under test.
_OWN_PREFIXES = ("DATABASE_", "CLERK_", "QUOTEAPI_", "NEXT_PUBLIC_CLERK_", "CORS_")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def clean_env(settings: Mapping[str, object]) -> dict[str, str]:
    """This process's environment without our settings, plus `settings` (names upper-cased)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_OWN_PREFIXES)}
    env.update({name.upper(): str(value) for name, value in settings.items()})
    return env


class ServerProcess:
    """`python -m quoteapi serve --port N [args]` in `workdir` (so no `.env` is read), its stdout
    and stderr in `workdir/server.log`."""

    def __init__(
        self,
        workdir: Path,
        env: Mapping[str, str],
        port: int | None = None,
        args: Sequence[str] = (),
    ) -> None:
        self.workdir = workdir
        self.env = dict(env)
        self.port = port or free_port()
        self.args = tuple(args)
        self.log_path = workdir / "server.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, ready_within: float = 30.0) -> None:
        """Start the process; return once GET /healthz answers 200."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "quoteapi", "serve", "--port", str(self.port), *self.args],
                cwd=self.workdir,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.wait_healthy(ready_within)

    def wait_healthy(self, within: float) -> float:
        """Poll GET /healthz until it answers 200; return how long that took."""
        started = time.monotonic()
        while time.monotonic() - started < within:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"quoteapi serve exited {self.process.returncode}:\n{self.log}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return time.monotonic() - started
            except httpx.TransportError:
                time.sleep(0.05)  # poll interval
        raise RuntimeError(f"quoteapi serve was not healthy within {within} s:\n{self.log}")

    def signal(self, signum: int = signal.SIGTERM) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    def wait(self, timeout: float) -> int:
        """Wait for the process to exit; its exit status."""
        assert self.process is not None
        return self.process.wait(timeout=timeout)

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM, then SIGKILL if it is still running after `timeout`; the exit status."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        return self.process.returncode

    @property
    def log(self) -> str:
        """Everything the process wrote so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_records(self) -> list[dict[str, Any]]:
        """The JSON log lines written so far (other lines, if any, are skipped)."""
        records = []
        for line in self.log.splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict):
                records.append(record)
        return records


@contextmanager
def running_server(
    workdir: Path,
    env: Mapping[str, str],
    port: int | None = None,
    args: Sequence[str] = (),
    ready_within: float = 30.0,
) -> Iterator[ServerProcess]:
    """A started `ServerProcess`, stopped on the way out."""
    server = ServerProcess(workdir, env, port, args)
    try:
        server.start(ready_within)
        yield server
    finally:
        server.stop()
