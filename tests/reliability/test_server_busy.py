"""Pool exhaustion is overload, not an outage: when no slot comes free within
DATABASE_POOL_TIMEOUT the answer is 503 `server-busy` with Retry-After, and /readyz waits in
the same FIFO queue as every request instead of taking a connection around it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
from fastapi import FastAPI

from quoteapi.services import Services
from quoteapi.settings import Settings
from tests.support.app import make_settings
from tests.support.tokens import MintToken


@pytest.fixture
def settings(database_url: str) -> Settings:
    """The app with one pool slot, given up on after 0.3 s."""
    return make_settings(database_url, database_pool_size=1, database_pool_timeout=0.3)


def services(app: FastAPI) -> Services:
    result: Services = app.state.services
    return result


@asynccontextmanager
async def slot_held(app: FastAPI) -> AsyncIterator[None]:
    """While the block runs, a unit of work holds a pool slot (its connection idle)."""
    holding, release = asyncio.Event(), asyncio.Event()

    async def hold(_: object) -> None:
        holding.set()
        await release.wait()

    async def hold_a_unit() -> None:
        async with services(app).database.unit() as session:
            await hold(session)

    unit = asyncio.create_task(hold_a_unit())
    await holding.wait()
    try:
        yield
    finally:
        release.set()
        await unit


async def test_a_request_that_finds_every_slot_busy_gets_503_server_busy(
    app: FastAPI, client: httpx.AsyncClient, mint_token: MintToken
) -> None:
    headers = {"Authorization": f"Bearer {mint_token('user_busy')}"}
    async with slot_held(app):  # another request holds the only slot
        response = await client.get("/me/message", headers=headers)
    assert response.status_code == 503, response.text
    assert response.json()["code"] == "server-busy"
    assert int(response.headers["Retry-After"]) > 0
    # Once the slot is free, the same request is served.
    assert (await client.get("/me/message", headers=headers)).status_code == 404


async def test_readyz_queues_for_a_slot_like_every_request(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    # The slot is held but its connection is idle in the pool: a probe that went around the
    # queue would take that connection and answer ready.
    async with slot_held(app):
        busy = await client.get("/readyz")
    assert busy.status_code == 503, busy.text
    assert busy.json()["database"] == "busy"
    assert "Retry-After" in busy.headers
    assert (await client.get("/readyz")).status_code == 200
