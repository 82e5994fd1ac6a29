"""What a unit of work raises when the database fails it: one exception per cause, each with
the 503 it is answered with (`database_error`, installed by create_app); /readyz reads them too.
`failure_of` turns what the driver raised into one of them."""

from __future__ import annotations

import re
import traceback
from typing import ClassVar

from fastapi import Request
from fastapi.responses import JSONResponse
from sqlalchemy import exc as sa_exc
from sqlalchemy.exc import TimeoutError as PoolTimeout

from quoteapi.database.privileges import grant_needed_on
from quoteapi.logs import EventLog
from quoteapi.problems import (
    INTERNAL_ERROR,
    RETRY_AFTER_SECONDS,
    Problem,
    problem_response,
    unexpected_error,
)

log = EventLog("quoteapi.db")


class DatabaseFailure(Exception):
    """The database could not serve a unit of work; the message says why, for the log. The
    client gets `problem`, told `answer`: the request may succeed later, unchanged. /readyz
    reports `readiness`."""

    problem: ClassVar[Problem]
    answer: ClassVar[str]
    readiness: ClassVar[str] = "failed"


class DatabaseUnreachable(DatabaseFailure, ConnectionError):
    """No connection could be opened, retries included: the database is down or unreachable,
    or refuses us. The message is one line: where, what failed, and the fix."""

    problem = Problem(503, "database-unavailable", "Database unavailable")
    answer = "The database cannot be reached right now"
    readiness = "unreachable"


class DatabaseConnectTimeout(DatabaseUnreachable):
    problem = Problem(503, "database-connect-timeout", "Database connection timed out")
    answer = "The database did not answer a new connection in time"
    readiness = "timeout"


class StatementTimeout(DatabaseFailure):
    """DATABASE_STATEMENT_TIMEOUT ran out (a frozen backend, a half-open link, a pooler's queue, a
    table lock taken while the statement was planned)."""

    problem = Problem(503, "database-statement-timeout", "Database statement timed out")
    answer = "The database did not answer in time"
    readiness = "timeout"


class LockTimeout(DatabaseFailure):
    problem = Problem(503, "database-lock-timeout", "Database lock wait timed out")
    answer = "Your data is locked by another change right now"
    readiness = "timeout"


class PrivilegeMissing(DatabaseFailure):
    problem = Problem(503, "database-privilege-missing", "Database privilege missing")
    answer = "The service lacks a database privilege; its operator has been told"


class SchemaBehind(DatabaseFailure):
    """The code uses an object the database lacks: rolled out before `quoteapi migrate` ran."""

    problem = Problem(503, "database-schema-behind", "Database schema behind")
    answer = "The database schema is older than this service; its operator has been told"


# Every pool slot stayed busy past DATABASE_POOL_TIMEOUT: overload, not an outage.
SERVER_BUSY = Problem(503, "server-busy", "Server busy")

# Every problem, for the OpenAPI document of the routes that use the database.
DATABASE_PROBLEMS = (
    SERVER_BUSY,
    DatabaseConnectTimeout.problem,
    DatabaseUnreachable.problem,
    StatementTimeout.problem,
    LockTimeout.problem,
    PrivilegeMissing.problem,
    SchemaBehind.problem,
)

# What a request may raise when the database fails it; create_app maps each to a problem.
DATABASE_FAILURES: tuple[type[Exception], ...] = (
    sa_exc.DBAPIError,
    PoolTimeout,
    DatabaseFailure,
)


# The SQLSTATEs of a cause: lock_not_available (lock_timeout), query_canceled (statement_timeout
# or an operator's cancel), and the objects a newer revision adds.
_BY_SQLSTATE: dict[str, type[DatabaseFailure]] = {
    "55P03": LockTimeout,
    "57014": StatementTimeout,
    **dict.fromkeys(("42P01", "42883", "42703", "3F000"), SchemaBehind),
}
# 42501 is also a row-level-security violation: a bug, not an operator's missing GRANT.
_PERMISSION_DENIED = re.compile(r"permission denied for (\w+) (\S+)")


def failure_of(exc: BaseException, role: str, noted: set[str]) -> DatabaseFailure | None:
    """The failure `exc` means, or None when it is a bug. `role` is the connected role, for the
    GRANT to name; `noted`: the missing GRANTs and objects logged already (each once)."""
    if isinstance(exc, TimeoutError):  # asyncpg's command_timeout
        return StatementTimeout("a statement got no answer in time")
    if not isinstance(exc, sa_exc.DBAPIError):
        return None
    sqlstate = getattr(exc.orig, "sqlstate", None) or ""
    if sqlstate == "42501":  # insufficient_privilege
        denied = _PERMISSION_DENIED.search(str(exc.orig))
        if denied is None:
            return None
        kind, name = denied.group(1), denied.group(2).strip('"')
        grant = grant_needed_on(kind, name, role)
        if grant not in noted:
            noted.add(grant)
            log.error(
                "database_privilege_missing",
                f"the role lacks a privilege; as the database owner, run: {grant}",
                role=role,
                object=f"{kind} {name}",
                grant=grant,
            )
        return PrivilegeMissing(grant)
    if failure := _BY_SQLSTATE.get(sqlstate):
        if failure is SchemaBehind and sqlstate not in noted:
            noted.add(sqlstate)
            log.error(
                "database_schema_behind",
                "the code needs a newer schema than the database has; run `quoteapi migrate`",
                sqlstate=sqlstate,
            )
        return failure(f"SQLSTATE {sqlstate}")
    if exc.connection_invalidated or isinstance(
        exc, sa_exc.OperationalError | sa_exc.InterfaceError
    ):
        return DatabaseUnreachable("the connection failed")
    return None


async def database_error(request: Request, exc: Exception) -> JSONResponse:
    """A 503 naming the wait that ran out or the failure; anything else is a bug (500)."""
    if isinstance(exc, PoolTimeout):
        problem, answer = SERVER_BUSY, "Every database connection is busy"
    elif isinstance(exc, DatabaseFailure):
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
