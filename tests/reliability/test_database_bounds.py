"""Every wait on the database has a bound, and past it the request gets 503 problem+json with
Retry-After and a code naming the wait: a lock another transaction holds (a row, a user's
erasure), a database host that accepts connections and never answers. In process; the waits
that need a real server and a real database process are in test_database_waits.py."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.support.app import EMPTY_USER_TABLES, RunningApp, make_settings, running_app
from tests.support.locks import lock_row
from tests.support.network import silent_host
from tests.support.problems import assert_retry_later
from tests.support.tokens import AuthHeaders
from tests.support.webhooks import TEST_SECRET, URL, signed, store_quotes, user_deleted

LOCK_TIMEOUT_S = 0.3
STATEMENT_TIMEOUT_S = 3.0
CONNECT_TIMEOUT_S = 1.0
QUOTE = {"message": "Waited for."}


@pytest.fixture
async def bounded(database_url: str, owner_engine: AsyncEngine) -> AsyncIterator[RunningApp]:
    settings = make_settings(
        database_url,
        clerk_webhook_signing_secret=TEST_SECRET,
        database_lock_timeout=LOCK_TIMEOUT_S,
        database_statement_timeout=STATEMENT_TIMEOUT_S,
    )
    async with running_app(settings) as api:
        async with owner_engine.begin() as connection:
            await connection.execute(text(EMPTY_USER_TABLES))
        yield api


async def hold_users_lock(owner: asyncpg.Connection, user: str) -> asyncpg.transaction.Transaction:
    """Take the user's lock exclusively, as an erasure in progress holds it."""
    transaction = owner.transaction()
    await transaction.start()
    await owner.execute("SELECT lock_user($1, exclusive => true)", user)
    return transaction


async def test_a_write_waiting_on_a_row_lock_past_the_lock_timeout_gets_503_lock_timeout(
    bounded: RunningApp,
    owner: asyncpg.Connection,
    owner_engine: AsyncEngine,
    auth_headers: AuthHeaders,
) -> None:
    await store_quotes(owner_engine, "user_row_locked")
    held = await lock_row(owner, "user_row_locked")
    try:
        started = time.monotonic()
        response = await bounded.http.put(
            "/me/message", json=QUOTE, headers=auth_headers("user_row_locked")
        )
        waited = time.monotonic() - started
    finally:
        await held.rollback()
    assert_retry_later(response, "database-lock-timeout")
    assert LOCK_TIMEOUT_S <= waited < STATEMENT_TIMEOUT_S, waited
    retried = await bounded.http.put(
        "/me/message", json=QUOTE, headers=auth_headers("user_row_locked")
    )
    assert retried.status_code == 200, retried.text


async def test_a_write_waiting_on_the_users_erasure_gets_503_lock_timeout(
    bounded: RunningApp, owner: asyncpg.Connection, auth_headers: AuthHeaders
) -> None:
    held = await hold_users_lock(owner, "user_being_erased")
    try:
        started = time.monotonic()
        response = await bounded.http.put(
            "/me/message", json=QUOTE, headers=auth_headers("user_being_erased")
        )
        waited = time.monotonic() - started
    finally:
        await held.rollback()
    assert_retry_later(response, "database-lock-timeout")
    assert waited < STATEMENT_TIMEOUT_S, waited


async def test_an_erasure_waiting_on_the_users_lock_gets_503_lock_timeout_and_is_retried(
    bounded: RunningApp, owner: asyncpg.Connection
) -> None:
    body, headers = signed(user_deleted("user_erasure_waits"))
    held = await hold_users_lock(owner, "user_erasure_waits")
    try:
        response = await bounded.http.post(URL, content=body, headers=headers)
    finally:
        await held.rollback()
    assert_retry_later(response, "database-lock-timeout")
    # Svix retries the same delivery: it was not recorded, so it acts now.
    redelivered = await bounded.http.post(URL, content=body, headers=headers)
    assert (redelivered.status_code, redelivered.json()) == (200, {"outcome": "deleted"})


@pytest.fixture
async def silent_database_app() -> AsyncIterator[RunningApp]:
    """The app with DATABASE_URL at a host that accepts connections and never answers."""
    with silent_host() as port:
        url = f"postgresql://app:secret@127.0.0.1:{port}/quoteapi"
        async with running_app(
            make_settings(url, database_connect_timeout=CONNECT_TIMEOUT_S)
        ) as api:
            yield api


async def test_a_silent_database_host_is_503_connect_timeout_within_the_bound(
    silent_database_app: RunningApp, auth_headers: AuthHeaders
) -> None:
    api = silent_database_app
    started = time.monotonic()
    response = await api.http.get("/me/message", headers=auth_headers("user_silent"))
    waited = time.monotonic() - started
    ready = await api.http.get("/readyz")
    print(f"\nsilent host: 503 after {waited:.2f} s")
    assert_retry_later(response, "database-connect-timeout")
    # No lower bound: the request may join the attempt start-up began moments before it.
    assert waited < CONNECT_TIMEOUT_S + 1, waited
    assert (ready.status_code, ready.json()["database"]) == (503, "timeout")


async def test_requests_waiting_together_on_a_silent_host_each_get_503_within_the_bound(
    silent_database_app: RunningApp, auth_headers: AuthHeaders
) -> None:
    async def timed_get(n: int) -> tuple[int, float]:
        started = time.monotonic()
        headers = auth_headers(f"user_{n}")
        response = await silent_database_app.http.get("/me/message", headers=headers)
        return response.status_code, time.monotonic() - started

    results = await asyncio.gather(*(timed_get(n) for n in range(5)))
    assert [status for status, _ in results] == [503] * 5
    assert max(waited for _, waited in results) < CONNECT_TIMEOUT_S + 1, results
