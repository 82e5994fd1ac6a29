"""The waits only a real `quoteapi serve` and a real database process show: the app role's
backends frozen (SIGSTOP, as a half-open link to Neon or its pooler leaves them), a table lock
held as a migration holds it, and a client that leaves while its request waits. Every request is
answered in bounded time, /readyz says not-ready meanwhile, and the pool recovers by itself;
the client that left has its statement cancelled on the server and its pool slot freed, and is
logged as 499. Connections to the database carry TCP keepalives."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg
import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from quoteapi.database.connect import KEEPALIVE_IDLE_SECONDS
from quoteapi.database.url import parse_database_url
from tests.support.locks import lock_row, until_a_session_waits
from tests.support.polling import until
from tests.support.problems import assert_retry_later
from tests.support.processes import ServerProcess
from tests.support.roles import backends_of
from tests.support.tokens import AuthHeaders, MintToken
from tests.support.webhooks import store_quotes

pytestmark = pytest.mark.slow

POOL_SIZE = 4
POOL_TIMEOUT_S = 1.0
STATEMENT_TIMEOUT_S = 1.5
LOCK_TIMEOUT_S = 0.5
# A connection whose statement ran out of time is closed; a backend that cannot even
# acknowledge the cancellation (it is frozen) is given 2 s (SQLAlchemy's graceful close).
CLOSE_S = 2.0
LONGEST_ANSWER_S = POOL_TIMEOUT_S + STATEMENT_TIMEOUT_S + CLOSE_S + 0.5
BOUNDS = {
    "database_pool_size": POOL_SIZE,
    "database_pool_timeout": POOL_TIMEOUT_S,
    "database_statement_timeout": STATEMENT_TIMEOUT_S,
    "database_lock_timeout": LOCK_TIMEOUT_S,
}


@pytest.fixture
def app_role(database_url: str) -> str:
    role: str = parse_database_url(database_url).connect_kwargs["user"]
    return role


async def timed(request: Awaitable[httpx.Response]) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = await request
    return response, time.monotonic() - started


async def answers_normally(http: httpx.AsyncClient, headers: dict[str, str]) -> bool:
    return (await http.get("/me/message", headers=headers)).status_code in (200, 404)


async def test_frozen_backends_answer_503_in_bounded_time_and_the_pool_recovers(
    start_server: Callable[..., ServerProcess],
    database_url: str,
    owner: asyncpg.Connection,
    app_role: str,
    auth_headers: AuthHeaders,
) -> None:
    server = start_server(database_url, **BOUNDS)
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:

        async def pool_filled() -> bool:
            users = (f"user_frozen_{n}" for n in range(2 * POOL_SIZE))
            await asyncio.gather(*(http.get("/me/message", headers=auth_headers(u)) for u in users))
            return len(await backends_of(owner, app_role)) >= POOL_SIZE

        await until(pool_filled, within=20, what="every pooled connection open")
        frozen = await backends_of(owner, app_role)
        for pid in frozen:
            os.kill(pid, signal.SIGSTOP)
        try:
            requests = [
                timed(http.get("/me/message", headers=auth_headers(f"user_frozen_{n}")))
                for n in range(13)
            ]
            *answers, (ready, ready_s) = await asyncio.gather(*requests, timed(http.get("/readyz")))
        finally:
            for pid in frozen:
                os.kill(pid, signal.SIGCONT)
        codes = [response.json().get("code") for response, _ in answers]
        print(f"\nfrozen backends: {sorted(codes)}; slowest {max(s for _, s in answers):.2f} s")
        for response, seconds in answers:
            assert seconds < LONGEST_ANSWER_S, (seconds, response.text)
            if response.status_code != 200:
                assert_retry_later(response, response.json()["code"])
        assert set(codes) == {"database-statement-timeout", "server-busy"}, codes
        assert (ready.status_code, ready_s < LONGEST_ANSWER_S) == (503, True), ready.text
        assert ready.json()["database"] in ("busy", "timeout"), ready.text

        headers = auth_headers("user_after_the_freeze")
        await until(lambda: answers_normally(http, headers), within=5, what="recovery")
        assert (await http.get("/readyz")).status_code == 200


async def test_a_table_lock_held_by_a_migration_is_503_in_bounded_time_and_not_ready(
    start_server: Callable[..., ServerProcess],
    database_url: str,
    owner: asyncpg.Connection,
    auth_headers: AuthHeaders,
) -> None:
    server = start_server(database_url, **BOUNDS)
    headers = auth_headers("user_table_locked")
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        migration = owner.transaction()
        await migration.start()
        await owner.execute("LOCK TABLE user_messages IN ACCESS EXCLUSIVE MODE")
        try:
            (read, read_s), (write, write_s), (ready, _) = await asyncio.gather(
                timed(http.get("/me/message", headers=headers)),
                timed(http.put("/me/message", json={"message": "Later."}, headers=headers)),
                timed(http.get("/readyz")),
            )
        finally:
            await migration.rollback()
        print(f"\ntable lock: GET answered in {read_s:.2f} s, PUT in {write_s:.2f} s")
        assert_retry_later(read, "database-statement-timeout")
        assert_retry_later(write, "database-statement-timeout")
        assert STATEMENT_TIMEOUT_S <= max(read_s, write_s) < STATEMENT_TIMEOUT_S + 1
        assert (ready.status_code, ready.json()["database"]) == (503, "timeout"), ready.text
        # The lock released, the same requests succeed on their first try.
        assert (await http.get("/me/message", headers=headers)).status_code == 404
        assert (await http.get("/readyz")).status_code == 200


async def test_a_client_that_leaves_while_its_request_waits_frees_its_slot_and_is_a_499(
    start_server: Callable[..., ServerProcess],
    database_url: str,
    owner: asyncpg.Connection,
    owner_engine: AsyncEngine,
    mint_token: MintToken,
    auth_headers: AuthHeaders,
) -> None:
    # One pooled connection, and waits long enough that only the client's leaving ends this one.
    server = start_server(
        database_url,
        database_pool_size=1,
        database_statement_timeout=30,
        database_lock_timeout=20,
    )
    await store_quotes(owner_engine, "user_who_leaves")
    request_id = f"leaves-{uuid.uuid4().hex[:12]}"
    body = json.dumps({"message": "Never mind."}).encode()
    put = (
        "PUT /me/message HTTP/1.1\r\nHost: quoteapi.test\r\n"
        f"Authorization: Bearer {mint_token('user_who_leaves')}\r\n"
        f"X-Request-ID: {request_id}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    held = await lock_row(owner, "user_who_leaves")
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(put)
        await writer.drain()
        await until_a_session_waits(owner, "transactionid", "the PUT waiting on the row lock")
        writer.close()  # the client gives up
        await writer.wait_closed()
        left = time.monotonic()

        async def nobody_waits() -> bool:
            await owner.execute("SELECT pg_stat_clear_snapshot()")
            waiting = await owner.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'transactionid'"
                " AND datname = current_database()"
            )
            return waiting == 0

        await until(nobody_waits, within=3, what="the abandoned statement cancelled")
        print(f"\nclient left: its statement cancelled {time.monotonic() - left:.2f} s later")
        # The only pooled slot is free again while the row is still locked.
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
            other = await http.get("/me/message", headers=auth_headers("user_who_stays"))
        assert other.status_code == 404, other.text
    finally:
        await held.rollback()

    def access_line() -> dict[str, object] | None:
        lines = [r for r in server.log_records() if r.get("request_id") == request_id]
        return next((r for r in lines if r["logger"] == "quoteapi.access"), None)

    await until(lambda: access_line() is not None, within=5, what="the access-log line")
    line = access_line()
    assert line is not None
    assert (line["status"], line["level"]) == (499, "info")
    async with owner_engine.connect() as connection:
        stored = await connection.scalar(
            text("SELECT message FROM user_messages WHERE user_id = 'user_who_leaves'")
        )
    assert stored == "A quote."  # the abandoned write never ran
    assert not [r for r in server.log_records() if r.get("level") == "error"]


def _database_sockets(pid: int, port: int) -> list[tuple[str, int]]:
    """The process's TCP connections to `port` on loopback: each one's timer kind (/proc's
    `tr`: 2 is the keepalive timer on an idle connection) and when it fires, in jiffies."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except FileNotFoundError:  # closed since it was listed (the test's HTTP connection)
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    found = []
    for line in Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        remote_port = int(fields[2].split(":")[1], 16)
        if fields[9] in inodes and remote_port == port and fields[3] == "01":  # ESTABLISHED
            timer, when = fields[5].split(":")
            found.append((timer, int(when, 16)))
    return found


async def test_database_connections_carry_tcp_keepalives(
    start_server: Callable[..., ServerProcess], database_url: str, auth_headers: AuthHeaders
) -> None:
    server = start_server(database_url)
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        assert await answers_normally(http, auth_headers("user_keepalive"))
    assert server.process is not None
    port = parse_database_url(database_url).connect_kwargs["port"]
    sockets = _database_sockets(server.process.pid, port)
    assert sockets, "no connection to the database"
    hertz = os.sysconf("SC_CLK_TCK")
    for timer, when in sockets:
        assert timer == "02", sockets
        assert 0 < when <= KEEPALIVE_IDLE_SECONDS * hertz, sockets
