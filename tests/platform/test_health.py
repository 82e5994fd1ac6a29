"""Liveness and readiness."""

import httpx
from sqlalchemy import text

from quoteapi.app import create_app
from quoteapi.migrations import head_revision
from tests.conftest import make_settings


async def test_healthz_answers_without_a_database(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_readyz_is_ready_when_the_schema_is_at_head(client: httpx.AsyncClient) -> None:
    response = await client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ready", "database": "ok", "schema": head_revision()}


async def test_readyz_is_503_when_the_database_is_unreachable() -> None:
    # Port 1 on loopback: nothing listens, the connection is refused at once.
    app = create_app(
        make_settings("postgresql://nobody:secret@127.0.0.1:1/none", database_connect_timeout=1)
    )
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            response = await client.get("/readyz")
    assert response.status_code == 503
    assert response.headers["Retry-After"].isdigit()
    assert response.json()["database"] == "unreachable"


async def test_readyz_is_503_when_migrations_are_missing(empty_database_url: str) -> None:
    app = create_app(make_settings(empty_database_url))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            response = await client.get("/readyz")
        async with app.state.engine.connect() as connection:
            assert (await connection.scalar(text("SELECT 1"))) == 1
    assert response.status_code == 503
    assert response.json() == {
        "status": "not-ready",
        "database": "ok",
        "schema": "behind",
        "current": None,
        "head": head_revision(),
    }
