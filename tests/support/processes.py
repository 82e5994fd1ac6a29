"""Processes on loopback for the tests that need what only a process shows (signals, sockets,
timeouts, its stderr): one free-port helper, one clean-environment rule, one start-and-poll
helper, and a real `quoteapi serve` (uvicorn, uvloop, httptools) built on them, with one
fixture factory for a module's server (`serve_fixture`)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import httpx
import psutil
import pytest

from tests.support.polling import wait_until
from tests.support.tokens import TEST_ISSUER, TEST_KEY

# Variables of the developer's shell that would change the server under test: every setting
# quoteapi reads starts with one of these (.env.example lists them).
_OWN_PREFIXES = ("DATABASE_", "CLERK_", "QUOTEAPI_", "NEXT_PUBLIC_CLERK_", "CORS_", "OTEL_")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def clean_env(settings: Mapping[str, object] | None = None) -> dict[str, str]:
    """This process's environment without our settings, plus `settings` (names upper-cased)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_OWN_PREFIXES)}
    env.update({name.upper(): str(value) for name, value in (settings or {}).items()})
    return env


def answers_200(url: str) -> bool:
    """GET `url` answers 200 (False while nothing listens there)."""
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def accepts_connections(port: int) -> bool:
    """Something listens on 127.0.0.1:`port`."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
    except OSError:
        return False
    return True


# --- Start a process and poll until it is ready ------------------------------------------------


def spawn(
    argv: Sequence[str], *, cwd: Path, env: Mapping[str, str], log: Path, **popen: Any
) -> subprocess.Popen[bytes]:
    """Start `argv` in `cwd` (so no `.env` is read from the repository), stdin closed, stdout
    and stderr appended to `log`."""
    cwd.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as output:
        return subprocess.Popen(
            list(argv),
            cwd=cwd,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            **popen,
        )


def wait_ready(
    process: subprocess.Popen[bytes],
    ready: Callable[[], object],
    *,
    within: float,
    what: str,
    log: Path,
) -> float:
    """Poll `ready` until it holds; how long that took. Fails at once, with the log, if the
    process exits first, and with the log if it is not ready within `within` seconds."""

    def ready_or_exited() -> object:
        if process.poll() is not None:
            raise RuntimeError(f"{what}: the process exited {process.returncode}:\n{_read(log)}")
        return ready()

    try:
        return wait_until(ready_or_exited, within=within, what=what)
    except TimeoutError as exc:
        raise RuntimeError(f"{exc}\n{_read(log)}") from None


def stop_process(
    process: subprocess.Popen[bytes],
    signum: int = signal.SIGTERM,
    *,
    within: float = 30.0,
    group: bool = False,
) -> int:
    """Send `signum` (to the whole process group with `group`), then SIGKILL if it is still
    running after `within` seconds; the exit status."""
    if process.poll() is None:
        if group:
            os.killpg(process.pid, signum)
        else:
            process.send_signal(signum)
        try:
            process.wait(timeout=within)
        except subprocess.TimeoutExpired:
            if group:
                os.killpg(process.pid, signal.SIGKILL)
            else:
                process.kill()
            process.wait(timeout=10)
    return process.returncode


@contextmanager
def running_process(
    argv: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str],
    log: Path,
    ready: Callable[[], object],
    within: float,
    what: str,
    stop_signal: int = signal.SIGTERM,
    own_group: bool = False,
    **popen: Any,
) -> Iterator[subprocess.Popen[bytes]]:
    """`spawn`, `wait_ready`, yield the process, `stop_process` on the way out. `own_group`
    starts it in a process group of its own and signals the whole group (a shell's children)."""
    process = spawn(argv, cwd=cwd, env=env, log=log, start_new_session=own_group, **popen)
    try:
        wait_ready(process, ready, within=within, what=what, log=log)
        yield process
    finally:
        stop_process(process, stop_signal, group=own_group)


def left_running(data_dir: Path, group: int) -> list[str]:
    """The command lines of processes still alive from a test's run: any in process group
    `group`, or any naming `data_dir` (an embedded PostgreSQL, which runs in a session of its
    own)."""
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        try:
            cmdline = " ".join(proc.info["cmdline"] or [])
            if os.getpgid(proc.info["pid"]) == group or str(data_dir) in cmdline:
                found.append(cmdline)
        except (psutil.Error, ProcessLookupError):
            continue
    return found


def _read(log: Path) -> str:
    return log.read_text(errors="replace") if log.exists() else ""


# --- `quoteapi serve` ---------------------------------------------------------------------------


def serve_env(database_url: str, **settings: object) -> dict[str, str]:
    """The environment of a `quoteapi serve` process for the tests: the test Clerk key (so
    `mint`'s tokens pass), none of the developer's settings, plus `settings`."""
    return clean_env(
        {
            "database_url": database_url,
            "clerk_jwt_key": TEST_KEY.public_pem,
            "clerk_issuer": TEST_ISSUER,
            **settings,
        }
    )


class ServerProcess:
    """`python -m quoteapi serve --port N [args]` (or `dev`, as `command`) in `workdir` (so no
    `.env` is read), its stdout and stderr in `workdir/server.log`."""

    def __init__(
        self,
        workdir: Path,
        env: Mapping[str, str],
        port: int | None = None,
        args: Sequence[str] = (),
        command: Literal["serve", "dev"] = "serve",
        **popen: Any,
    ) -> None:
        self.workdir = workdir
        self.env = dict(env)
        self.port = port or free_port()
        self.args = tuple(args)
        self.command = command
        self.popen = popen  # further `subprocess.Popen` options, such as `preexec_fn`
        self.log_path = workdir / "server.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self, timeout: float = 10.0) -> httpx.Client:
        """A client for this server (close it, or use it in `with`)."""
        return httpx.Client(base_url=self.url, timeout=timeout)

    def start(self, ready_within: float = 30.0) -> None:
        """Start the process; return once GET /healthz answers 200."""
        argv = [
            sys.executable,
            "-m",
            "quoteapi",
            self.command,
            "--port",
            str(self.port),
            *self.args,
        ]
        self.process = spawn(argv, cwd=self.workdir, env=self.env, log=self.log_path, **self.popen)
        wait_ready(
            self.process,
            lambda: answers_200(f"{self.url}/healthz"),
            within=ready_within,
            what=f"quoteapi {self.command} answering GET /healthz",
            log=self.log_path,
        )

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
        return stop_process(self.process, within=timeout)

    @property
    def log(self) -> str:
        """Everything the process wrote so far."""
        return _read(self.log_path)

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

    def logged_event(self, event: str) -> bool:
        """A JSON log line records `event`."""
        return any(record.get("event") == event for record in self.log_records())


@contextmanager
def running_server(
    workdir: Path,
    env: Mapping[str, str],
    port: int | None = None,
    args: Sequence[str] = (),
    ready_within: float = 30.0,
    command: Literal["serve", "dev"] = "serve",
    **popen: Any,
) -> Iterator[ServerProcess]:
    """A started `ServerProcess` (`popen`: further `subprocess.Popen` options), stopped on the
    way out."""
    server = ServerProcess(workdir, env, port, args, command, **popen)
    try:
        server.start(ready_within)
        yield server
    finally:
        server.stop()


def serve_fixture(
    *,
    scope: Literal["function", "module", "session"] = "module",
    database: str = "database_url",
    preexec_fn: Callable[[], object] | None = None,
    **settings: object,
) -> Any:
    """A fixture yielding a healthy `quoteapi serve` with `settings`, on the URL the fixture
    named `database` gives, stopped at the end of its `scope`; `preexec_fn` runs in the process
    before it starts (a resource limit). A module that needs settings of its own overrides the
    session's `server` (tests/conftest.py) saying only those:

        server = serve_fixture(quoteapi_request_read_timeout_seconds=1.5)
    """
    popen = {} if preexec_fn is None else {"preexec_fn": preexec_fn}

    @pytest.fixture(scope=scope)
    def server(
        request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
    ) -> Iterator[ServerProcess]:
        env = serve_env(request.getfixturevalue(database), **settings)
        owner = request.fixturename if scope == "session" else request.module.__name__
        workdir = tmp_path_factory.mktemp(f"serve-{owner.rsplit('.', 1)[-1]}")
        with running_server(workdir, env, **popen) as process:
            yield process

    return server
