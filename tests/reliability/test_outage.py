"""A database outage under live traffic, against a real `quoteapi serve` process: PostgreSQL
crashes (pg_ctl stop -m immediate) and comes back on the same port. Meanwhile every request is
answered in bounded time (503 problem+json with Retry-After while the database is away, never a
500 or a hang), /readyz says 503, the service recovers by itself within 5 s of PostgreSQL being
back, and every write it acknowledged is still there afterwards."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from quoteapi.database.url import parse_database_url
from quoteapi.dev.databases import create_database
from quoteapi.migrations import upgrade_async
from tests.support.polling import until
from tests.support.processes import ServerProcess
from tests.support.tokens import AuthHeaders

pytestmark = pytest.mark.slow

USERS = 8
POOL_TIMEOUT_S = 2.0
CONNECT_TIMEOUT_S = 2.0
# The longest any request may take while the database is away: a pool wait, then opening a
# connection, its retries and their pauses included (DATABASE_CONNECT_TIMEOUT bounds them all).
ANSWER_WITHIN_S = POOL_TIMEOUT_S + CONNECT_TIMEOUT_S
RECOVERY_WITHIN_S = 5.0


@dataclass
class Exchange:
    """One request the traffic made and what came back (status None: no answer at all)."""

    user: str
    method: str
    quote: str | None
    started: float
    elapsed: float
    status: int | None
    body: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    error: str | None = None


@pytest.fixture
def own_postgres(tmp_path: Path) -> Iterator[object]:
    """A PostgreSQL of this test's own (durable: fsync on), which the test crashes."""
    from quoteapi.dev.embedded import EmbeddedPostgres, EmbeddedUnavailable

    try:
        server = EmbeddedPostgres(tmp_path / "pg", durable=True)
    except EmbeddedUnavailable:
        pytest.skip("the embedded PostgreSQL is not available on this platform")
    server.start()
    yield server
    server.stop(mode="immediate")


class Traffic:
    """`USERS` clients, each saving a new distinct quote and reading it back in a loop."""

    def __init__(self, base_url: str, auth_headers: AuthHeaders) -> None:
        self.base_url = base_url
        self.auth_headers = auth_headers
        self.log: list[Exchange] = []
        self.stopping = asyncio.Event()

    async def run(self) -> None:
        limits = httpx.Limits(max_connections=USERS + 2)
        timeout = httpx.Timeout(ANSWER_WITHIN_S + 10)  # a hang shows as an error, not a stall
        async with httpx.AsyncClient(base_url=self.base_url, limits=limits, timeout=timeout) as c:
            await asyncio.gather(*(self._client(c, f"user_outage_{n}") for n in range(USERS)))

    async def _client(self, http: httpx.AsyncClient, user: str) -> None:
        for n in range(100_000):  # bounded; ends when told to stop
            if self.stopping.is_set():
                return
            headers = self.auth_headers(user)  # fresh: tokens live 60 s
            quote = f"{user} quote {n}"
            await self._exchange(http, user, "PUT", quote, headers)
            await self._exchange(http, user, "GET", None, headers)

    async def _exchange(
        self, http: httpx.AsyncClient, user: str, method: str, quote: str | None, headers: dict
    ) -> None:
        started = time.monotonic()
        try:
            json = {"message": quote} if quote is not None else None
            response = await http.request(method, "/me/message", json=json, headers=headers)
        except httpx.HTTPError as exc:
            elapsed = time.monotonic() - started
            self.log.append(Exchange(user, method, quote, started, elapsed, None, error=repr(exc)))
            return
        self.log.append(
            Exchange(
                user,
                method,
                quote,
                started,
                time.monotonic() - started,
                response.status_code,
                response.text,
                dict(response.headers),
            )
        )

    def acknowledged_puts(self, since: float = 0.0) -> list[Exchange]:
        return [
            e
            for e in self.log
            if e.method == "PUT" and e.status in (200, 201) and e.started >= since
        ]


