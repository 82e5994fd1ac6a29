"""Behind a transaction-mode pooler that nobody named (DATABASE_TRANSACTION_POOLER unset, a host
name that is not Neon's): the first connection shows it, the engine is built pooler-safe before
any request runs on it, one line says so, and no client sees an error."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable

import httpx
import pytest
from fastapi import FastAPI

from quoteapi.app import create_app
from tests.support.app import make_settings

AuthHeaders = Callable[[str], dict[str, str]]


@pytest.fixture
async def unnamed_pooler_app(pooled_database_url: str) -> AsyncIterator[FastAPI]:
    settings = make_settings(pooled_database_url, database_pool_size=5)
    assert settings.database_transaction_pooler is None  # and 127.0.0.1 is no Neon host
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        yield app


def _client(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")


def _detections(caplog: pytest.LogCaptureFixture) -> list[str]:
    messages = [record.getMessage() for record in caplog.records]
    return [message for message in messages if "transaction_pooler_detected" in message]


async def test_200_users_through_an_unnamed_pooler_see_no_error_and_one_line_says_so(
    unnamed_pooler_app: FastAPI, auth_headers: AuthHeaders, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="quoteapi.db")

    async def life_cycle(client: httpx.AsyncClient, n: int) -> list[int]:
        headers = auth_headers(f"user_unnamed_pooler_{n}")
        statuses = []
        for request in (
            client.put("/me/message", json={"message": f"first {n}"}, headers=headers),
            client.get("/me/message", headers=headers),
            client.put("/me/message", json={"message": f"second {n}"}, headers=headers),
            client.delete("/me/message", headers=headers),
        ):
            statuses.append((await request).status_code)
        return statuses

    async with _client(unnamed_pooler_app) as client:
        results = await asyncio.gather(*(life_cycle(client, n) for n in range(200)))
    assert results == [[201, 200, 200, 204]] * 200
    detections = _detections(caplog)
    assert len(detections) == 1
    assert "DATABASE_TRANSACTION_POOLER=true" in detections[0]


async def test_300_readiness_probes_through_an_unnamed_pooler_all_answer_200(
    unnamed_pooler_app: FastAPI, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="quoteapi.db")
    async with _client(unnamed_pooler_app) as client:
        responses = await asyncio.gather(*(client.get("/readyz") for _ in range(300)))
    assert [r.status_code for r in responses] == [200] * 300
    assert len(_detections(caplog)) == 1
