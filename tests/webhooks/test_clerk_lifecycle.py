"""Clerk's lifecycle, honoured at once: a user deleted in Clerk stays deleted (no write of theirs
succeeds afterwards, and none in flight leaves a row), and a session that ended in Clerk stops
working on the next request, though its tokens still verify."""

from __future__ import annotations

import asyncio
import hashlib
import time

import asyncpg
import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from quoteapi.webhooks import SESSION_ENDED_EVENTS
from quoteapi.webhooks.repository import REVOCATION_RETENTION
from tests.support.app import RunningApp
from tests.support.locks import lock_row, until_a_session_waits
from tests.support.problems import assert_problem
from tests.support.tokens import MintToken, bearer
from tests.support.webhooks import (
    URL,
    session_ended,
    signed,
    store_quotes,
    stored_users,
    user_deleted,
)

QUOTE = {"message": "Written in the last minute."}


async def deliver(client: httpx.AsyncClient, event: dict[str, object], **signing: str) -> str:
    """POST a signed event; its outcome."""
    body, headers = signed(event, **signing)
    response = await client.post(URL, content=body, headers=headers)
    assert response.status_code == 200, response.text
    outcome: str = response.json()["outcome"]
    return outcome


# --- A deleted user stays deleted -----------------------------------------------------------


@pytest.mark.parametrize(
    "conditions",
    [{}, {"If-None-Match": "*"}, {"If-Match": "*"}, {"If-None-Match": '"1"'}],
    ids=["plain", "create-only", "if-match", "unless-version"],
)
async def test_a_deleted_users_still_valid_token_cannot_store_anything(
    client: httpx.AsyncClient,
    owner_engine: AsyncEngine,
    mint_token: MintToken,
    conditions: dict[str, str],
) -> None:
    auth = bearer(mint_token("user_gone"))
    assert (await client.put("/me/message", json=QUOTE, headers=auth)).status_code == 201
    assert await deliver(client, user_deleted("user_gone")) == "deleted"

    response = await client.put("/me/message", json=QUOTE, headers={**auth, **conditions})

    assert_problem(response, 403, "user-deleted")
    assert await stored_users(owner_engine) == set()


# Out of order: the event reaches the service before the first request (a queued offline save).
@pytest.mark.parametrize(
    ("event", "outcome", "status", "code"),
    [
        (user_deleted("user_early"), "deleted", 403, "user-deleted"),
        (session_ended("user_early", "sess_early"), "revoked", 401, "session-revoked"),
    ],
    ids=["user-deleted", "session-ended"],
)
async def test_an_event_that_arrives_before_the_first_write_refuses_it(
    client: httpx.AsyncClient,
    owner_engine: AsyncEngine,
    mint_token: MintToken,
    event: dict[str, object],
    outcome: str,
    status: int,
    code: str,
) -> None:
    assert await deliver(client, event) == outcome

    auth = bearer(mint_token("user_early", sid="sess_early"))
    response = await client.put("/me/message", json=QUOTE, headers=auth)

    assert_problem(response, status, code)
    assert await stored_users(owner_engine) == set()


async def test_a_deleted_user_reads_and_deletes_as_one_with_nothing_stored(
    client: httpx.AsyncClient, mint_token: MintToken
) -> None:
    auth = bearer(mint_token("user_gone"))
    await client.put("/me/message", json=QUOTE, headers=auth)
    assert await deliver(client, user_deleted("user_gone")) == "deleted"

    assert_problem(await client.get("/me/message", headers=auth), 404, "message-not-found")
    assert_problem(await client.delete("/me/message", headers=auth), 404, "message-not-found")


async def test_the_deletion_is_recorded_with_the_erasure_and_a_redelivery_keeps_it(
    client: httpx.AsyncClient, owner_engine: AsyncEngine, mint_token: MintToken
) -> None:
    assert await deliver(client, user_deleted("user_gone"), msg_id="msg_gone") == "deleted"
    assert await deliver(client, user_deleted("user_gone"), msg_id="msg_gone") == "duplicate"
    # A resend from the dashboard is a new message: it finds the user erased already.
    assert await deliver(client, user_deleted("user_gone")) == "deleted"

    async with owner_engine.connect() as connection:
        erased = (await connection.scalars(text("SELECT user_id FROM erased_users"))).all()
    assert erased == ["user_gone"]
    response = await client.put("/me/message", json=QUOTE, headers=bearer(mint_token("user_gone")))
    assert_problem(response, 403, "user-deleted")


async def test_deleting_one_user_leaves_other_users_writing(
    client: httpx.AsyncClient, mint_token: MintToken
) -> None:
    assert await deliver(client, user_deleted("user_gone")) == "deleted"
    response = await client.put("/me/message", json=QUOTE, headers=bearer(mint_token("user_kept")))
    assert response.status_code == 201


# --- No race leaves a row: each interleaving held still, by locks the test holds ------------


async def test_a_put_in_flight_when_the_deletion_arrives_commits_first_and_is_erased(
    client: httpx.AsyncClient,
    owner: asyncpg.Connection,
    owner_engine: AsyncEngine,
    mint_token: MintToken,
) -> None:
    auth = bearer(mint_token("user_racing"))
    await store_quotes(owner_engine, "user_racing")
    # The PUT takes the user's lock (shared), then waits for the row the test holds.
    row = await lock_row(owner, "user_racing")
    put = asyncio.create_task(client.put("/me/message", json=QUOTE, headers=auth))
    await until_a_session_waits(owner, "transactionid", "the PUT waiting for the row")
    # The deletion waits for the PUT to finish: it needs the user's lock exclusively.
    body, headers = signed(user_deleted("user_racing"))
    deletion = asyncio.create_task(client.post(URL, content=body, headers=headers))
    await until_a_session_waits(owner, "advisory", "the deletion waiting for the PUT")

    await row.rollback()

    assert (await put).status_code == 200
    assert (await deletion).json() == {"outcome": "deleted"}
    assert await stored_users(owner_engine) == set()


async def test_a_put_that_waits_behind_a_deletion_is_refused_once_it_commits(
    client: httpx.AsyncClient,
    owner: asyncpg.Connection,
    owner_engine: AsyncEngine,
    mint_token: MintToken,
) -> None:
    auth = bearer(mint_token("user_racing"))
    await store_quotes(owner_engine, "user_racing")
    # The deletion takes the user's lock, records the user as erased, then waits for the row.
    row = await lock_row(owner, "user_racing")
    body, headers = signed(user_deleted("user_racing"))
    deletion = asyncio.create_task(client.post(URL, content=body, headers=headers))
    await until_a_session_waits(owner, "transactionid", "the deletion waiting for the row")
    # The PUT's statement starts now, before the deletion commits, and waits for the user's lock.
    put = asyncio.create_task(client.put("/me/message", json=QUOTE, headers=auth))
    await until_a_session_waits(owner, "advisory", "the PUT waiting for the deletion")

    await row.rollback()

    assert (await deletion).json() == {"outcome": "deleted"}
    assert_problem(await put, 403, "user-deleted")
    assert await stored_users(owner_engine) == set()


# --- A session that ended stops working at once -----------------------------------------------


@pytest.mark.parametrize("event_type", SESSION_ENDED_EVENTS)
async def test_an_ended_session_is_refused_on_its_next_request_while_another_session_works(
    api: RunningApp, owner_engine: AsyncEngine, mint_token: MintToken, event_type: str
) -> None:
    client = api.http
    ended_token = mint_token("user_two_tabs", sid="sess_signed_out")
    ended, other = bearer(ended_token), bearer(mint_token("user_two_tabs", sid="sess_still_in"))
    assert (await client.put("/me/message", json=QUOTE, headers=ended)).status_code == 201
    digest = hashlib.sha256(ended_token.encode()).digest()
    assert api.verifier.cache.get(digest, time.time()) is not None, "a cached token"

    event = session_ended("user_two_tabs", "sess_signed_out", event_type)
    assert await deliver(client, event) == "revoked"

    for method in ("GET", "PUT", "DELETE"):
        response = await client.request(method, "/me/message", json=QUOTE, headers=ended)
        assert_problem(response, 401, "session-revoked")
        assert 'error="invalid_token"' in response.headers["www-authenticate"]
    assert await stored_users(owner_engine) == {"user_two_tabs"}
    still_in = await client.get("/me/message", headers=other)
    assert still_in.status_code == 200
    assert still_in.json()["message"] == QUOTE["message"]


