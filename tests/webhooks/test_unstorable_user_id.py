"""A signed `user.deleted` whose `data.id` PostgreSQL cannot store (NUL, lone surrogate) names
no user that can exist: it is acknowledged (2xx) and recorded, so Svix stops retrying it,
erases nothing, says so at info level, and its value reaches no log line."""

from __future__ import annotations

import logging

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.support.logs import everything
from tests.support.webhooks import (
    URL,
    recorded_deliveries,
    signed,
    store_quotes,
    stored_users,
    user_deleted,
)

MARKER = "leaked-marker-4711"


@pytest.mark.parametrize(
    "user_id",
    [
        pytest.param(f"user_\x00{MARKER}", id="nul"),
        pytest.param(f"user_\ud800{MARKER}", id="lone-surrogate"),
    ],
)
async def test_a_user_id_that_cannot_exist_is_acknowledged_recorded_and_erases_nothing(
    client: httpx.AsyncClient,
    owner_engine: AsyncEngine,
    caplog: pytest.LogCaptureFixture,
    user_id: str,
) -> None:
    await store_quotes(owner_engine, "user_a")
    body, headers = signed(user_deleted(user_id), msg_id="msg_unstorable")
    with caplog.at_level(logging.DEBUG):
        response = await client.post(URL, content=body, headers=headers)
        redelivered = await client.post(URL, content=body, headers=headers)

    assert response.status_code == 200, response.text
    assert response.json() == {"outcome": "ignored"}
    assert redelivered.json() == {"outcome": "duplicate"}
    assert await recorded_deliveries(owner_engine) == {"msg_unstorable"}
    assert await stored_users(owner_engine) == {"user_a"}
    unstorable = [r for r in caplog.records if r.getMessage() == "webhook_id_unstorable"]
    assert unstorable, "the refusal is logged"
    assert {r.levelno for r in unstorable} == {logging.INFO}
    assert MARKER not in everything(caplog.records)
