"""The unit-of-work rule (`Database.unit`): each statement commits on its own unless the work asks
for a transaction; a transaction covers the rest of its unit, is committed when the work
returns, rolled back when it raises, and does not outlive the unit on the pooled connection;
behind a transaction pooler every unit is one transaction."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import pytest
from sqlalchemy import text
from sqlmodel.ext.asyncio.session import AsyncSession

from quoteapi.database.engine import Database, transaction
from quoteapi.database.url import parse_database_url

DatabaseFactory = Callable[..., Database]
T = TypeVar("T")


@pytest.fixture
async def make_database(owner_database_url: str) -> AsyncIterator[DatabaseFactory]:
    """`make_database(pooler=False)`: a Database with one pooled connection, so consecutive
    units of work share it."""
    made: list[Database] = []

    def make(*, pooler: bool = False) -> Database:
        made.append(
            Database(
                parse_database_url(owner_database_url),
                pooler=pooler,
                pool_size=1,
                pool_timeout=5,
                connect_timeout=5,
                statement_timeout=5,
                lock_timeout=2,
            )
        )
        return made[-1]

    yield make
    for database in made:
        await database.dispose()


async def _run(database: Database, work: Callable[..., Awaitable[T]], **kwargs: Any) -> T:
    """`work` as one unit of work on `database`."""
    async with database.unit() as session:
        return await work(session, **kwargs)


async def _transaction_ids(session: AsyncSession, *, in_transaction: bool = False) -> set[int]:
    """The ids of the transactions two statements of the unit ran in."""
    if in_transaction:
        await transaction(session)
    statement = text("SELECT txid_current()")
    return {(await session.exec(statement)).one()[0] for _ in range(2)}  # type: ignore[call-overload]


async def test_each_statement_commits_on_its_own_unless_the_unit_asks(
    make_database: DatabaseFactory,
) -> None:
    database = make_database()
    assert len(await _run(database, _transaction_ids)) == 2
    assert len(await _run(database, _transaction_ids, in_transaction=True)) == 1


async def test_a_transaction_ends_with_its_unit_on_the_shared_connection(
    make_database: DatabaseFactory,
) -> None:
    database = make_database()
    await _run(database, _transaction_ids, in_transaction=True)
    assert len(await _run(database, _transaction_ids)) == 2


async def test_behind_a_pooler_every_unit_is_one_transaction(
    make_database: DatabaseFactory,
) -> None:
    database = make_database(pooler=True)
    assert len(await _run(database, _transaction_ids)) == 1


async def _write(session: AsyncSession, *, in_transaction: bool, fail: bool) -> None:
    if in_transaction:
        await transaction(session)
    await session.exec(text("INSERT INTO unit_of_work_probe VALUES (1)"))  # type: ignore[call-overload]
    if fail:
        raise RuntimeError("the work fails after its write")


@pytest.mark.parametrize(
    ("in_transaction", "fail", "rows_kept"),
    [(True, False, 1), (True, True, 0), (False, True, 1)],
    ids=["transaction-returns", "transaction-raises", "autocommit-raises"],
)
async def test_a_transaction_is_committed_when_the_work_returns_and_only_then(
    make_database: DatabaseFactory, in_transaction: bool, fail: bool, rows_kept: int
) -> None:
    database = make_database()

    async def probe_table(session: AsyncSession) -> None:
        ddl = "CREATE TEMPORARY TABLE IF NOT EXISTS unit_of_work_probe (n int)"
        await session.exec(text(ddl))  # type: ignore[call-overload]

    async def count(session: AsyncSession) -> int:
        rows = await session.exec(text("SELECT count(*) FROM unit_of_work_probe"))  # type: ignore[call-overload]
        return int(rows.one()[0])

    await _run(database, probe_table)  # a temporary table: lives on the one pooled connection
    try:
        await _run(database, _write, in_transaction=in_transaction, fail=fail)
    except RuntimeError:
        assert fail
    assert await _run(database, count) == rows_kept
