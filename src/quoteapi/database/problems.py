"""The problems a request meets when the database cannot serve it, one per wait that ran out or
failure (`database.failures`), and the handler that answers them (installed by create_app).
Each is a 503 with Retry-After: the request may succeed later, unchanged."""

from __future__ import annotations

import traceback

from fastapi import Request
from fastapi.responses import JSONResponse
from sqlalchemy import exc as sa_exc
from sqlalchemy.exc import TimeoutError as PoolTimeout

from quoteapi.database.failures import (
    DatabaseConnectTimeout,
    DatabaseFailure,
    DatabaseUnreachable,
    LockTimeout,
    PrivilegeMissing,
    SchemaBehind,
    StatementTimeout,
)
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
DATABASE_UNAVAILABLE = Problem(503, "database-unavailable", "Database unavailable")
DATABASE_CONNECT_TIMEOUT = Problem(503, "database-connect-timeout", "Database connection timed out")
DATABASE_STATEMENT_TIMEOUT = Problem(
    503, "database-statement-timeout", "Database statement timed out"
)
DATABASE_LOCK_TIMEOUT = Problem(503, "database-lock-timeout", "Database lock wait timed out")
DATABASE_PRIVILEGE_MISSING = Problem(
    503, "database-privilege-missing", "Database privilege missing"
)
DATABASE_SCHEMA_BEHIND = Problem(503, "database-schema-behind", "Database schema behind")

# Each failure's problem and what the client is told; the most specific class first.
_ANSWERS: tuple[tuple[type[Exception], Problem, str], ...] = (
    (PoolTimeout, SERVER_BUSY, "Every database connection is busy"),
    (
        DatabaseConnectTimeout,
        DATABASE_CONNECT_TIMEOUT,
        "The database did not answer a new connection in time",
    ),
    (DatabaseUnreachable, DATABASE_UNAVAILABLE, "The database cannot be reached right now"),
    (StatementTimeout, DATABASE_STATEMENT_TIMEOUT, "The database did not answer in time"),
    (LockTimeout, DATABASE_LOCK_TIMEOUT, "Your data is locked by another change right now"),
    (
        PrivilegeMissing,
        DATABASE_PRIVILEGE_MISSING,
        "The service lacks a database privilege; its operator has been told",
    ),
    (
        SchemaBehind,
        DATABASE_SCHEMA_BEHIND,
        "The database schema is older than this service; its operator has been told",
    ),
)

# Every problem above, for the OpenAPI document of the routes that use the database.
DATABASE_PROBLEMS = tuple(problem for _, problem, _ in _ANSWERS)

# What a request may raise when the database fails it; create_app maps each to a problem.
DATABASE_FAILURES: tuple[type[Exception], ...] = (
    sa_exc.DBAPIError,
    PoolTimeout,
    DatabaseFailure,
)


async def database_error(request: Request, exc: Exception) -> JSONResponse:
    """A 503 naming the wait that ran out or the failure; anything else is a bug (500)."""
    for failure, problem, why in _ANSWERS:
        if isinstance(exc, failure):
            log.warning("database_request_failed", code=problem.code, error=type(exc).__name__)
            return problem_response(
                request,
                problem,
                f"{why}; retry shortly.",
                headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
            )
    if isinstance(exc, sa_exc.DBAPIError):
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
    return await unexpected_error(request, exc)
