"""The application factory: wiring only (routers, middleware, lifespan, error handlers)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from quoteapi import db, migrations
from quoteapi.auth.verify import TokenVerifier
from quoteapi.errors import COMMON_RESPONSES, install_error_handlers, use_problem_media_type
from quoteapi.logs import configure_logging
from quoteapi.middleware import BodyLimitMiddleware, RequestContextMiddleware
from quoteapi.routes import health, me, webhooks
from quoteapi.settings import ConfigError, Settings, load_settings
from quoteapi.webhooks import Verifier

log = logging.getLogger("quoteapi")

# JSON API bodies are small (a quote of at most a few KiB); Clerk's webhook events can carry
# tens of KiB of user metadata.
API_BODY_LIMIT = 16 * 1024
BODY_LIMITS = {"/webhooks/": 1024 * 1024}


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
            pooler=settings.transaction_pooler,
            pool_size=settings.database_pool_size,
            pool_timeout=settings.database_pool_timeout,
            connect_timeout=settings.database_connect_timeout,
        )
        app.state.engine = engine
        slots = asyncio.Semaphore(settings.database_pool_size)
        wait = settings.database_pool_timeout
        app.state.sessions = db.Sessions(engine, slots=slots, wait=wait)
        app.state.statement_sessions = db.Sessions(
            engine, slots=slots, wait=wait, autocommit=not settings.transaction_pooler
        )
        # In the background: start-up must not wait on a database that is still waking.
        app.state.role_check = role_check = asyncio.create_task(db.warn_if_rls_bypassed(engine))
        async with httpx.AsyncClient(timeout=settings.clerk_jwks_timeout_seconds) as http:
            await app.state.verifier.start(http)  # warms the keys; a failure only logs
            try:
                yield
            finally:
                role_check.cancel()
                await app.state.verifier.close()
                await engine.dispose()

    app = FastAPI(
        title="quoteapi",
        version="0.1.0",
        summary="Each signed-in Clerk user's favourite quote, stored in Postgres.",
        lifespan=lifespan,
        docs_url="/docs" if settings.quoteapi_docs_enabled else None,
        redoc_url=None,
        # Operation ids are the handler names (get_message, put_message, ...): stable and
        # readable for client generators.
        generate_unique_id_function=lambda route: route.name,
    )
    app.state.settings = settings
    app.state.schema_head = migrations.head_revision()
    app.state.verifier = verifier
    install_error_handlers(app)
    app.include_router(health.router)
    if settings.quoteapi_dev_issuer:  # never in production: `quoteapi serve` refuses it
        from quoteapi.dev import issuer, tokens

        app.include_router(issuer.build_router(settings.quoteapi_data_dir))
        app.include_router(tokens.build_router(settings.quoteapi_data_dir))  # for web/
    app.include_router(me.build_router(settings), responses=COMMON_RESPONSES)
    # Outermost first: request id and access log see everything, CORS answers preflights
    # before any limit, and the body limit guards the routes.
    app.add_middleware(BodyLimitMiddleware, default=API_BODY_LIMIT, limits=BODY_LIMITS)
    if settings.cors_allow_origins:  # none: browsers on other origins are refused anyway
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_allow_origins,
            # POST only for the dev page's POST /dev/token; the API itself takes none from browsers.
            allow_methods=[
                "GET",
                "PUT",
                "DELETE",
                *(["POST"] if settings.quoteapi_dev_issuer else []),
            ],
            allow_headers=[
                "Authorization",
                "Content-Type",
                "If-Match",
                "If-None-Match",
                "X-Request-ID",
            ],
            expose_headers=["ETag", "Location", "Retry-After", "X-Request-ID"],
            max_age=600,
        )
    observe = None
    if settings.quoteapi_metrics_enabled:  # off: not imported, no route, no per-request work
        from quoteapi import metrics

        observe = metrics.install(app)  # GET /metrics; each request timed where it is logged
    app.add_middleware(RequestContextMiddleware, observe=observe)
    use_problem_media_type(app)
    if settings.clerk_webhook_signing_secret:  # unset or empty: no webhook endpoint at all
        # Built here so that a malformed secret stops start-up, not the first delivery.
        app.state.webhook_verifier = Verifier(settings.clerk_webhook_signing_secret)
        app.include_router(webhooks.router)
    return app


def create_app_from_env() -> FastAPI:
    """Factory for `uvicorn --factory` worker processes: settings from the environment."""
    # With --workers N, uvicorn spawns fresh interpreters that do not inherit the logging
    # set-up of `quoteapi serve`: without this, their access log is lost.
    configure_logging(json_lines=True)
    return create_app(load_settings())
