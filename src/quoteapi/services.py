"""The app's infrastructure services (settings, database, token verifier): built once by the
lifespan, reached by routes through `ServicesDep`. A feature builds its own objects; nothing
here imports one."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from quoteapi.auth.verify import TokenVerifier
from quoteapi.database.engine import Database
from quoteapi.settings import Settings


@dataclass(frozen=True)
class Services:
    """Everything a request may use that lives as long as the app."""

    settings: Settings
    database: Database
    verifier: TokenVerifier
    schema_revisions: tuple[str, ...]  # the migrations this release ships, head first


def services_of(request: Request) -> Services:
    """The services of the running app (set by its lifespan)."""
    services: Services = request.app.state.services
    return services


async def get_services(request: Request) -> Services:
    """`services_of` as a dependency. Async, as every dependency here: FastAPI runs a plain
    `def` dependency in a worker thread, a hop per request."""
    return services_of(request)


ServicesDep = Annotated[Services, Depends(get_services)]
