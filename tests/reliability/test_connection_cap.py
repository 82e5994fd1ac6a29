"""The worker holds at most QUOTEAPI_MAX_CONNECTIONS connections (unset: what its open-file
limit allows after a reserve for the database pool and files), against a real `quoteapi serve`
started with a low descriptor limit: when idle connections fill it, a user's request is still
answered, either served (the longest-idle connection was closed to make room) or refused with a
503 problem it can act on, never a reset, an EOF or a hang; reaching the cap is logged. A cap the
limit cannot allow, or a limit that leaves no room for connections at all, stops start-up with
one line."""

from __future__ import annotations

import asyncio
import resource
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from quoteapi.edge.limits import (
    IDLE_BEFORE_EVICTION_SECONDS,
    LISTEN_BACKLOG,
    RESERVED_DESCRIPTORS,
)
from tests.support.polling import until
from tests.support.problems import PROBLEM_CONTENT_TYPE
from tests.support.processes import (
    ServerProcess,
    running_server,
    serve_env,
    serve_fixture,
)

pytestmark = pytest.mark.slow

SOFT_OPEN_FILES = 256  # the worker's soft RLIMIT_NOFILE
IDLE_CONNECTIONS = 300  # more than that limit allows
ATTACK_S = 3.0
USER_ATTEMPTS = 5
USER_TIMEOUT_S = 5.0
# Descriptors a worker keeps beside its client connections with the default pool of 10: 202.
RESERVE = 10 + RESERVED_DESCRIPTORS + LISTEN_BACKLOG


def open_files_limit(soft: int) -> Callable[[], None]:
    """A `preexec_fn` that lowers the child's soft open-file limit to `soft`."""

    def lower() -> None:
        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    return lower


@pytest.fixture
def descriptors_for_the_attack() -> Iterator[None]:
    """This test process's own soft open-file limit, raised to hold every idle connection."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = IDLE_CONNECTIONS + 256
    if soft != resource.RLIM_INFINITY and soft < needed:
        resource.setrlimit(
            resource.RLIMIT_NOFILE,
            (needed if hard == resource.RLIM_INFINITY else min(needed, hard), hard),
        )
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


# `quoteapi serve` with a soft limit of SOFT_OPEN_FILES descriptors, QUOTEAPI_MAX_CONNECTIONS
# unset; the read deadline is far longer than the test, so only the cap closes a connection.
server = serve_fixture(
    scope="function",
    preexec_fn=open_files_limit(SOFT_OPEN_FILES),
    quoteapi_request_read_timeout_seconds=60,
    quoteapi_shutdown_grace_seconds=1,
)


class HoggingConnections:
    """Connections that hold a place at the cap: each sends `dribble` a byte every half second
    (by default nothing at all), and is re-opened as soon as the server closes it."""

    def __init__(self, port: int, ends: float, dribble: bytes = b"") -> None:
        self.port, self.ends, self.dribble = port, ends, dribble
        self.opened = 0

    async def keep_one(self) -> None:
        while time.monotonic() < self.ends:
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
            except OSError:
                continue  # the backlog was full: try again, until the attack ends
            self.opened += 1
            try:  # until the server closes it (b"" or a reset) or the attack ends
                left = max(self.ends - time.monotonic(), 0)
                await asyncio.wait_for(self._hold(reader, writer), left)
            except (TimeoutError, OSError):
                pass
            finally:
                writer.close()

    async def _hold(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for byte in self.dribble:
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(0.5)
        await reader.read(1024)


def answer_or_failure(outcome: httpx.Response | Exception) -> str:
    """What a user's GET /healthz got, if not one of the two answers allowed at the cap."""
    if isinstance(outcome, Exception):
        return f"{type(outcome).__name__}: {outcome}"
    if outcome.status_code == 200:
        return ""
    if (
        outcome.status_code == 503
        and outcome.headers.get("content-type") == PROBLEM_CONTENT_TYPE
        and outcome.json().get("code") == "too-many-connections"
        and int(outcome.headers.get("retry-after", "0")) > 0
    ):
        return ""
    return f"{outcome.status_code} {dict(outcome.headers)} {outcome.text[:200]}"


async def a_users_request(url: str) -> httpx.Response | Exception:
    """GET /healthz on a fresh connection: the answer, or what went wrong."""
    try:
        async with httpx.AsyncClient(base_url=url, timeout=USER_TIMEOUT_S) as http:
            return await http.get("/healthz")
    except httpx.TransportError as exc:
        return exc


