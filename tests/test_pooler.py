"""Through a transaction-mode pooler (PgBouncer 1.18 has no prepared-statement support at all):
no "prepared statement does not exist" or duplicate-statement errors."""

import asyncio

import httpx

from quoteapi.app import create_app
from quoteapi.messages.repository import Messages
from quoteapi.services import Services
from tests.conftest import make_settings


async def test_200_concurrent_requests_over_a_small_pool_through_pgbouncer(
    pooled_database_url: str,
) -> None:
    app = create_app(
        make_settings(pooled_database_url, database_pool_size=5, database_transaction_pooler=True)
    )
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            responses = await asyncio.gather(*(client.get("/readyz") for _ in range(200)))
    assert [r.status_code for r in responses] == [200] * 200


async def test_repository_sessions_write_and_read_through_pgbouncer(
    pooled_database_url: str,
) -> None:
    app = create_app(
        make_settings(pooled_database_url, database_pool_size=3, database_transaction_pooler=True)
    )

    async def write_then_read(n: int) -> str:
        user_id = f"user_pool_{n % 20}"
        services: Services = app.state.services
        async with services.database.session() as session:
            messages = Messages(session, services.messages)
            await messages.save(user_id, f"quote {n}")
            stored = await messages.read(user_id)
            assert stored is not None
            return stored.message

    async with app.router.lifespan_context(app):
        results = await asyncio.gather(*(write_then_read(n) for n in range(200)))
    assert all(result.startswith("quote ") for result in results)


def test_neon_pooled_hosts_are_detected_and_the_setting_overrides() -> None:
    direct = make_settings("postgresql://u:p@ep-x-123.eu-central-1.aws.neon.tech/db")
    pooled = make_settings("postgresql://u:p@ep-x-123-pooler.eu-central-1.aws.neon.tech/db")
    assert not direct.transaction_pooler
    assert pooled.transaction_pooler
    forced = make_settings("postgresql://u:p@127.0.0.1:6432/db", database_transaction_pooler=True)
    assert forced.transaction_pooler
