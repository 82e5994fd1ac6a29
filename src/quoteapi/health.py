"""Liveness and readiness probes for load balancers and orchestrators."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy import text
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlmodel.ext.asyncio.session import AsyncSession

from quoteapi.database import privileges
from quoteapi.database.failures import (
    DatabaseConnectTimeout,
    DatabaseFailure,
    DatabaseUnreachable,
    LockTimeout,
    StatementTimeout,
)
from quoteapi.logs import EventLog
from quoteapi.problems import RETRY_AFTER_SECONDS
from quoteapi.services import services_of

log = EventLog("quoteapi.health")

router = APIRouter(tags=["health"])
# Probes take no token: `security: []` says so to tooling reading the OpenAPI document.
_NO_AUTH: dict[str, Any] = {"security": []}

_PRIVILEGES = text(privileges.CHECK_SQL)
_REVISION = text("SELECT version_num FROM alembic_version")
# Planned as a request's statement is, so it waits as long on a lock held on the table (a
# migration's ACCESS EXCLUSIVE): while requests cannot be answered in time, neither is this.
_TABLE_PROBE = text("SELECT FROM user_messages WHERE false")


@router.get("/healthz", summary="The process is alive (no database check)", openapi_extra=_NO_AUTH)
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@dataclass(frozen=True)
class Readiness:
    """What the database said: its schema revision (unknown: the role may not read it) and the
    privileges the role lacks."""

    revision: str | None
    revision_known: bool
    missing: list[str]  # GRANTs, one per object whose privileges are missing


async def _readiness(session: AsyncSession, role: str) -> Readiness:
    connection = await session.connection()
    rows = (await connection.execute(_PRIVILEGES, privileges.CHECK_PARAMETERS)).all()
    held = {(name, privilege): ok for _, name, privilege, ok in rows}
    readable = held[("alembic_version", "SELECT")]  # None: no such table, no migration ran
    revision = await connection.scalar(_REVISION) if readable else None
    if held[("user_messages", "SELECT")]:
        await connection.execute(_TABLE_PROBE)
    return Readiness(revision, readable is not False, privileges.missing_grants(rows, role))


@router.get(
    "/readyz",
    summary="The database answers in time, its schema is this release's (or a later one's), "
    "and the service's role holds every privilege it needs",
    responses={503: {"description": "Not ready: the body says which check failed"}},
    openapi_extra=_NO_AUTH,
)
async def readyz(request: Request) -> JSONResponse:
    services = services_of(request)
    database = services.database
    try:
        # A unit of work like any request's, with the same bounds: a probe does not jump the
        # FIFO queue, and says not-ready whenever a request could not be answered in time.
        async with database.unit() as session:
            readiness = await _readiness(session, database.role)
    except PoolTimeout:
        log.warning("readyz_server_busy")
        return _not_ready({"database": "busy"})
    except (DatabaseConnectTimeout, StatementTimeout, LockTimeout) as exc:
        log.warning("readyz_database_timeout", error=type(exc).__name__)
        return _not_ready({"database": "timeout"})
    except DatabaseUnreachable as exc:
        log.warning("readyz_database_unreachable", error=type(exc).__name__)
        return _not_ready({"database": "unreachable"})
    except DatabaseFailure as exc:
        log.warning("readyz_database_failed", error=type(exc).__name__)
        return _not_ready({"database": "failed"})
    checks = {"database": "ok", **_schema(readiness, services.schema_revisions)}
    if readiness.missing:
        checks |= {"privileges": "missing", "missing": readiness.missing}
    if checks["schema"] in ("behind", "missing", "unknown") or readiness.missing:
        return _not_ready(checks)
    return JSONResponse({"status": "ready", **checks})


def _schema(readiness: Readiness, known: tuple[str, ...]) -> dict[str, Any]:
    """The schema check: at this release's head; ahead (migrated by a later release, whose
    migrations keep this release's code working: ready); behind, missing, or unknown (the role
    may not read the revision): not ready."""
    current, head = readiness.revision, known[0]
    if current is not None and current == head:
        return {"schema": head}
    if not readiness.revision_known:
        state = "unknown"
    else:
        state = "missing" if current is None else "behind" if current in known else "ahead"
    return {"schema": state, "current": current, "head": head}


def _not_ready(checks: dict[str, Any]) -> JSONResponse:
    return JSONResponse(
        {"status": "not-ready", **checks},
        status_code=503,
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )
