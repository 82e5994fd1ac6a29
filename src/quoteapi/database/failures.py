"""What a unit of work raises when the database fails it, one exception per cause, so that each
becomes its own answer (`database.problems`, /readyz); and `failure_of`, which turns what the
driver raised into one of them."""

from __future__ import annotations

import re

from sqlalchemy import exc as sa_exc

from quoteapi.database.privileges import grant_needed_on
from quoteapi.logs import EventLog

log = EventLog("quoteapi.db")


class DatabaseFailure(Exception):
    """The database could not serve a unit of work; the message says why, for the log."""


class DatabaseUnreachable(DatabaseFailure, ConnectionError):
    """No connection could be opened, retries included: the database is down or unreachable,
    or refuses us. The message is one line: where, what failed, and the fix."""


class DatabaseConnectTimeout(DatabaseUnreachable):
    """A new connection got no answer within DATABASE_CONNECT_TIMEOUT, retries included (a host
    that accepts TCP and says nothing, a network that drops the packets)."""


class StatementTimeout(DatabaseFailure):
    """A statement got no answer within DATABASE_STATEMENT_TIMEOUT (a frozen backend, a half-open
    link, a pooler's queue, a table lock taken while the statement was planned)."""


class LockTimeout(DatabaseFailure):
    """A statement waited on a lock longer than DATABASE_LOCK_TIMEOUT (a row another transaction
    writes, a user's quote being erased)."""


class PrivilegeMissing(DatabaseFailure):
    """The connected role lacks a privilege the code needs: an operator's GRANT is missing."""


class SchemaBehind(DatabaseFailure):
    """The code uses a table, column or function the database does not have yet: it was rolled
    out before `quoteapi migrate` ran."""


# SQLSTATEs: lock_not_available (lock_timeout), query_canceled (statement_timeout, or a cancel
# by an operator), insufficient_privilege, and the objects a newer revision adds.
_LOCK_NOT_AVAILABLE = "55P03"
_QUERY_CANCELED = "57014"
_INSUFFICIENT_PRIVILEGE = "42501"
_UNDEFINED_OBJECTS = {"42P01", "42883", "42703", "3F000"}
# PostgreSQL's wording for a missing privilege (42501 also means a row-level-security violation,
# which is a bug, not an operator's GRANT).
_PERMISSION_DENIED = re.compile(r"permission denied for (\w+) (\S+)")


def failure_of(exc: BaseException, role: str, noted: set[str]) -> DatabaseFailure | None:
    """The failure `exc` (raised by a unit of work) means, or None when it is no failure of the
    database (a bug). `role` is the connected role, for the GRANT a missing privilege names;
    `noted`: what was logged already, so that each missing GRANT or object is logged once."""
    if isinstance(exc, TimeoutError):  # asyncpg's command_timeout
        return StatementTimeout("a statement got no answer in time")
    if not isinstance(exc, sa_exc.DBAPIError):
        return None
    sqlstate = getattr(exc.orig, "sqlstate", None)
    if sqlstate == _LOCK_NOT_AVAILABLE:
        return LockTimeout("a lock wait ran out")
    if sqlstate == _QUERY_CANCELED:
        return StatementTimeout("the database cancelled a statement")
    if sqlstate == _INSUFFICIENT_PRIVILEGE:
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
    if sqlstate in _UNDEFINED_OBJECTS:
        key = f"schema:{sqlstate}"
        if key not in noted:
            noted.add(key)
            log.error(
                "database_schema_behind",
                "the code needs a newer schema than the database has; run `quoteapi migrate`",
                sqlstate=sqlstate,
            )
        return SchemaBehind("the schema lacks an object the code uses")
    if exc.connection_invalidated or isinstance(
        exc, sa_exc.OperationalError | sa_exc.InterfaceError
    ):
        return DatabaseUnreachable("the connection failed")
    return None
