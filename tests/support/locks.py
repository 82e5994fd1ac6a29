"""Holding a request mid-statement behind a lock, for tests of what happens to a request in
flight (a server stopping, a container stopping, a webhook committing meanwhile)."""

from __future__ import annotations

import asyncio

import asyncpg
import httpx

from tests.support.polling import until


async def until_a_session_waits(observer: asyncpg.Connection, wait_event: str, what: str) -> None:
    """Return once `wait_event` sessions of this database wait on a lock of that kind
    (pg_stat_activity's wait_event: `advisory` for an advisory lock, `transactionid` for a row
    another transaction holds)."""

    async def waiting() -> bool:
        # Within a transaction (the one holding a lock, say) the view is read once and kept.
        await observer.execute("SELECT pg_stat_clear_snapshot()")
        count = await observer.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
            " AND wait_event = $1 AND datname = current_database()",
            wait_event,
        )
        return bool(count)

    await until(waiting, within=20, what=what)


async def lock_row(superuser: asyncpg.Connection, user: str) -> asyncpg.transaction.Transaction:
    """Lock the user's row from the test's connection, until the returned transaction ends."""
    transaction = superuser.transaction()
    await transaction.start()
    locked = await superuser.fetch(
        "SELECT 1 FROM user_messages WHERE user_id = $1 FOR UPDATE", user
    )
    assert len(locked) == 1
    return transaction


async def hold_row_lock_until_a_put_waits(
    superuser: asyncpg.Connection, http: httpx.AsyncClient, user: str, headers: dict[str, str]
) -> tuple[asyncpg.transaction.Transaction, asyncio.Task[httpx.Response]]:
    """Lock the user's row from the test's connection; start a PUT and return once it waits."""
    transaction = await lock_row(superuser, user)
    in_flight = asyncio.create_task(
        http.put("/me/message", json={"message": "during shutdown"}, headers=headers)
    )
    await until_a_session_waits(
        superuser, "transactionid", f"a PUT for {user} waiting on the row lock"
    )
    return transaction, in_flight
