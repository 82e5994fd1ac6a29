"""Liveness and readiness probes for load balancers and orchestrators."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy import text
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlmodel.ext.asyncio.session import AsyncSession

from quoteapi.database import privileges
from quoteapi.database.failures import DatabaseFailure
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
_NOT_READY = ("behind", "missing", "unknown")


@router.get("/healthz", summary="The process is alive (no database check)", openapi_extra=_NO_AUTH)
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


async def _checks(session: AsyncSession, role: str, known: tuple[str, ...]) -> dict[str, Any]:
    connection = await session.connection()
    rows = (await connection.execute(_PRIVILEGES, privileges.CHECK_PARAMETERS)).all()
    held = {(name, privilege): ok for _, name, privilege, ok in rows}
    readable = held[("alembic_version", "SELECT")]  # None: no such table, no migration ran
    revision = await connection.scalar(_REVISION) if readable else None
    if held[("user_messages", "SELECT")]:
        await connection.execute(_TABLE_PROBE)
    checks = {"database": "ok", **_schema(revision, readable is not False, known)}
    if missing := privileges.missing_grants(rows, role):  # GRANTs, one per object
        checks |= {"privileges": "missing", "missing": missing}
    return checks


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
            checks = await _checks(session, database.role, services.schema_revisions)
    except PoolTimeout:
        log.warning("readyz_server_busy")
        checks = {"database": "busy"}
    except DatabaseFailure as exc:
        log.warning(f"readyz_database_{exc.readiness}", error=type(exc).__name__)
        checks = {"database": exc.readiness}
    ready = checks["database"] == "ok" and checks["schema"] not in _NOT_READY
    if ready and "missing" not in checks:
        return JSONResponse({"status": "ready", **checks})
    headers = {"Retry-After": str(RETRY_AFTER_SECONDS)}
    return JSONResponse({"status": "not-ready", **checks}, status_code=503, headers=headers)


def _schema(current: str | None, revision_known: bool, known: tuple[str, ...]) -> dict[str, Any]:
    """The schema check: at this release's head; ahead (migrated by a later release, whose
    migrations keep this release's code working: ready); behind, missing, or unknown (the role
    may not read the revision): not ready."""
    head = known[0]
    if current is not None and current == head:
        return {"schema": head}
    if not revision_known:
        state = "unknown"
    else:
        state = "missing" if current is None else "behind" if current in known else "ahead"
    return {"schema": state, "current": current, "head": head}
