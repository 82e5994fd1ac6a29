"""The async engine (asyncpg under SQLAlchemy) and the per-request session dependency."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

import asyncpg
from fastapi import Depends, Request
from sqlalchemy import Subquery, Text, bindparam, func, select, text
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlmodel.ext.asyncio.session import AsyncSession

from quoteapi.settings import DatabaseTarget

log = logging.getLogger("quoteapi.db")

# A Neon compute that scaled to zero takes a moment to wake; these pauses cover it without
# holding a request much longer than the connect timeout itself.
_CONNECT_BACKOFF_SECONDS = (0.25, 0.5, 1.0)
_RETRYABLE_CONNECT_ERRORS = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
)


class DatabaseUnreachable(ConnectionError):
    """No connection could be opened, retries included: the database is down or unreachable."""


def _unique_statement_name() -> str:
    # Transaction-mode poolers (Neon's -pooler endpoints, PgBouncer) hand each transaction any
    # server connection: names must never collide with another client's statements there.
    return f"__quoteapi_{uuid.uuid4().hex}__"


async def _connect_with_retry(**kwargs: Any) -> asyncpg.Connection:
    for pause in (*_CONNECT_BACKOFF_SECONDS, None):
        try:
            return await asyncpg.connect(**kwargs)
        except _RETRYABLE_CONNECT_ERRORS as exc:
            if pause is None:
                raise DatabaseUnreachable(type(exc).__name__) from exc
            log.warning("event=db_connect_retry error=%s pause_s=%s", type(exc).__name__, pause)
            await asyncio.sleep(pause)
    raise AssertionError("unreachable")


def create_engine(
    target: DatabaseTarget,
    *,
    pooler: bool = True,
    pool_size: int = 10,
    pool_timeout: float = 5.0,
    connect_timeout: float = 10.0,
) -> AsyncEngine:
    """Build the engine for one database target; nothing connects until first use.

    `pooler`: the database is behind a transaction-mode pooler, where a prepared statement must
    not outlive its transaction: statements are prepared under unique names and never cached.
    Otherwise each connection keeps its prepared statements, saving a round trip per query.
    """
    statements: dict[str, Any] = (
        {
            "statement_cache_size": 0,
            "prepared_statement_cache_size": 0,
            "prepared_statement_name_func": _unique_statement_name,
        }
        if pooler
        else {"prepared_statement_cache_size": 256}
    )
    connect_args: dict[str, Any] = {
        "timeout": connect_timeout,
        **target.connect_kwargs,
        **statements,
        "async_creator_fn": _connect_with_retry,
    }
    return create_async_engine(
        "postgresql+asyncpg://",
        connect_args=connect_args,
        pool_size=pool_size,
        max_overflow=0,
        pool_timeout=pool_timeout,
        # Errors carry the statement, never its parameters: they hold quote text and user ids,
        # and errors are logged.
        hide_parameters=True,
    )


class Sessions:
    """Opens request sessions, admitting requests to the pool first come, first served.

    SQLAlchemy's async pool hands a returned connection to whichever task asks next, so under
    load a waiting request can be overtaken again and again until it times out (a p99 of
    seconds). A FIFO semaphore sized like the pool queues requests fairly in front of it.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        slots: asyncio.Semaphore,
        wait: float,
        autocommit: bool = False,
    ) -> None:
        # autocommit: each statement commits on its own, with no BEGIN/COMMIT round trips; for
        # requests made of one statement. `begin_for_user` still opens a real transaction.
        bind = engine.execution_options(isolation_level="AUTOCOMMIT") if autocommit else engine
        # Loaded values stay usable after commit: responses are built after it.
        self.factory = async_sessionmaker(bind, class_=AsyncSession, expire_on_commit=False)
        self.slots = slots
        self.wait = wait

    @asynccontextmanager
    async def open(self) -> AsyncIterator[AsyncSession]:
        try:
            async with asyncio.timeout(self.wait):
                await self.slots.acquire()
        except TimeoutError:
            raise PoolTimeout(f"no database connection free within {self.wait} s") from None
        try:
            async with self.factory() as session:
                yield session
        finally:
            self.slots.release()


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    """A transactional session for the request."""
    sessions: Sessions = request.app.state.sessions
    async with sessions.open() as session:
        yield session


# The row-level-security policy on user_messages admits the row whose user_id equals this
# transaction-local setting (migration 0003).
USER_SETTING = "app.user_id"


def acting_user(*, rls: bool) -> Subquery:
    """A one-row subquery `acting(user_id)` of the bound parameter `caller`; with `rls` it also
    binds the running statement's transaction to that user, so that a single statement needs no
    set_config round trip.

    Statements read user_messages only through it (JOIN LATERAL, or INSERT ... SELECT), so
    PostgreSQL evaluates set_config before it touches the table and its policy sees the setting;
    OFFSET 0 keeps the planner from inlining the call elsewhere. Build statements with it once
    and execute them with `params={"caller": ...}`: building SQL per request costs more CPU
    than running it."""
    user_id = bindparam("caller", type_=Text)
    if not rls:
        return select(user_id.label("user_id")).subquery("acting")
    bind = func.set_config(USER_SETTING, user_id, True)
    return select(bind.label("user_id")).offset(0).subquery("acting")


_SET_USER: Any = select(func.set_config(USER_SETTING, bindparam("caller", type_=Text), True))


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
            "role; connect as a least-privilege role (README: Row-level security)",
            role,
            "superuser" if superuser else "bypassrls",
        )
    else:
        log.info("event=rls_role_ok role=%s", role)


async def begin_for_user(session: AsyncSession, user_id: str, *, rls: bool) -> None:
    """Open a real transaction on `session` (even an autocommit one) bound to `user_id`, for
    work that takes more than one statement or cannot carry `acting_user` itself."""
    await session.connection(execution_options={"isolation_level": "READ COMMITTED"})
    if rls:
        await session.exec(_SET_USER, params={"caller": user_id})


async def get_statement_session(request: Request) -> AsyncIterator[AsyncSession]:
    """A session for requests made of single statements: each commits on its own, with no
    BEGIN/COMMIT round trips (transactional behind a transaction pooler, where it must be)."""
    sessions: Sessions = request.app.state.statement_sessions
    async with sessions.open() as session:
        yield session


SessionDep = Annotated[AsyncSession, Depends(get_session)]
StatementSessionDep = Annotated[AsyncSession, Depends(get_statement_session)]
