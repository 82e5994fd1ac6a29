"""The async engine (asyncpg under SQLAlchemy) and the per-request session dependency."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any

import asyncpg
from fastapi import Depends, Request
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
    pool_size: int = 10,
    pool_timeout: float = 5.0,
    connect_timeout: float = 10.0,
) -> AsyncEngine:
    """Build the engine for one database target; nothing connects until first use."""
    connect_args: dict[str, Any] = {
        "timeout": connect_timeout,
        **target.connect_kwargs,
        # Pooler-safe: asyncpg's own statement cache off, SQLAlchemy's off, unique names.
        "statement_cache_size": 0,
        "prepared_statement_cache_size": 0,
        "prepared_statement_name_func": _unique_statement_name,
        "async_creator_fn": _connect_with_retry,
    }
    return create_async_engine(
        "postgresql+asyncpg://",
        connect_args=connect_args,
        pool_size=pool_size,
        max_overflow=0,
        pool_timeout=pool_timeout,
    )


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions that keep loaded values after commit (responses are built after it)."""
    return async_sessionmaker(engine, class_=AsyncSession, expire_on_commit=False)


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    """One session per request, from the factory the app was built with."""
    factory: async_sessionmaker[AsyncSession] = request.app.state.sessions
    async with factory() as session:
        yield session


SessionDep = Annotated[AsyncSession, Depends(get_session)]
