"""Holding a PUT mid-statement behind a row lock, for tests of what happens to a request in
flight (a server stopping, a container stopping)."""

from __future__ import annotations

import asyncio

import asyncpg
import httpx

from tests.support.polling import until


async def hold_row_lock_until_a_put_waits(
    superuser: asyncpg.Connection, http: httpx.AsyncClient, user: str, headers: dict[str, str]
) -> tuple[asyncpg.transaction.Transaction, asyncio.Task[httpx.Response]]:
    """Lock the user's row from the test's connection; start a PUT and return once it waits."""
    transaction = superuser.transaction()
    await transaction.start()
    locked = await superuser.fetch(
        "SELECT 1 FROM user_messages WHERE user_id = $1 FOR UPDATE", user
    )
    assert len(locked) == 1
    in_flight = asyncio.create_task(
        http.put("/me/message", json={"message": "during shutdown"}, headers=headers)
    )

    async def put_waits_on_the_lock() -> bool:
        waiting = await superuser.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
            " AND datname = current_database()"
        )
        return bool(waiting)

    await until(put_waits_on_the_lock, within=20, what=f"a PUT for {user} waiting on the row lock")
    return transaction, in_flight
