"""Graceful shutdown of a real `quoteapi serve` process: on SIGTERM it stops accepting
connections at once, lets the request in flight finish (up to QUOTEAPI_SHUTDOWN_GRACE_SECONDS),
closes its database pool and exits 0. The slow request is a PUT waiting on a row lock that the
test holds from its own connection, released only after the SIGTERM."""

from __future__ import annotations

import asyncio
import signal
import socket
import time
from collections.abc import Callable

import asyncpg
import httpx
import pytest

from tests.support.locks import hold_row_lock_until_a_put_waits
from tests.support.polling import until
from tests.support.problems import assert_problem
from tests.support.processes import ServerProcess
from tests.support.tokens import AuthHeaders

pytestmark = pytest.mark.slow


def _refuses_connections(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
    except ConnectionRefusedError:
        return True
    return False


async def test_sigterm_lets_the_request_in_flight_finish_then_exits_0(
    start_server: Callable[..., ServerProcess],
    database_url: str,
    owner: asyncpg.Connection,
    auth_headers: AuthHeaders,
) -> None:
    server = start_server(database_url, quoteapi_shutdown_grace_seconds=15)
    user = "user_shutdown_in_flight"
    headers = auth_headers(user)
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        created = await http.put("/me/message", json={"message": "before"}, headers=headers)
        assert created.status_code in (200, 201)
        transaction, in_flight = await hold_row_lock_until_a_put_waits(owner, http, user, headers)

        server.signal(signal.SIGTERM)
        signalled = time.monotonic()
        await until(
            lambda: _refuses_connections(server.port), within=5, what="new connections refused"
        )
        assert not in_flight.done()  # still waiting on the lock, and not cut off
        await transaction.commit()  # the lock goes; the PUT proceeds
        response = await in_flight

    assert response.status_code == 200, response.text
    assert response.json()["message"] == "during shutdown"
    assert await asyncio.to_thread(server.wait, 15) == 0
    print(f"\nexited 0, {time.monotonic() - signalled:.2f} s after SIGTERM")
    stored = await owner.fetchval("SELECT message FROM user_messages WHERE user_id = $1", user)
    assert stored == "during shutdown"
    messages = [r.get("message", "") for r in server.log_records()]
    assert "Application shutdown complete." in messages  # lifespan ran: the pool is disposed
    assert not [r for r in server.log_records() if r.get("level") in ("error", "critical")]


async def test_sigterm_cancels_a_request_still_running_after_the_grace_period(
    start_server: Callable[..., ServerProcess],
    database_url: str,
    owner: asyncpg.Connection,
    auth_headers: AuthHeaders,
) -> None:
    grace = 1
    server = start_server(database_url, quoteapi_shutdown_grace_seconds=grace)
    user = "user_shutdown_grace"
    headers = auth_headers(user)
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        assert (await http.put("/me/message", json={"message": "x"}, headers=headers)).is_success
        transaction, in_flight = await hold_row_lock_until_a_put_waits(owner, http, user, headers)
        server.signal(signal.SIGTERM)
        signalled = time.monotonic()
        try:
            exit_status = await asyncio.to_thread(server.wait, grace + 10)
            exited_after = time.monotonic() - signalled
        finally:
            await transaction.rollback()
        # Cut off by the grace period: answered 503 problem+json, not uvicorn's text 500.
        response = await in_flight
        assert_problem(response, 503, "shutting-down")
        assert response.headers["retry-after"].isdigit()
    print(f"\nexited {exit_status}, {exited_after:.2f} s after SIGTERM (grace {grace} s)")
    assert exit_status == 0
    assert exited_after < grace + 3
