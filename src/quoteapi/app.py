"""The application factory: wiring only (routers, middleware, lifespan, error handlers)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI

from quoteapi import db, migrations
from quoteapi.auth.verify import TokenVerifier
from quoteapi.errors import install_error_handlers
from quoteapi.routes import health, webhooks
from quoteapi.settings import ConfigError, Settings, load_settings
from quoteapi.webhooks import Verifier

log = logging.getLogger("quoteapi")


def create_app(settings: Settings) -> FastAPI:
    """Build the service for `settings`; nothing connects until the app starts."""
    database = settings.database
    if database is None:
        raise ConfigError(
            "DATABASE_URL",
            "is not set",
            "set it to your PostgreSQL URL, or run `quoteapi dev` for an embedded database",
        )
    verifier = TokenVerifier.from_settings(settings)  # Clerk configuration checked here

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        for note in database.notes:
            log.warning("event=config_note note=%r", note)
        engine = db.create_engine(
            database,
            pool_size=settings.database_pool_size,
            pool_timeout=settings.database_pool_timeout,
            connect_timeout=settings.database_connect_timeout,
        )
        app.state.engine = engine
        app.state.sessions = db.session_factory(engine)
        async with httpx.AsyncClient(timeout=settings.clerk_jwks_timeout_seconds) as http:
            await app.state.verifier.start(http)  # warms the keys; a failure only logs
            try:
                yield
            finally:
                await app.state.verifier.close()
                await engine.dispose()

    app = FastAPI(title="quoteapi", version="0.1.0", lifespan=lifespan)
    app.state.settings = settings
    app.state.schema_head = migrations.head_revision()
    app.state.verifier = verifier
    install_error_handlers(app)
    app.include_router(health.router)
    if settings.quoteapi_dev_issuer:  # never in production: `quoteapi serve` refuses it
        from quoteapi.dev import issuer

        app.include_router(issuer.build_router(settings.quoteapi_data_dir))
    if settings.clerk_webhook_signing_secret:  # unset or empty: no webhook endpoint at all
        # Built here so that a malformed secret stops start-up, not the first delivery.
        app.state.webhook_verifier = Verifier(settings.clerk_webhook_signing_secret)
        app.include_router(webhooks.router)
    return app


def create_app_from_env() -> FastAPI:
    """Factory for `uvicorn --factory` worker processes: settings from the environment."""
    return create_app(load_settings())
