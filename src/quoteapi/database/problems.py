"""The problems a request meets when the database cannot serve it, and the handler that maps
the database's failures to them (installed by create_app)."""

from __future__ import annotations

import logging
import traceback

from fastapi import Request
from fastapi.responses import JSONResponse
from sqlalchemy import exc as sa_exc
from sqlalchemy.exc import TimeoutError as PoolTimeout

from quoteapi.database.engine import DatabaseUnreachable
from quoteapi.problems import (
    INTERNAL_ERROR,
    RETRY_AFTER_SECONDS,
    Problem,
    problem_response,
    unexpected_error,
)

log = logging.getLogger("quoteapi.db")

DATABASE_UNAVAILABLE = Problem(503, "database-unavailable", "Database unavailable")
# Every pool slot stayed busy past DATABASE_POOL_TIMEOUT: overload, not an outage.
SERVER_BUSY = Problem(503, "server-busy", "Server busy")

# What a request may raise when the database fails it; create_app maps each to a problem.
DATABASE_FAILURES: tuple[type[Exception], ...] = (
    sa_exc.DBAPIError,
    sa_exc.TimeoutError,
    DatabaseUnreachable,
)


def is_database_unavailable(exc: BaseException) -> bool:
    """True for failures that mean "the database cannot be reached now", not a bug."""
    if isinstance(exc, sa_exc.DBAPIError):
        return exc.connection_invalidated or isinstance(
            exc, sa_exc.OperationalError | sa_exc.InterfaceError
        )
    return isinstance(exc, DatabaseUnreachable | sa_exc.TimeoutError)


async def database_error(request: Request, exc: Exception) -> JSONResponse:
    """503 server-busy when no pool slot came free in time, 503 database-unavailable for an
    outage; anything else is a bug (500)."""
    if isinstance(exc, PoolTimeout):
        return _retry_later(request, exc, SERVER_BUSY, "Every database connection is busy")
    if is_database_unavailable(exc):
        return _retry_later(
            request, exc, DATABASE_UNAVAILABLE, "The database cannot be reached right now"
        )
    if isinstance(exc, sa_exc.DBAPIError):
        # The driver's message quotes the offending parameter value (asyncpg: "invalid input
        # for query argument $1: '...'"), whatever hide_parameters says: log the error class,
        # the SQLSTATE and where it happened, never the message.
        log.error(
            "event=database_error error=%s sqlstate=%s\n%s",
            type(exc.orig).__name__,
            getattr(exc.orig, "sqlstate", None) or "-",
            "".join(traceback.format_tb(exc.__traceback__)).rstrip(),
        )
        return problem_response(
            request, INTERNAL_ERROR, "Something went wrong on our side; it has been logged."
        )
    return await unexpected_error(request, exc)


def _retry_later(request: Request, exc: Exception, problem: Problem, why: str) -> JSONResponse:
    log.warning("event=%s error=%s", problem.code.replace("-", "_"), type(exc).__name__)
    return problem_response(
        request,
        problem,
        f"{why}; retry shortly.",
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )
