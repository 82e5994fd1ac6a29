"""Shared fixtures: a real PostgreSQL (embedded unless TEST_DATABASE_URL is set), a fresh
database per test session with migrations applied, and the app on top of it."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text

from quoteapi.app import create_app
from quoteapi.dev.databases import create_database, drop_database, url_for_database
from quoteapi.migrations import upgrade_async
from quoteapi.settings import Settings, parse_database_url


@pytest.fixture(scope="session")
def embedded_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """The embedded PostgreSQL the suite runs on (None when TEST_DATABASE_URL is set)."""
    if os.environ.get("TEST_DATABASE_URL"):
        yield None
        return
    from quoteapi.dev.embedded import EmbeddedPostgres

    server = EmbeddedPostgres(tmp_path_factory.mktemp("embedded-pg"), durable=False)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def server_url(embedded_server: object) -> str:
    """URL of a PostgreSQL superuser connection on the test server."""
    from quoteapi.dev.embedded import EmbeddedPostgres

    if isinstance(embedded_server, EmbeddedPostgres):
        return embedded_server.url()
    return os.environ["TEST_DATABASE_URL"]


@pytest.fixture(scope="session")
async def fresh_database(server_url: str) -> AsyncIterator[str]:
    """One new database per test session, dropped at the end; yields its URL."""
    name = f"quoteapi_test_{uuid.uuid4().hex[:10]}"
    await create_database(server_url, name)
    yield url_for_database(server_url, name)
    await drop_database(server_url, name)


@pytest.fixture(scope="session")
async def database_url(fresh_database: str) -> str:
    """The session's database, migrated to head."""
    await upgrade_async(parse_database_url(fresh_database))
    return fresh_database


@pytest.fixture
async def empty_database_url(server_url: str) -> AsyncIterator[str]:
    """A database of its own for one test that needs an empty schema (migration tests)."""
    name = f"quoteapi_test_{uuid.uuid4().hex[:10]}"
    await create_database(server_url, name)
    yield url_for_database(server_url, name)
    await drop_database(server_url, name)


def make_settings(database_url: str, **overrides: object) -> Settings:
    """Settings for a test app: only what the test says, never the developer's `.env`."""
    return Settings(_env_file=None, database_url=database_url, **overrides)  # type: ignore[call-arg]


@pytest.fixture
def settings(database_url: str) -> Settings:
    return make_settings(database_url)


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[FastAPI]:
    """The app with its lifespan running, on a database emptied for this test."""
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        async with application.state.engine.begin() as connection:
            await connection.execute(text("TRUNCATE user_messages"))
        yield application


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client talking to the app in-process."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://quoteapi.test") as http:
        yield http


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def pooled_database_url(
    database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """The session's database reached through a real PgBouncer in transaction mode."""
    from tests.pgbouncer import find_pgbouncer, run_pgbouncer

    if find_pgbouncer() is None:
        if os.environ.get("CI"):
            pytest.fail("pgbouncer is not installed; .ci/run installs it")
        pytest.skip("pgbouncer is not installed (apt-get install pgbouncer)")
    with run_pgbouncer(database_url, tmp_path_factory.mktemp("pgbouncer")) as url:
        yield url
