"""Behind a transaction-mode pooler that nobody named (DATABASE_TRANSACTION_POOLER unset, a host
name that is not Neon's): the first connection shows it, the engine is built pooler-safe before
any request runs on it, one line says so, and no client sees an error."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import httpx
import pytest

from quoteapi.settings import Settings
from tests.support.app import make_settings
from tests.support.logs import events

AuthHeaders = Callable[[str], dict[str, str]]


@pytest.fixture
def settings(pooled_database_url: str, caplog: pytest.LogCaptureFixture) -> Settings:
    caplog.set_level(logging.INFO, logger="quoteapi.db")  # before the app starts, and detects
    settings = make_settings(pooled_database_url, database_pool_size=5)
    assert settings.database_transaction_pooler is None  # and 127.0.0.1 is no Neon host
    return settings


def _detections(caplog: pytest.LogCaptureFixture) -> list[str]:
    records = caplog.get_records("setup") + caplog.get_records("call")  # start-up may log it
    return [str(e["message"]) for e in events(records, "transaction_pooler_detected")]


async def test_200_users_through_an_unnamed_pooler_see_no_error_and_one_line_says_so(
    client: httpx.AsyncClient, auth_headers: AuthHeaders, caplog: pytest.LogCaptureFixture
) -> None:
    async def life_cycle(n: int) -> list[int]:
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

    results = await asyncio.gather(*(life_cycle(n) for n in range(200)))
    assert results == [[201, 200, 200, 204]] * 200
    detections = _detections(caplog)
    assert len(detections) == 1
    assert "DATABASE_TRANSACTION_POOLER=true" in detections[0]


async def test_300_readiness_probes_through_an_unnamed_pooler_all_answer_200(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    responses = await asyncio.gather(*(client.get("/readyz") for _ in range(300)))
    assert [r.status_code for r in responses] == [200] * 300
    assert len(_detections(caplog)) == 1
