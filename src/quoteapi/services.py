"""The app's infrastructure, built by the lifespan, reached through `services_of`; no feature."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from fastapi import Request

from quoteapi.auth.verify import TokenVerifier
from quoteapi.database.engine import Database
from quoteapi.settings import Settings

if TYPE_CHECKING:
    from standardwebhooks import Webhook


@dataclass(frozen=True)
class Services:
    settings: Settings
    database: Database
    verifier: TokenVerifier
    webhook: Webhook | None  # None: no webhook endpoint
    schema_revisions: tuple[str, ...]  # the migrations this release ships, head first


def services_of(request: Request) -> Services:
    """The one way to the services. Not a dependency: FastAPI solving one costs 4-9% of a GET
    (bench/README.md, the unit of work)."""
    services: Services = request.app.state.services
    return services