async def test_redelivered_and_repeated_session_events_are_acknowledged(
    client: httpx.AsyncClient, mint_token: MintToken
) -> None:
    revoked = session_ended("user_a", "sess_a", "session.revoked")
    assert await deliver(client, revoked, msg_id="msg_revoked") == "revoked"
    assert await deliver(client, revoked, msg_id="msg_revoked") == "duplicate"
    # Clerk may follow a revocation with `session.removed` for the same session.
    assert await deliver(client, session_ended("user_a", "sess_a", "session.removed")) == "revoked"

    response = await client.get("/me/message", headers=bearer(mint_token("user_a", sid="sess_a")))
    assert_problem(response, 401, "session-revoked")


@pytest.mark.parametrize(
    "data",
    [{"id": "sess_a"}, {"user_id": "user_a"}, {"id": "", "user_id": "user_a"}, {"id": 7}],
    ids=["no-user-id", "no-session-id", "empty-session-id", "numeric-session-id"],
)
async def test_a_session_event_without_its_ids_is_acknowledged_and_ends_nothing(
    client: httpx.AsyncClient, mint_token: MintToken, data: dict[str, object]
) -> None:
    event = {"type": "session.revoked", "object": "event", "data": data}
    assert await deliver(client, event) == "ignored"
    response = await client.get("/me/message", headers=bearer(mint_token("user_a", sid="sess_a")))
    assert_problem(response, 404, "message-not-found")


async def test_ended_sessions_are_kept_a_day_and_pruned_by_a_later_webhook(
    client: httpx.AsyncClient, owner_engine: AsyncEngine
) -> None:
    async with owner_engine.begin() as connection:
        await connection.execute(
            text(
                "INSERT INTO revoked_sessions (session_id, user_id, expires_at) VALUES"
                " ('sess_expired', 'user_b', now() - interval '1 second'),"
                " ('sess_current', 'user_b', now() + interval '1 hour')"
            )
        )

    assert await deliver(client, session_ended("user_a", "sess_new")) == "revoked"

    async with owner_engine.connect() as connection:
        rows = dict(
            (
                await connection.execute(
                    text("SELECT session_id, expires_at - revoked_at FROM revoked_sessions")
                )
            ).all()
        )
    assert set(rows) == {"sess_current", "sess_new"}
    assert rows["sess_new"] == REVOCATION_RETENTION


async def test_a_two_day_token_of_a_revoked_session_stays_refused_after_pruning(
    client: httpx.AsyncClient, owner_engine: AsyncEngine, mint_token: MintToken
) -> None:
    # Revocations are kept a day; a token that lived longer would be accepted again once its
    # revocation is pruned, so it is never accepted (tests/auth: longer than 12 hours).
    now = int(time.time())
    token = mint_token("user_a", sid="sess_long", iat=now, exp=now + 2 * 86400)
    assert await deliver(client, session_ended("user_a", "sess_long")) == "revoked"
    async with owner_engine.begin() as connection:  # a day passes
        await connection.execute(text("UPDATE revoked_sessions SET expires_at = now()"))
    assert await deliver(client, session_ended("user_a", "sess_other")) == "revoked"  # prunes
    async with owner_engine.connect() as connection:
        kept = (await connection.scalars(text("SELECT session_id FROM revoked_sessions"))).all()
    assert kept == ["sess_other"]
    response = await client.get("/me/message", headers=bearer(token))
    assert_problem(response, 401, "token-lifetime-too-long")


BACKLOG = 300_000


async def test_a_backlog_of_expired_sessions_is_pruned_a_batch_per_delivery_none_waiting(
    client: httpx.AsyncClient, owner_engine: AsyncEngine
) -> None:
    async with owner_engine.begin() as connection:
        await connection.execute(
            text(
                "INSERT INTO revoked_sessions (session_id, user_id, expires_at)"
                " SELECT 'sess_old_' || n, 'user_old', now() - interval '1 day'"
                " FROM generate_series(1, :rows) AS n"
            ),
            {"rows": BACKLOG},
        )

    async def timed_delivery(n: int) -> float:
        started = time.monotonic()
        assert await deliver(client, session_ended("user_a", f"sess_backlog_{n}")) == "revoked"
        return time.monotonic() - started

    # Two deliveries at once: each prunes a batch, skipping what the other is pruning.
    durations = await asyncio.gather(timed_delivery(1), timed_delivery(2))
    async with owner_engine.connect() as connection:
        left = await connection.scalar(
            text("SELECT count(*) FROM revoked_sessions WHERE user_id = 'user_old'")
        )
    print(f"\nbacklog of {BACKLOG}: deliveries took {[f'{d:.3f}' for d in durations]} s")
    assert left == BACKLOG - 2 * 500
    assert max(durations) < 0.5, durations
