"""Connections the server closes while they sit idle in the pool cost no request an error.

Neon suspends a compute after 5 minutes without queries and closes its connections; a compute
restart drops them too. The next request must be answered normally, not with a 503 from a
dead pooled connection."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from quoteapi.database.url import parse_database_url
from quoteapi.dev.databases import create_database, ensure_app_role, url_for_database
from quoteapi.dev.embedded import EmbeddedPostgres
from quoteapi.migrations import upgrade_async
from tests.support.app import RunningApp, make_settings, running_app
from tests.support.polling import until
from tests.support.tokens import AuthHeaders

POOL_SIZE = 3
# This test's own connections, told from other tests' on the same database by their name.
APPLICATION = "quoteapi_idle_connections_test"
_BACKENDS = text("SELECT count(*) FROM pg_stat_activity WHERE application_name = :name")
REQUESTS_AFTER = 5


async def _fill_the_pool(api: RunningApp, headers: dict[str, str]) -> None:
    """Open every pooled connection (concurrent requests), then let them all go idle."""
    put = {"json": {"message": "Before the pause."}, "headers": headers}
    assert (await api.http.put("/me/message", **put)).is_success
    answers = await asyncio.gather(
        *(api.http.get("/me/message", headers=headers) for _ in range(POOL_SIZE * 4))
    )
    assert {a.status_code for a in answers} == {200}
    await api.wait_for_idle_pool()
    assert (await api.engine()).pool.checkedin() == POOL_SIZE  # type: ignore[attr-defined]


async def _statuses_after(api: RunningApp, method: str, headers: dict[str, str]) -> list[int]:
    body = {"json": {"message": "After the pause."}} if method == "PUT" else {}
    statuses = []
    for _ in range(REQUESTS_AFTER):  # one at a time: each takes the next idle connection
        response = await api.http.request(method, "/me/message", headers=headers, **body)
        statuses.append(response.status_code)
    return statuses


@pytest.mark.parametrize("method", ["GET", "PUT"])
async def test_connections_the_server_closed_while_idle_are_replaced_unseen(
    database_url: str, owner_engine: AsyncEngine, auth_headers: AuthHeaders, method: str
) -> None:
    separator = "&" if "?" in database_url else "?"
    url = f"{database_url}{separator}application_name={APPLICATION}"
    async with running_app(make_settings(url, database_pool_size=POOL_SIZE)) as api:
        headers = auth_headers("user_idle_terminated")
        await _fill_the_pool(api, headers)
        async with owner_engine.connect() as owner:
            terminated = await owner.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE application_name = :name"
                ),
                {"name": APPLICATION},
            )
            assert len(terminated.all()) == POOL_SIZE

        async def gone() -> bool:  # a new transaction each time: pg_stat_activity is a snapshot
            async with owner_engine.connect() as owner:
                return (await owner.execute(_BACKENDS, {"name": APPLICATION})).scalar_one() == 0

        # pg_terminate_backend only signals: wait until the backends have exited.
        await until(gone, within=5, what="the terminated backends to exit")

        assert await _statuses_after(api, method, headers) == [200] * REQUESTS_AFTER


@pytest.fixture
async def own_server(tmp_path: Path) -> AsyncIterator[EmbeddedPostgres]:
    """A PostgreSQL of this test's own, so that it can be restarted."""
    server = EmbeddedPostgres(tmp_path / "pg", durable=False)
    server.start()
    yield server
    server.stop()


@pytest.mark.slow
@pytest.mark.parametrize("method", ["GET", "PUT"])
async def test_a_server_restarted_while_the_service_was_idle_costs_no_request(
    own_server: EmbeddedPostgres, auth_headers: AuthHeaders, method: str
) -> None:
    await create_database(own_server.url(), "quoteapi")
    owner_url = url_for_database(own_server.url(), "quoteapi")
    await upgrade_async(parse_database_url(owner_url))
    app_url = await ensure_app_role(owner_url, "quoteapi_app", "app-role-secret")
    settings = make_settings(app_url, database_pool_size=POOL_SIZE)
    async with running_app(settings) as api:
        headers = auth_headers("user_idle_restarted")
        await _fill_the_pool(api, headers)
        port = own_server.port
        # In threads: the service's event loop runs on, idle, as in a server.
        await asyncio.to_thread(own_server.stop)
        await asyncio.to_thread(own_server.start, port)  # returns once it accepts connections

        assert await _statuses_after(api, method, headers) == [200] * REQUESTS_AFTER
