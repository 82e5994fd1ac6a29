"""No SQL parameter value reaches a log line, not even through the driver's error text:
asyncpg quotes the offending argument in its message whatever `hide_parameters` says."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import Request
from sqlalchemy import text
from sqlmodel.ext.asyncio.session import AsyncSession

from quoteapi.services import services_of
from tests.support.app import make_settings, running_app
from tests.support.logs import events, everything

MARKER = "leaked-marker-0815"


async def _unencodable(session: AsyncSession) -> None:
    await session.exec(text("SELECT CAST(:v AS text)"), params={"v": f"\ud800{MARKER}"})


async def run_statement_with(request: Request) -> dict[str, str]:
    """A test-only route: a statement whose parameter the driver cannot encode."""
    async with services_of(request).database.unit() as session:
        await _unencodable(session)
    return {}


@pytest.fixture
async def api(database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with running_app(make_settings(database_url)) as running:
        running.app.add_api_route("/test/bad-parameter", run_statement_with, methods=["GET"])
        async with running.client(raise_app_exceptions=False) as http:
            yield http


async def test_a_database_error_is_logged_without_the_parameter_value(
    api: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        response = await api.get("/test/bad-parameter")
    assert response.status_code == 500
    assert response.json()["code"] == "internal-error"
    assert MARKER not in response.text
    (error,) = events(caplog.records, "database_error")
    assert "_unencodable" in str(error["stack"])  # where it happened
    assert MARKER not in caplog.text
    assert MARKER not in everything(caplog.records)
