"""The answer to a request the database cannot serve (installed by create_app): a 503 with
Retry-After naming the wait that ran out or the failure (`database.failures`)."""

from __future__ import annotations

import traceback

from fastapi import Request
from fastapi.responses import JSONResponse
from sqlalchemy import exc as sa_exc
from sqlalchemy.exc import TimeoutError as PoolTimeout

from quoteapi.database import failures
from quoteapi.logs import EventLog
from quoteapi.problems import (
    INTERNAL_ERROR,
    RETRY_AFTER_SECONDS,
    Problem,
    problem_response,
    unexpected_error,
)

log = EventLog("quoteapi.db")

# Every pool slot stayed busy past DATABASE_POOL_TIMEOUT: overload, not an outage.
SERVER_BUSY = Problem(503, "server-busy", "Server busy")

# Every problem, for the OpenAPI document of the routes that use the database.
DATABASE_PROBLEMS = (
    SERVER_BUSY,
    failures.DatabaseConnectTimeout.problem,
    failures.DatabaseUnreachable.problem,
    failures.StatementTimeout.problem,
    failures.LockTimeout.problem,
    failures.PrivilegeMissing.problem,
    failures.SchemaBehind.problem,
)

# What a request may raise when the database fails it; create_app maps each to a problem.
DATABASE_FAILURES: tuple[type[Exception], ...] = (
    sa_exc.DBAPIError,
    PoolTimeout,
    failures.DatabaseFailure,
)


async def database_error(request: Request, exc: Exception) -> JSONResponse:
    """A 503 naming the wait that ran out or the failure; anything else is a bug (500)."""
    if isinstance(exc, PoolTimeout):
        problem, answer = SERVER_BUSY, "Every database connection is busy"
    elif isinstance(exc, failures.DatabaseFailure):
        problem, answer = exc.problem, exc.answer
    elif isinstance(exc, sa_exc.DBAPIError):
        # The driver's message quotes the offending parameter value (asyncpg: "invalid input
        # for query argument $1: '...'"), whatever hide_parameters says: log the error class,
        # the SQLSTATE and where it happened, never the message.
        log.error(
            "database_error",
            error=type(exc.orig).__name__,
            sqlstate=getattr(exc.orig, "sqlstate", None),
            stack="".join(traceback.format_tb(exc.__traceback__)).rstrip(),
        )
        return problem_response(
            request, INTERNAL_ERROR, "Something went wrong on our side; it has been logged."
        )
    else:
        return await unexpected_error(request, exc)
    log.warning("database_request_failed", code=problem.code, error=type(exc).__name__)
    return problem_response(
        request,
        problem,
        f"{answer}; retry shortly.",
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )
