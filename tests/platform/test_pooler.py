"""Through a transaction-mode pooler (PgBouncer 1.18 has no prepared-statement support at all):
no "prepared statement does not exist" or duplicate-statement errors."""

import asyncio

import pytest

from quoteapi.auth.verify import VerifiedUser
from quoteapi.messages import repository
from tests.support.app import RunningApp, make_settings, running_app


@pytest.mark.slow
async def test_200_concurrent_requests_over_a_small_pool_through_pgbouncer(
    pooled_database_url: str,
) -> None:
    settings = make_settings(
        pooled_database_url, database_pool_size=5, database_transaction_pooler=True
    )
    async with running_app(settings) as api:
        responses = await asyncio.gather(*(api.http.get("/readyz") for _ in range(200)))
    assert [r.status_code for r in responses] == [200] * 200


@pytest.mark.slow
async def test_repository_writes_and_reads_through_pgbouncer(pooled_database_url: str) -> None:
    settings = make_settings(
        pooled_database_url, database_pool_size=3, database_transaction_pooler=True
    )

    async def write_then_read(api: RunningApp, n: int) -> str:
        caller = VerifiedUser(f"user_pool_{n % 20}", f"sess_pool_{n}")
        database = api.services.database
        await database.run(repository.save_quote, caller, f"quote {n}")
        stored = await database.run(repository.read_quote, caller)
        assert stored is not None
        return stored.message

    async with running_app(settings) as api:
        results = await asyncio.gather(*(write_then_read(api, n) for n in range(200)))
    # Each user reads a quote written for that user (request n wrote "quote n" for n % 20), never
    # another user's: the caller's binding does not leak between transactions on the pooler.
    assert [int(quote.removeprefix("quote ")) % 20 for quote in results] == [
        n % 20 for n in range(200)
    ]


def test_neon_pooled_hosts_are_detected_and_the_setting_overrides() -> None:
    direct = make_settings("postgresql://u:p@ep-x-123.eu-central-1.aws.neon.tech/db")
    pooled = make_settings("postgresql://u:p@ep-x-123-pooler.eu-central-1.aws.neon.tech/db")
    assert not direct.transaction_pooler
    assert pooled.transaction_pooler
    forced = make_settings("postgresql://u:p@127.0.0.1:6432/db", database_transaction_pooler=True)
    assert forced.transaction_pooler
