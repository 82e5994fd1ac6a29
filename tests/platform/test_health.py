"""Liveness and readiness."""

import httpx
from sqlalchemy import text

from quoteapi.migrations import head_revision
from tests.support.app import NO_DATABASE_URL, make_settings, running_app


async def test_healthz_answers_without_a_database() -> None:
    # Nothing listens where the database should be; /readyz says so, /healthz does not ask.
    async with running_app(make_settings(NO_DATABASE_URL, database_connect_timeout=1)) as api:
        response = await api.http.get("/healthz")
        ready = await api.http.get("/readyz")
    assert (response.status_code, response.json()) == (200, {"status": "ok"})
    assert ready.status_code == 503


async def test_readyz_is_ready_when_the_schema_is_at_head(client: httpx.AsyncClient) -> None:
    response = await client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ready", "database": "ok", "schema": head_revision()}


async def test_readyz_is_503_when_the_database_is_unreachable() -> None:
    # Port 1 on loopback: nothing listens, the connection is refused at once.
    async with running_app(make_settings(NO_DATABASE_URL, database_connect_timeout=1)) as api:
        response = await api.http.get("/readyz")
    assert response.status_code == 503
    assert response.headers["Retry-After"].isdigit()
    assert response.json()["database"] == "unreachable"


async def test_readyz_is_503_when_migrations_are_missing(empty_database_url: str) -> None:
    async with running_app(make_settings(empty_database_url)) as api:
        response = await api.http.get("/readyz")
        async with (await api.engine()).connect() as connection:
            assert (await connection.scalar(text("SELECT 1"))) == 1
    assert response.status_code == 503
    assert response.json() == {
        "status": "not-ready",
        "database": "ok",
        "schema": "missing",
        "current": None,
        "head": head_revision(),
    }
