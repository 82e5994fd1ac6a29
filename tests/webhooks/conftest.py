"""The webhook tests' app: CLERK_WEBHOOK_SIGNING_SECRET set, on a database emptied per test."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.support.app import EMPTY_USER_TABLES, RunningApp, make_settings, running_app
from tests.support.webhooks import TEST_SECRET


@pytest.fixture
async def hooks_app(database_url: str, owner_engine: AsyncEngine) -> AsyncIterator[RunningApp]:
    """The app with the webhook's signing secret (tokens from `mint_token` pass), on a database
    emptied for this test. Rows are arranged and inspected as the owner (`owner_engine`): the
    app's own role sees only one user's rows per transaction (row-level security)."""
    settings = make_settings(database_url, clerk_webhook_signing_secret=TEST_SECRET)
    async with running_app(settings) as api:
        async with owner_engine.begin() as connection:
            await connection.execute(text(f"{EMPTY_USER_TABLES}, webhook_deliveries"))
        yield api


@pytest.fixture
def hooks(hooks_app: RunningApp) -> httpx.AsyncClient:
    """A client for `hooks_app`: webhooks and /me requests alike."""
    return hooks_app.http