async def test_database_crash_under_traffic_answers_503_recovers_and_loses_no_write(
    own_postgres: object,
    tmp_path: Path,
    start_server: Callable[..., ServerProcess],
    auth_headers: AuthHeaders,
) -> None:
    from quoteapi.dev.embedded import EmbeddedPostgres

    assert isinstance(own_postgres, EmbeddedPostgres)
    pg = own_postgres
    await create_database(pg.url(), "quoteapi")
    database_url = pg.url("quoteapi")
    await upgrade_async(parse_database_url(database_url))
    server = start_server(
        database_url,
        database_pool_timeout=POOL_TIMEOUT_S,
        database_connect_timeout=CONNECT_TIMEOUT_S,
    )
    traffic = Traffic(server.url, auth_headers)
    running = asyncio.create_task(traffic.run())
    readyz: list[tuple[float, int]] = []

    async def probe_readyz(http: httpx.AsyncClient) -> int:
        status = (await http.get("/readyz")).status_code
        readyz.append((time.monotonic(), status))
        return status

    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=ANSWER_WITHIN_S + 10) as http:
            # Before: every client has had writes acknowledged.
            await until(
                lambda: (
                    len({e.user for e in traffic.acknowledged_puts()}) == USERS
                    and len(traffic.acknowledged_puts()) >= 3 * USERS
                ),
                within=30,
                what="traffic flowing before the outage",
            )
            assert await probe_readyz(http) == 200

            # During: PostgreSQL crashes; requests keep being answered, with 503.
            port = pg.port
            await asyncio.to_thread(pg.stop, mode="immediate")
            down_at = time.monotonic()
            await until(
                lambda: (
                    sum(1 for e in traffic.log if e.started > down_at and e.status == 503)
                    >= 2 * USERS
                ),
                within=30,
                what="503 answers during the outage",
            )
            assert await probe_readyz(http) == 503

            # After: PostgreSQL is back on the same port; the service recovers by itself.
            await asyncio.to_thread(pg.start, port)
            up_at = time.monotonic()

            async def recovered() -> bool:
                return await probe_readyz(http) == 200 and bool(
                    traffic.acknowledged_puts(since=up_at)
                )

            await until(recovered, within=6 * RECOVERY_WITHIN_S, what="the service recovering")
            recovered_at = time.monotonic()
            recovery_s = recovered_at - up_at
            print(f"\nrecovery after PostgreSQL came back: {recovery_s:.2f} s")
            # Every client writes again after the recovery.
            await until(
                lambda: (
                    len({e.user for e in traffic.acknowledged_puts(since=recovered_at)}) == USERS
                ),
                within=20,
                what="every client writing again",
            )
    finally:
        traffic.stopping.set()
        await asyncio.wait_for(running, ANSWER_WITHIN_S + 20)

    assert recovery_s < RECOVERY_WITHIN_S

    # Every request was answered, in bounded time, with one of the expected answers.
    unanswered = [e for e in traffic.log if e.status is None]
    assert unanswered == [], unanswered[:3]
    assert {e.status for e in traffic.log} <= {200, 201, 404, 503}, {e.status for e in traffic.log}
    slowest = max(traffic.log, key=lambda e: e.elapsed)
    print(f"requests: {len(traffic.log)}, slowest answer {slowest.elapsed:.2f} s")
    assert slowest.elapsed < ANSWER_WITHIN_S, slowest
    unavailable = [e for e in traffic.log if e.status == 503]
    print(f"503 answers during the outage: {len(unavailable)}")
    for e in unavailable:
        assert e.headers["content-type"] == "application/problem+json"
        assert e.headers["retry-after"].isdigit()
        assert '"code":"database-unavailable"' in e.body.replace(" ", "")
        assert "Traceback" not in e.body
        assert "asyncpg" not in e.body
    assert [s for _, s in readyz][:2] == [200, 503]

    # Nothing acknowledged is lost: each user's stored quote is their last acknowledged write,
    # or a later write whose answer was lost in the crash (it may have committed).
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        for n in range(USERS):
            user = f"user_outage_{n}"
            puts = [e for e in traffic.log if e.user == user and e.method == "PUT"]
            last_ack = max(i for i, e in enumerate(puts) if e.status in (200, 201))
            possible = {puts[last_ack].quote} | {
                e.quote for e in puts[last_ack + 1 :] if e.status not in (200, 201)
            }
            stored = await http.get("/me/message", headers=auth_headers(user))
            assert stored.status_code == 200, stored.text
            assert stored.json()["message"] in possible, (user, stored.json(), puts[last_ack])

    records = server.log_records()
    assert not [r for r in records if r.get("level") in ("error", "critical")], [
        r for r in records if r.get("level") in ("error", "critical")
    ][:3]
