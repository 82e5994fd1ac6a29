"""Transaction-mode poolers (Neon's -pooler endpoints, PgBouncer): the statement settings that
work behind one, how one shows itself when nobody said it was there, and the switch to those
settings it then calls for."""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Callable
from typing import Any

import asyncpg
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncEngine

log = logging.getLogger("quoteapi.db")


def _unique_statement_name() -> str:
    # Transaction-mode poolers (Neon's -pooler endpoints, PgBouncer) hand each transaction any
    # server connection: names must never collide with another client's statements there.
    return f"__quoteapi_{uuid.uuid4().hex}__"


# Behind a transaction pooler a prepared statement must not outlive its transaction: statements
# are prepared under unique names and never cached.
POOLER_SAFE_STATEMENTS: dict[str, Any] = {
    "statement_cache_size": 0,
    "prepared_statement_cache_size": 0,
    "prepared_statement_name_func": _unique_statement_name,
}

# What a transaction-mode pooler answers when a statement prepared on one server connection is
# used on another (26000), or a name another client prepared is reused (42P05). The SQLSTATE is
# lost by some poolers, hence the message as well.
_POOLER_STATEMENT_ERRORS = (
    asyncpg.InvalidSQLStatementNameError,
    asyncpg.DuplicatePreparedStatementError,
)
_POOLER_STATEMENT_MESSAGE = re.compile(r"prepared statement \S+ (does not|already) exists?")


def is_pooler_statement_error(exc: BaseException) -> bool:
    """True when `exc` says a transaction pooler moved a prepared statement's connection. The
    statement did not run (the error comes at prepare or bind), so it is safe to run again."""
    if not isinstance(exc, sa_exc.DBAPIError):
        return False
    cause = exc.orig.__cause__ if exc.orig is not None else None
    if isinstance(cause, _POOLER_STATEMENT_ERRORS):
        return True
    return _POOLER_STATEMENT_MESSAGE.search(str(cause or exc.orig)) is not None


class PoolerSwitch:
    """The switch to pooler-safe mode of a database whose pooler was neither set nor recognised:
    the first statement a transaction pooler breaks moves it, for good, to the engine
    `pooler_safe_engine` builds (None: this database never switches)."""

    def __init__(self, pooler_safe_engine: Callable[[], AsyncEngine] | None) -> None:
        self._pooler_safe_engine = pooler_safe_engine
        self.retired: list[AsyncEngine] = []  # the engine used before the switch

    def engine_after(self, exc: BaseException, current: AsyncEngine) -> AsyncEngine | None:
        """After `exc` failed a unit of work on `current`: the engine to run it again on (the
        pooler-safe one, built on the first call), or None when `exc` is not a pooler's doing
        or this database never switches. No await: no other task interleaves the switch."""
        if not is_pooler_statement_error(exc):
            return None
        if self.retired:
            return current  # switched already; the work met the old engine's connection
        if self._pooler_safe_engine is None:
            return None
        self.retired.append(current)
        engine = self._pooler_safe_engine()
        log.warning(
            "event=transaction_pooler_detected: prepared statements do not survive this "
            "database's pooler; switched to pooler-safe statements and transactional sessions. "
            "Set DATABASE_TRANSACTION_POOLER=true to start in this mode"
        )
        return engine
