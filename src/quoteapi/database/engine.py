"""The engine (asyncpg under SQLAlchemy) and the unit of work on it (`Database.run`): the rule
for sessions and transactions, the bounds the server keeps for them, and the failures of the
database raised as `database.failures`. Connecting is `database.connect`'s job; admission to
the pool, `database.admission`'s."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Concatenate, ParamSpec, TypeVar

from sqlalchemy import Text, bindparam, event, func, select, text, true
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlmodel.ext.asyncio.session import AsyncSession

from quoteapi.database.admission import FifoSlots
from quoteapi.database.connect import connect
from quoteapi.database.failures import failure_of
from quoteapi.database.pooler import POOLER_SAFE_STATEMENTS, PoolerSwitch
from quoteapi.database.url import DatabaseTarget

log = logging.getLogger("quoteapi.db")


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


T = TypeVar("T")
P = ParamSpec("P")


class Database:
    """The engine, and units of work on it admitted to the pool first come, first served.

    SQLAlchemy's async pool hands a returned connection to whichever task asks next, so under
    load a waiting request can be overtaken again and again until it times out (a p99 of
    seconds). A FIFO semaphore sized like the pool queues requests fairly in front of it.

    The unit-of-work rule, written here once: a unit runs on a fresh session that is closed
    before the response is sent. Each statement commits on its own (autocommit: a request of
    one statement costs no BEGIN and COMMIT round trips), unless the work calls `transaction`
    first, which makes the rest of the unit one transaction, committed when the work returns.
    Behind a transaction pooler every unit is one transaction, as it must be there. A database
    whose pooler was neither set nor recognised switches to that mode when the pooler first
    breaks a statement (`pooler.PoolerSwitch`), and the unit runs once more, whole, on a fresh
    session: nothing of it ran.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        pool_size: int,
        wait: float,
        pooler: bool,
        role: str,
        lock_timeout: float,
        idle_timeout: float,
        pooler_safe_engine: Callable[[], AsyncEngine] | None = None,
    ) -> None:
        self._waits = {
            _LOCK_TIMEOUT.key: f"{round(lock_timeout * 1000)}ms",
            _IDLE_TIMEOUT.key: f"{round(idle_timeout * 1000)}ms",
        }
        self._use(engine, pooler=pooler)
        self._pooler = PoolerSwitch(None if pooler else pooler_safe_engine)
        self._slots = FifoSlots(pool_size, wait)
        self.role = role  # the connected role, for the GRANT a missing privilege names
        self._noted: set[str] = set()  # missing grants and objects, each logged once

    def _use(self, engine: AsyncEngine, *, pooler: bool) -> None:
        self.engine = engine
        self._transactional = pooler
        # Loaded values stay usable after commit: responses are built after it.
        self._factory = async_sessionmaker(
            engine, class_=AsyncSession, expire_on_commit=False, info={_WAITS: self._waits}
        )

    async def run(
        self,
        work: Callable[Concatenate[AsyncSession, P], Awaitable[T]],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        """`work(session, *args, **kwargs)` as one unit of work (see the class): its result. A
        failure of the database is raised as one of `database.failures`."""
        await self._slots.acquire()
        try:
            try:
                return await self._run_once(work, *args, **kwargs)
            except sa_exc.DBAPIError as exc:
                engine = self._pooler.engine_after(exc, self.engine)
                if engine is None:
                    raise
                if engine is not self.engine:
                    self._use(engine, pooler=True)
            return await self._run_once(work, *args, **kwargs)
        except (sa_exc.DBAPIError, TimeoutError) as exc:
            failure = failure_of(exc, self.role, self._noted)
            if failure is None:
                raise
            raise failure from exc
        finally:
            self._slots.release()

    async def _run_once(
        self,
        work: Callable[Concatenate[AsyncSession, P], Awaitable[T]],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        # Not `async with`: it shields every close in a task of its own, CPU on every request
        # (bench/README.md, the levers); only a close that rolls back has a round trip to protect.
        session = self._factory()
        try:
            result = await work(session, *args, **kwargs)
            if self._transactional or session.info.get(_TRANSACTION):
                await session.commit()
        except BaseException:
            await asyncio.shield(session.close())
            raise
        # Committed (or autocommit, where each statement was): closing sends nothing.
        await session.close()
        return result

    async def dispose(self) -> None:
        for engine in (*self._pooler.retired, self.engine):
            await engine.dispose()


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
_LOCK_TIMEOUT = bindparam("lock_timeout", type_=Text)
_IDLE_TIMEOUT = bindparam("idle_timeout", type_=Text)
SERVER_WAITS = select(
    func.set_config("lock_timeout", _LOCK_TIMEOUT, true()),
    func.set_config("idle_in_transaction_session_timeout", _IDLE_TIMEOUT, true()),
).subquery("server_waits")


def server_waits(session: AsyncSession) -> dict[str, str]:
    """SERVER_WAITS's parameters for a unit of work on `session`."""
    waits: dict[str, str] = session.info[_WAITS]
    return waits


async def transaction(session: AsyncSession) -> None:
    """Make the rest of this unit of work one transaction, READ COMMITTED, committed when the
    work returns (an autocommit session would run each statement alone)."""
    session.info[_TRANSACTION] = True
    await session.connection(execution_options={"isolation_level": "READ COMMITTED"})


async def warn_if_rls_bypassed(engine: AsyncEngine) -> None:
    """Log a warning when the connected role is exempt from row-level security (a superuser,
    or BYPASSRLS like Neon's default owner role): the policy is then no second wall at all."""
    query = text(
        "SELECT current_user, rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user"
    )
    try:
        async with engine.connect() as connection:
            role, superuser, bypass = (await connection.execute(query)).one()
    except Exception as exc:  # the database may be down at start-up; requests will say so
        log.info("event=rls_role_check_skipped error=%s", type(exc).__name__)
        return
    if superuser or bypass:
        log.warning(
            "event=rls_bypassed role=%s reason=%s: row-level security does not apply to this "
            "role; connect as a least-privilege role (docs/security.md: Row-level security)",
            role,
            "superuser" if superuser else "bypassrls",
        )
    else:
        log.info("event=rls_role_ok role=%s", role)
