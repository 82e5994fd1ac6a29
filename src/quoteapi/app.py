"""The application factory: wiring only. The lifespan builds the app's one `Services` object;
routes reach it through `quoteapi.services.services_of`."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from standardwebhooks import Webhook

from quoteapi import health, migrations
from quoteapi.auth.deps import SECURITY_SCHEMES
from quoteapi.auth.verify import TokenVerifier
from quoteapi.database.engine import Database, open_and_check_role
from quoteapi.database.failures import DATABASE_FAILURES, database_error
from quoteapi.docs import install_docs, use_problem_media_type
from quoteapi.logs import EventLog, configure_logging
from quoteapi.messages import router as messages
from quoteapi.middleware import (
    ProblemCORSMiddleware,
    RequestContextMiddleware,
)
from quoteapi.problems import PROBLEM_HANDLERS
from quoteapi.services import Services
from quoteapi.settings import Settings, load_settings, require_database
from quoteapi.telemetry import fastapi_telemetry, tracing_from
from quoteapi.webhooks.signatures import signing_key

log = EventLog("quoteapi")
_CORS_HEADERS = ["Authorization", "Content-Type", "If-Match", "If-None-Match", "X-Request-ID"]


def create_app(settings: Settings) -> FastAPI:
    """Nothing connects until the app starts; a setting that cannot work raises ConfigError."""
    target = require_database(settings, "serve")
    verifier = TokenVerifier.from_settings(settings)
    secret = settings.clerk_webhook_signing_secret
    webhook = Webhook(signing_key(secret)) if secret else None  # None: no webhook endpoint
    observers = None  # set below when metrics are on
    tracing = tracing_from(settings)  # None (nothing of the SDK imported) unless OTEL_* asks

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        for note in target.notes:
            log.warning("config_note", note)
        database = Database(
            target,
            pooler=settings.database_transaction_pooler,
            pool_size=settings.database_pool_size,
            pool_timeout=settings.database_pool_timeout,
            connect_timeout=settings.database_connect_timeout,
            statement_timeout=settings.database_statement_timeout,
            lock_timeout=settings.database_lock_timeout,
            observe_wait=observers.pool_wait if observers else None,
            instrument=tracing.instrument_engine if tracing else None,
        )
        app.state.services = Services(
            settings=settings,
            database=database,
            verifier=verifier,
            webhook=webhook,
            schema_revisions=migrations.known_revisions(),
        )
        # In the background: start-up must not wait on a database that is still waking.
        opening = asyncio.create_task(open_and_check_role(database))
        jwks_http = None  # None: a key source that fetches makes its own client
        if tracing:
            tracing.start()
            jwks_http = tracing.traced_client(settings.clerk_jwks_timeout_seconds)
        await verifier.start(jwks_http)  # warms the keys; a failure only logs
        tune_garbage_collector(settings.quoteapi_gc_gen0_threshold)
        try:
            yield
        finally:
            opening.cancel()
            await verifier.close()
            await database.dispose()
            del app.state.services
            if tracing:  # sends the spans still buffered, off the event loop
                assert jwks_http is not None
                await jwks_http.aclose()
                await asyncio.to_thread(tracing.shutdown)

    app = FastAPI(
        title="quoteapi",
        version="0.1.0",
        summary="Each signed-in Clerk user's favourite quote, stored in Postgres.",
        license_info={"name": "MIT", "identifier": "MIT"},
        # Relative: the document describes whichever host served it.
        servers=[{"url": "/"}],
        lifespan=lifespan,
        telemetry=fastapi_telemetry(tracing),
        docs_url=None,  # served by quoteapi.docs, without a CDN
        redoc_url=None,
        # Operation ids are the handler names (get_message, put_message, ...): stable and
        # readable for client generators.
        generate_unique_id_function=lambda route: route.name,
        # No trailing-slash redirects: Starlette builds their Location from the Host header.
        redirect_slashes=False,
    )
    handlers = {**PROBLEM_HANDLERS, **dict.fromkeys(DATABASE_FAILURES, database_error)}
    for failure, handler in handlers.items():
        app.add_exception_handler(failure, handler)
    # The hot path first: routing tries each route in turn.
    app.include_router(messages.router)
    app.include_router(health.router)
    if settings.quoteapi_docs_enabled:
        install_docs(app, app.openapi_url or "/openapi.json")
    if settings.quoteapi_dev_issuer:  # never in production: `quoteapi serve` refuses it
        from quoteapi.dev import issuer

        app.include_router(issuer.build_router(settings.quoteapi_data_dir))
    if webhook is not None:  # none: its router, models and SQL are not even imported
        from quoteapi.webhooks import router as webhooks

        app.include_router(webhooks.router)
    # Outermost first: the request id and the access log see everything, CORS preflights too.
    if settings.cors_allow_origins:  # none: browsers on other origins are refused anyway
        # POST only for the dev page's POST /dev/token; the API itself takes none from browsers.
        methods = ["GET", "PUT", "DELETE", *(["POST"] if settings.quoteapi_dev_issuer else [])]
        app.add_middleware(
            ProblemCORSMiddleware,
            allow_origins=settings.cors_allow_origins,
            allow_methods=methods,
            allow_headers=_CORS_HEADERS,
            expose_headers=["ETag", "Location", "Retry-After", "X-Request-ID"],
            max_age=600,
        )
    if settings.quoteapi_metrics_enabled:  # off: not imported, no route, no per-request work
        from quoteapi import metrics

        assert settings.quoteapi_metrics_token is not None  # settings require it
        token = settings.quoteapi_metrics_token.get_secret_value()
        observers = metrics.install(app, token)  # GET /metrics; each request timed where logged
    app.add_middleware(RequestContextMiddleware, observe=observers.request if observers else None)
    use_problem_media_type(
        app,
        security_schemes=SECURITY_SCHEMES,
        body_schemas=messages.body_schemas(settings.quoteapi_message_max_length),
    )
    return app


def tune_garbage_collector(gen0_threshold: int) -> None:
    """Once start-up is done: freeze what is loaded and collect the youngest generation after
    `gen0_threshold` net allocations (0: Python's defaults), then turn the collector on. Why,
    measured: bench/README.md. No collection first: one cost a tenth of a cold start."""
    if gen0_threshold:
        gc.freeze()
        gc.set_threshold(gen0_threshold, *gc.get_threshold()[1:])
    gc.enable()


def create_app_from_env() -> FastAPI:
    """For `uvicorn --factory`: the workers of `--workers N` inherit no logging set-up."""
    configure_logging(json_lines=True)
    return create_app(load_settings())
