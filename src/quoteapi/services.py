"""The app's infrastructure (settings, database, verifiers): built once by the lifespan and
reached by routes only through the dependencies here. A feature builds its own objects;
nothing here imports one."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Request
from sqlmodel.ext.asyncio.session import AsyncSession

from quoteapi.auth.verify import TokenVerifier
from quoteapi.database.engine import Database
from quoteapi.settings import Settings

if TYPE_CHECKING:
    from quoteapi.webhooks.signatures import WebhookVerifier


@dataclass(frozen=True)
class Services:
    """Everything a request may use that lives as long as the app."""

    settings: Settings
    database: Database
    verifier: TokenVerifier
    webhook_verifier: WebhookVerifier | None  # None: no webhook endpoint
    schema_revisions: tuple[str, ...]  # the migrations this release ships, head first


async def get_services(request: Request) -> Services:
    """The running app's services (set by its lifespan). Async, as every dependency here:
    FastAPI runs a plain `def` dependency in a worker thread, a hop per request."""
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


async def unit_of_work(services: ServicesDep) -> AsyncIterator[AsyncSession]:
    """The request's unit of work (`Database.unit`), ended when the handler returns: before
    the response is sent, so a slow reader holds no connection."""
    async with services.database.unit() as session:
        yield session


# Declared after the caller (`CurrentUser`) and the body: FastAPI solves a route's dependencies
# in order, so no database slot is taken for a caller refused or a body still arriving.
SessionDep = Annotated[AsyncSession, Depends(unit_of_work, scope="function")]
