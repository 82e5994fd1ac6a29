"""Fixtures only (helpers live in tests/support/): a real PostgreSQL (embedded unless
TEST_DATABASE_URL is set), a fresh database per test session with migrations applied, the app
on top of it as the least-privilege role, the test signing key and a JWKS server."""

from __future__ import annotations

import itertools
import os
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from quoteapi.database.engine import create_engine
from quoteapi.database.url import parse_database_url
from quoteapi.migrations import upgrade_async
from quoteapi.settings import Settings
from tests.support.app import EMPTY_USER_TABLES, RunningApp, make_settings, running_app
from tests.support.databases import app_role, new_database
from tests.support.jwks import JwksServer
from tests.support.pgbouncer import find_pgbouncer, run_pgbouncer
from tests.support.processes import ServerProcess, running_server, serve_env, serve_fixture
from tests.support.tokens import (
    TEST_ISSUER,
    TEST_KEY,
    AuthHeaders,
    FakeClock,
    MintToken,
    SigningKey,
    mint,
)
from tests.support.webhooks import TEST_SECRET

# === The database ================================================================================


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
    async with new_database(server_url) as url:
        yield url


@pytest.fixture(scope="session")
async def owner_database_url(fresh_database: str) -> str:
    """The session's database, migrated to head, as its owner (a superuser: bypasses RLS)."""
    await upgrade_async(parse_database_url(fresh_database))
    return fresh_database


@pytest.fixture(scope="session")
async def database_url(owner_database_url: str) -> AsyncIterator[str]:
    """The session's database as the service connects in production: a least-privilege role,
    so row-level security applies to every test that goes through the app."""
    async with app_role(owner_database_url) as url:
        yield url


@pytest.fixture(scope="session")
async def owner_engine(owner_database_url: str) -> AsyncIterator[AsyncEngine]:
    """An engine as the owner, for tests to arrange and inspect rows behind the app's back."""
    engine = create_engine(parse_database_url(owner_database_url), pool_size=2)
    yield engine
    await engine.dispose()


@pytest.fixture
async def owner(owner_database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection of its own as the owner, beside the app's pool: to hold locks and watch who
    waits on them."""
    connection = await asyncpg.connect(**parse_database_url(owner_database_url).connect_kwargs)
    yield connection
    await connection.close()


@pytest.fixture
async def empty_database_url(server_url: str) -> AsyncIterator[str]:
    """A database of its own for one test that needs an empty schema (migration tests)."""
    async with new_database(server_url) as url:
        yield url


@pytest.fixture(scope="session")
def pooled_database_url(database_url: str) -> Iterator[str]:
    """The session's database reached through a real PgBouncer in transaction mode."""
    if find_pgbouncer() is None:
        if os.environ.get("CI"):
            pytest.fail("pgbouncer is not installed; .ci/run installs it")
        pytest.skip("pgbouncer is not installed (apt-get install pgbouncer)")
    with run_pgbouncer(database_url) as url:
        yield url


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return Path(__file__).resolve().parents[1]


# === Tokens and keys =============================================================================


@pytest.fixture(scope="session")
def signing_key() -> SigningKey:
    """The key the JWKS server publishes first and `mint_token` signs with."""
    return TEST_KEY


@pytest.fixture
def mint_token(signing_key: SigningKey) -> MintToken:
    """`mint_token(user_id="user_...", *, headers=..., now=..., **claim_overrides) -> str`."""

    def mint_token(user_id: str = "user_test", **kwargs: Any) -> str:
        return mint(signing_key, user_id, **kwargs)

    return mint_token


@pytest.fixture
def auth_headers(mint_token: MintToken) -> AuthHeaders:
    """`auth_headers(user_id) -> {"Authorization": "Bearer <a fresh session token>"}`."""

    def auth_headers(user_id: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {mint_token(user_id)}"}

    return auth_headers


@pytest.fixture
def clock() -> FakeClock:
    """A clock the test moves by hand; `running_app(..., clock=clock)` verifies tokens by it."""
    return FakeClock()


@pytest.fixture
def jwks_server(signing_key: SigningKey) -> Iterator[JwksServer]:
    """A running JWKS server publishing `signing_key`."""
    server = JwksServer(signing_key)
    server.start()
    yield server
    server.stop()


# === The app in-process ==========================================================================


@pytest.fixture
def settings(database_url: str, jwks_server: JwksServer) -> Settings:
    """Settings whose tokens are verified against the loopback JWKS server, as in production."""
    return make_settings(database_url, clerk_jwks_url=jwks_server.url, clerk_issuer=TEST_ISSUER)


@pytest.fixture
async def api(settings: Settings, owner_engine: AsyncEngine) -> AsyncIterator[RunningApp]:
    """The app with its lifespan running, on a database emptied for this test, and a client."""
    async with running_app(settings) as running:
        async with owner_engine.begin() as connection:
            await connection.execute(text(EMPTY_USER_TABLES))
        yield running


@pytest.fixture
def app(api: RunningApp) -> FastAPI:
    """The running app."""
    return api.app


@pytest.fixture
def client(api: RunningApp) -> httpx.AsyncClient:
    """An HTTP client talking to the app in-process."""
    return api.http


# === `quoteapi serve` as a process on loopback ===================================================

# Shared by every module that needs no settings of its own (each request carries its own user
# and request id, so tests stay apart): the defaults, and the webhook endpoint on.
server = serve_fixture(scope="session")
webhook_server = serve_fixture(scope="session", clerk_webhook_signing_secret=TEST_SECRET)


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    """`start_server(database_url, *, port=None, **settings) -> ServerProcess`: a healthy
    `quoteapi serve` process of this test's own; stopped (SIGTERM, then SIGKILL) at teardown."""
    numbers = itertools.count()
    with ExitStack() as started:

        def start_server(
            database_url: str, *, port: int | None = None, **settings: object
        ) -> ServerProcess:
            workdir = tmp_path / f"server-{next(numbers)}"
            env = serve_env(database_url, **settings)
            return started.enter_context(running_server(workdir, env, port))

        yield start_server
