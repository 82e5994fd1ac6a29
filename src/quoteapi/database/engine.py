"""The engine (asyncpg under SQLAlchemy) and the unit of work on it (`Database.unit`): the rule
for sessions and transactions, the bounds the server keeps for them, and the failures of the
database raised as `database.failures`. Connecting is `database.connect`'s job; admission to
the pool, `database.admission`'s."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import event, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlmodel.ext.asyncio.session import AsyncSession

from quoteapi.database.admission import FifoSlots
from quoteapi.database.connect import connect
from quoteapi.database.failures import failure_of
from quoteapi.database.pooler import POOLER_SAFE_STATEMENTS, behind_a_pooler
from quoteapi.database.url import DatabaseTarget
from quoteapi.logs import EventLog

log = EventLog("quoteapi.db")


def create_engine(
    target: DatabaseTarget,
    *,
    pooler: bool = True,
    pool_size: int = 10,
    pool_timeout: float = 5.0,
    connect_timeout: float = 5.0,
    statement_timeout: float | None = None,
) -> AsyncEngine:
    """Build the engine for one database target; nothing connects until first use.

    `pooler`: the database is behind a transaction-mode pooler, where a prepared statement must
    not outlive its transaction: statements are prepared under unique names and never cached.
    Otherwise each connection keeps its prepared statements, saving a round trip per query.
    `statement_timeout`: asyncpg's command_timeout, each statement's bound in the client; past it
    asyncpg cancels the statement on the server and the connection is discarded. None (as for
    migrations, whose statements may rightly take long): no bound.
    """
    statements: dict[str, Any] = POOLER_SAFE_STATEMENTS if pooler else {}
    connect_args: dict[str, Any] = {
        "timeout": connect_timeout,
        "command_timeout": statement_timeout,
        **target.connect_kwargs,
        **statements,
        "async_creator_fn": connect,
    }
    engine = create_async_engine(
        "postgresql+asyncpg://",
        connect_args=connect_args,
        pool_size=pool_size,
        max_overflow=0,
        pool_timeout=pool_timeout,
        # Errors carry the statement, never its parameters: they hold quote text and user ids,
        # and errors are logged.
        hide_parameters=True,
        # Each statement commits on its own unless a unit asks for a transaction (see Database).
        # Set once per connection: as an option of each checkout it costs CPU every request.
        isolation_level="READ COMMITTED" if pooler else "AUTOCOMMIT",
    )
    event.listen(engine.sync_engine, "checkout", _replace_if_closed)
    return engine


def _replace_if_closed(dbapi_connection: Any, record: Any, proxy: Any) -> None:
    """A connection the server closed while it sat in the pool is replaced before use: Neon
    closes every connection of a compute it suspends after 5 idle minutes, or restarts. The
    check is local (the driver saw the socket close), so a busy pool pays no round trip; the
    pool opens a new connection in its place."""
    if proxy.driver_connection.is_closed():
        raise sa_exc.DisconnectionError("closed by the server while idle in the pool")


class Database:
    """The engine, and units of work on it admitted to the pool first come, first served.

    SQLAlchemy's async pool hands a returned connection to whichever task asks next, so under
    load a waiting request can be overtaken again and again until it times out (a p99 of
    seconds). A FIFO semaphore sized like the pool queues requests fairly in front of it.

    The unit-of-work rule, written here once (`unit`): a fresh session, closed before the
    response is sent. Each statement commits on its own (autocommit: a request of one statement
    costs no BEGIN and COMMIT round trips), unless the work calls `transaction` first, which
    makes the rest of the unit one transaction, committed when the unit ends without an error.
    Behind a transaction pooler every unit is one transaction, as it must be there. Whether one
    is there is known before the engine is built (`pooler.behind_a_pooler`), so the engine never
    changes while it serves.
    """

    def __init__(
        self,
        target: DatabaseTarget,
        *,
        pooler: bool | None,
        pool_size: int,
        pool_timeout: float,
        connect_timeout: float,
        statement_timeout: float,
        lock_timeout: float,
        observe_wait: Callable[[float], None] | None = None,
        instrument: Callable[[AsyncEngine], None] | None = None,
    ) -> None:
        """`observe_wait`: told each unit's wait for its slot (metrics); `instrument`: given
        the engine once it is built (traces)."""
        self.target = target
        self.role = target.role  # the connected role, for the GRANT a missing privilege names
        self._pooler = pooler  # None: ask the first connection
        self._pool_size = pool_size
        self._pool_timeout = pool_timeout
        self._connect_timeout = connect_timeout
        self._statement_timeout = statement_timeout
        self._waits = {
            "lock_timeout": f"{round(lock_timeout * 1000)}ms",
            # A transaction idle that long mid-unit was left by a client that vanished.
            "idle_timeout": f"{round(statement_timeout * 1000)}ms",
        }
        self._slots = FifoSlots(pool_size, pool_timeout, observe_wait)
        self._instrument = instrument
        self._opening: asyncio.Future[AsyncEngine] | None = None
        self.engine: AsyncEngine | None = None  # built by `open`
        self._factory: async_sessionmaker[AsyncSession] | None = None
        self._transactional = False
        self._noted: set[str] = set()  # missing grants and objects, each logged once

    async def open(self) -> AsyncEngine:
        """The engine, built once the pooler is known (asking the server when neither
        DATABASE_TRANSACTION_POOLER nor the host name said). Callers arriving while it opens
        share that one attempt and its outcome (single flight): each waits at most one
        DATABASE_CONNECT_TIMEOUT, however many queue; a failed attempt is retried by the next."""
        if self.engine is not None:
            return self.engine
        if self._opening is None or self._opening.done():
            self._opening = asyncio.ensure_future(self._build())
            # Its failure is each waiter's to raise; this only marks it seen if none remained.
            self._opening.add_done_callback(lambda f: f.cancelled() or f.exception())
        # Shielded: a caller that leaves does not cancel the attempt the others wait on.
        return await asyncio.shield(self._opening)

    async def _build(self) -> AsyncEngine:
        pooler = self._pooler
        if pooler is None:
            pooler = await behind_a_pooler(
                self.target, self._connect_timeout, self._statement_timeout
            )
        engine = create_engine(
            self.target,
            pooler=pooler,
            pool_size=self._pool_size,
            pool_timeout=self._pool_timeout,
            connect_timeout=self._connect_timeout,
            statement_timeout=self._statement_timeout,
        )
        if self._instrument is not None:
            self._instrument(engine)
        self._transactional = pooler
        # Loaded values stay usable after commit: responses are built after it.
        self._factory = async_sessionmaker(
            engine, class_=AsyncSession, expire_on_commit=False, info={_WAITS: self._waits}
        )
        self.engine = engine
        return engine

    @asynccontextmanager
    async def unit(self) -> AsyncIterator[AsyncSession]:
        """A session for one unit of work (see the class). A failure of the database is raised
        as one of `database.failures`."""
        await self._slots.acquire()
        try:
            if self._factory is None:
                await self.open()
            assert self._factory is not None
            # Not `async with`: it shields every close in a task of its own, CPU on every
            # request; only a close that rolls back has a round trip to protect.
            session = self._factory()
            try:
                yield session
                if self._transactional or session.info.get(_TRANSACTION):
                    await session.commit()
            except BaseException:
                await asyncio.shield(session.close())
                raise
            # Committed (or autocommit, where each statement was): closing sends nothing.
            await session.close()
        except (sa_exc.DBAPIError, TimeoutError) as exc:
            failure = failure_of(exc, self.role, self._noted)
            if failure is None:
                raise
            raise failure from exc
        finally:
            self._slots.release()

    async def dispose(self) -> None:
        if self._opening is not None:
            self._opening.cancel()
        if self.engine is not None:
            await self.engine.dispose()


# Set in a session's `info` by `transaction`: the unit of work commits it.
_TRANSACTION = "quoteapi.transaction"
# In every session's `info`: the parameters of SERVER_WAITS.
_WAITS = "quoteapi.server_waits"

# The waits the server bounds itself, for the transaction of the statement that reads this
# subquery: each lock wait (DATABASE_LOCK_TIMEOUT), and a transaction left idle by a client
# that vanished (then ended, its locks released). A unit's first statement reads it in its FROM,
# evaluated before anything else the statement does (a volatile subquery is never merged into
# its statement); transaction-local, so that it holds behind a transaction pooler too, and no
# round trip of its own. Locks taken while that first statement is planned (a table lock held
# by a migration) wait under the statement's own bound instead.
SERVER_WAITS = """(
    SELECT set_config('lock_timeout', :lock_timeout, true),
           set_config('idle_in_transaction_session_timeout', :idle_timeout, true)
) AS server_waits"""


def server_waits(session: AsyncSession) -> dict[str, str]:
    """SERVER_WAITS's parameters for a unit of work on `session`."""
    waits: dict[str, str] = session.info[_WAITS]
    return waits


async def transaction(session: AsyncSession) -> None:
    """Make the rest of this unit of work one transaction, READ COMMITTED, committed when the
    work returns (an autocommit session would run each statement alone)."""
    session.info[_TRANSACTION] = True
    await session.connection(execution_options={"isolation_level": "READ COMMITTED"})


async def open_and_check_role(database: Database) -> None:
    """Open the database ahead of the first request, and log a warning when the connected role
    is exempt from row-level security (a superuser, or BYPASSRLS like Neon's default owner
    role): the policy is then no second wall at all."""
    query = text(
        "SELECT current_user, rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user"
    )
    try:
        async with (await database.open()).connect() as connection:
            role, superuser, bypass = (await connection.execute(query)).one()
    except Exception as exc:  # the database may be down at start-up; requests will say so
        log.info("rls_role_check_skipped", error=type(exc).__name__)
        return
    if superuser or bypass:
        log.warning(
            "rls_bypassed",
            "row-level security does not apply to this role; connect as a least-privilege role "
            "(docs/security.md: Row-level security)",
            role=role,
            reason="superuser" if superuser else "bypassrls",
        )
    else:
        log.info("rls_role_ok", role=role)
