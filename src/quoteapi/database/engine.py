"""The engine (asyncpg under SQLAlchemy) and the unit of work on it (`Database.unit`): the rule
for sessions and transactions written once, the bounds the server keeps for them, and the
database's failures raised as `database.failures`."""

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
from quoteapi.database.connect import POOLER_SAFE_STATEMENTS, behind_a_pooler, connect
from quoteapi.database.failures import failure_of
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
    """The engine for `target`; nothing connects until first use. `pooler`: behind a transaction
    pooler (`database.connect`); otherwise each connection keeps its prepared statements, saving
    a round trip per query. `statement_timeout`: asyncpg's command_timeout, past which it cancels
    the statement and the connection is discarded; None (migrations): no bound."""
    connect_args: dict[str, Any] = {
        "timeout": connect_timeout,
        "command_timeout": statement_timeout,
        **target.connect_kwargs,
        **(POOLER_SAFE_STATEMENTS if pooler else {}),
        "async_creator_fn": connect,
    }
    engine = create_async_engine(
        "postgresql+asyncpg://",
        connect_args=connect_args,
        pool_size=pool_size,
        max_overflow=0,
        pool_timeout=pool_timeout,
        # Errors carry the statement, never its parameters (quote text and user ids): errors
        # are logged.
        hide_parameters=True,
        # Each statement commits on its own unless a unit asks for a transaction (see Database).
        # Set once per connection: as an option of each checkout it costs CPU every request.
        isolation_level="READ COMMITTED" if pooler else "AUTOCOMMIT",
    )
    event.listen(engine.sync_engine, "checkout", _replace_if_closed)
    return engine


def _replace_if_closed(dbapi_connection: Any, record: Any, proxy: Any) -> None:
    # Neon closes every connection of a compute it suspends (5 idle minutes) or restarts. The
    # check is local (the driver saw the socket close): a busy pool pays no round trip.
    if proxy.driver_connection.is_closed():
        raise sa_exc.DisconnectionError("closed by the server while idle in the pool")


class Database:
    """The engine, and units of work on it admitted first come, first served (`FifoSlots`).

    A unit (`unit`) is a fresh session, closed before the response is sent. Each statement
    commits on its own (autocommit: no BEGIN and COMMIT round trips) unless the work calls
    `transaction`: the rest of the unit is then one transaction, committed when it ends without
    an error. Behind a transaction pooler, known before the engine is built (it never changes
    while it serves), every unit is one transaction. `observe_wait` is told each unit's wait
    for its slot; `instrument` gets the engine."""

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
        self.target = target
        self.role = target.role  # the connected role, for the GRANT a missing privilege names
        self._pooler = pooler  # None: find out (`behind_a_pooler`)
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
        """The engine, built once the pooler is known. Callers arriving while it opens share
        that one attempt and its outcome: each waits at most one DATABASE_CONNECT_TIMEOUT,
        however many queue; a failed attempt is retried by the next caller."""
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
        """A session for one unit of work (see the class)."""
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

# The waits the server bounds, for the transaction of a statement that reads this in its FROM
# (a volatile subquery: evaluated first, never merged): each lock wait, and a transaction left
# idle by a vanished client. Transaction-local, so it holds behind a transaction pooler too, at
# no round trip. Locks taken while the statement is planned wait under its own bound instead.
SERVER_WAITS = """(
    SELECT set_config('lock_timeout', :lock_timeout, true),
           set_config('idle_in_transaction_session_timeout', :idle_timeout, true)
) AS server_waits"""


def server_waits(session: AsyncSession) -> dict[str, str]:
    """SERVER_WAITS's parameters for a unit of work on `session`."""
    waits: dict[str, str] = session.info[_WAITS]
    return waits


async def transaction(session: AsyncSession) -> None:
    """Make the rest of this unit of work one READ COMMITTED transaction, committed when the
    work returns."""
    session.info[_TRANSACTION] = True
    await session.connection(execution_options={"isolation_level": "READ COMMITTED"})


async def open_and_check_role(database: Database) -> None:
    """Open the database ahead of the first request, and warn when the connected role is exempt
    from row-level security (a superuser, or BYPASSRLS like Neon's default owner role)."""
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
