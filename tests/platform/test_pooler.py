"""Through a transaction-mode pooler (PgBouncer 1.18 has no prepared-statement support at all):
no "prepared statement does not exist" or duplicate-statement errors."""

import asyncio

import pytest

from quoteapi.auth.verify import VerifiedUser
from quoteapi.database.connect import behind_a_pooler, pooler_by_host
from quoteapi.database.url import parse_database_url
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
        async with api.services.database.unit() as session:
            await repository.save_quote(session, caller, f"quote {n}")
        async with api.services.database.unit() as session:
            stored = await repository.read_quote(session, caller)
        assert stored is not None
        return stored.message

    async with running_app(settings) as api:
        results = await asyncio.gather(*(write_then_read(api, n) for n in range(200)))
    # Each user reads a quote written for that user (request n wrote "quote n" for n % 20), never
    # another user's: the caller's binding does not leak between transactions on the pooler.
    assert [int(quote.removeprefix("quote ")) % 20 for quote in results] == [
        n % 20 for n in range(200)
    ]


def test_neon_host_names_say_whether_they_pool_and_other_hosts_are_asked() -> None:
    direct = parse_database_url("postgresql://u:p@ep-x-123.eu-central-1.aws.neon.tech/db")
    pooled = parse_database_url("postgresql://u:p@ep-x-123-pooler.eu-central-1.aws.neon.tech/db")
    elsewhere = parse_database_url("postgresql://u:p@127.0.0.1:6432/db")
    assert (pooler_by_host(direct), pooler_by_host(pooled), pooler_by_host(elsewhere)) == (
        False,
        True,
        None,
    )


@pytest.mark.parametrize(("through_pgbouncer", "detected"), [(True, True), (False, False)])
async def test_the_first_connection_says_whether_a_pooler_answers_for_the_server(
    pooled_database_url: str, database_url: str, through_pgbouncer: bool, detected: bool
) -> None:
    target = parse_database_url(pooled_database_url if through_pgbouncer else database_url)
    assert await behind_a_pooler(target, connect_timeout=5, statement_timeout=5) is detected