@pytest.mark.usefixtures("descriptors_for_the_attack")
async def test_at_the_connection_cap_a_user_gets_an_answer_never_a_reset(
    server: ServerProcess,
) -> None:
    attack = HoggingConnections(server.port, ends=time.monotonic() + ATTACK_S)
    attackers = asyncio.gather(*(attack.keep_one() for _ in range(IDLE_CONNECTIONS)))
    outcomes = []
    try:
        await until(
            lambda: attack.opened >= IDLE_CONNECTIONS,
            within=ATTACK_S,
            what=f"{IDLE_CONNECTIONS} idle connections open",
        )
        for _ in range(USER_ATTEMPTS):  # spread over the attack, one after the other
            outcomes.append(await a_users_request(server.url))
    finally:
        await attackers
    failures = [failure for outcome in outcomes if (failure := answer_or_failure(outcome))]
    print(f"\n{attack.opened} idle connections opened; the user got {outcomes}")
    assert not failures, failures
    assert server.logged_event("connection_cap_reached")


async def test_connections_dribbling_their_heads_give_way_to_users_at_the_cap(
    start_server: Callable[..., ServerProcess], database_url: str
) -> None:
    server = start_server(
        database_url, quoteapi_max_connections=20, quoteapi_request_read_timeout_seconds=60
    )
    head = b"GET /healthz HTTP/1.1\r\nHost: quoteapi.test\r\nX-Pad: " + b"a" * 200
    dribble = HoggingConnections(server.port, ends=time.monotonic() + 8, dribble=head)
    dribblers = asyncio.gather(*(dribble.keep_one() for _ in range(30)))
    try:
        await until(lambda: dribble.opened >= 30, within=5, what="30 dribbling connections")
        await asyncio.sleep(IDLE_BEFORE_EVICTION_SECONDS + 0.5)  # each head is a second old
        outcomes = [await a_users_request(server.url) for _ in range(10)]
    finally:
        await dribblers
    statuses = [o.status_code if isinstance(o, httpx.Response) else repr(o) for o in outcomes]
    print(f"\n{dribble.opened} dribbling connections opened at a cap of 20; users got {statuses}")
    assert statuses == [200] * 10, statuses


def serve_stopping_at_start_up(
    database_url: str, workdir: Path, soft_open_files: int, **settings: object
) -> tuple[int, list[str]]:
    """Start `quoteapi serve` with `settings` and that soft open-file limit, expecting it to exit
    before it answers; its exit status and the lines of its stdout and stderr."""
    env = serve_env(database_url, **settings)
    server = ServerProcess(workdir, env, preexec_fn=open_files_limit(soft_open_files))
    try:
        with pytest.raises(RuntimeError, match="the process exited"):
            server.start()
    finally:
        status = server.stop()
    assert status is not None
    return status, server.log.strip().splitlines()


def test_max_connections_above_what_the_open_file_limit_allows_stops_start_up(
    database_url: str, tmp_path: Path
) -> None:
    status, lines = serve_stopping_at_start_up(
        database_url, tmp_path, SOFT_OPEN_FILES, quoteapi_max_connections=5000
    )
    assert status == 2
    assert len(lines) == 1, lines
    assert lines[0].startswith("quoteapi: configuration error: QUOTEAPI_MAX_CONNECTIONS")


@pytest.mark.parametrize("soft_open_files", [RESERVE - 2, RESERVE])
def test_an_open_file_limit_that_leaves_no_room_for_connections_stops_start_up(
    soft_open_files: int, database_url: str, tmp_path: Path
) -> None:
    status, lines = serve_stopping_at_start_up(database_url, tmp_path, soft_open_files)
    assert status == 2
    assert len(lines) == 1, lines
    assert lines[0].startswith("quoteapi: configuration error: ulimit -n: ")
    assert f"limit is {soft_open_files}" in lines[0]
    assert f"{RESERVE} descriptors are kept" in lines[0]


def test_an_open_file_limit_one_above_the_reserve_starts_and_serves(
    database_url: str, tmp_path: Path
) -> None:
    with (
        running_server(
            tmp_path, serve_env(database_url), preexec_fn=open_files_limit(RESERVE + 1)
        ) as server,
        server.client() as http,
    ):
        assert http.get("/healthz").status_code == 200
