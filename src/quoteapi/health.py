"""Liveness and readiness probes for load balancers and orchestrators."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlmodel.ext.asyncio.session import AsyncSession

from quoteapi.database.problems import is_database_unavailable
from quoteapi.problems import RETRY_AFTER_SECONDS
from quoteapi.services import ServicesDep

log = logging.getLogger("quoteapi.health")

router = APIRouter(tags=["health"])
# Probes take no token: `security: []` says so to tooling reading the OpenAPI document.
_NO_AUTH: dict[str, Any] = {"security": []}


@router.get("/healthz", summary="The process is alive (no database check)", openapi_extra=_NO_AUTH)
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


async def _schema_revision(session: AsyncSession) -> str | None:
    if (await session.scalar(text("SELECT to_regclass('alembic_version')"))) is None:
        return None
    revision: str | None = await session.scalar(text("SELECT version_num FROM alembic_version"))
    return revision


@router.get(
    "/readyz",
    summary="The database is reachable and its schema is at the head revision",
    responses={503: {"description": "Not ready: the body says which check failed"}},
    openapi_extra=_NO_AUTH,
)
async def readyz(services: ServicesDep) -> JSONResponse:
    head = services.schema_head
    try:
        # A unit of work like any request's: a probe does not jump the FIFO queue.
        current = await services.database.run(_schema_revision)
    except PoolTimeout:
        log.warning("event=readyz_server_busy")
        return _not_ready({"database": "busy", "schema": "unknown"})
    except Exception as exc:
        if not is_database_unavailable(exc):
            raise
        log.warning("event=readyz_database_unreachable error=%s", type(exc).__name__)
        return _not_ready({"database": "unreachable", "schema": "unknown"})
    if current != head:
        return _not_ready({"database": "ok", "schema": "behind", "current": current, "head": head})
    return JSONResponse({"status": "ready", "database": "ok", "schema": head})


def _not_ready(checks: dict[str, Any]) -> JSONResponse:
    return JSONResponse(
        {"status": "not-ready", **checks},
        status_code=503,
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )
