"""Prometheus metrics at `GET /metrics`, only when QUOTEAPI_METRICS_ENABLED is on (off, nothing
here is imported). Names, labels and the one-worker-per-container rule: docs/observability.md.
A request costs a gauge up and down and one histogram observation; the rest is read at scrape
time from the objects that already keep it."""

from __future__ import annotations

import hmac
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

from fastapi import FastAPI, Request, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.types import Scope

from quoteapi.auth.keys import JwksKeys
from quoteapi.middleware import RequestObserver
from quoteapi.problems import ApiError, Problem
from quoteapi.services import Services

METRICS_PATH = "/metrics"
METRICS_TOKEN_INVALID = Problem(401, "metrics-token-invalid", "Metrics token required")
# The API answers in about a millisecond; the default buckets start at 5 ms.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# Paths no route matched (404s, CORS preflights) share one label: a scanner cannot create series.
UNMATCHED_ROUTE = "<unmatched>"
# Any other method is `_OTHER`, as the HTTP conventions say.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class AppStateCollector(Collector):
    def __init__(self, app: FastAPI) -> None:
        self._state = app.state

    def collect(self) -> Iterable[Metric]:
        services: Services | None = getattr(self._state, "services", None)
        if services is None:  # not started, or stopped: nothing to read
            return
        verifier = services.verifier
        keys = verifier.keys
        if isinstance(keys, JwksKeys):  # a PEM key (CLERK_JWT_KEY) is never fetched
            fetches = CounterMetricFamily(
                "quoteapi_jwks_fetches",
                "Fetches of the Clerk signing keys (JWKS), by outcome.",
                labels=["outcome"],
            )
            fetches.add_metric(["ok"], keys.fetches_ok)
            fetches.add_metric(["error"], keys.fetches_failed)
            yield fetches
        cache = verifier.cache
        yield CounterMetricFamily(
            "quoteapi_token_cache_hits",
            "Session tokens found verified in the cache (no signature check).",
            value=cache.hits,
        )
        yield CounterMetricFamily(
            "quoteapi_token_cache_misses",
            "Session tokens not in the cache (fully verified, or refused).",
            value=cache.misses,
        )
        yield GaugeMetricFamily(
            "quoteapi_token_cache_entries", "Verified tokens cached now.", value=len(cache)
        )
        engine = services.database.engine
        pool: Any = engine.pool if engine is not None else None  # None: not opened yet
        connections = GaugeMetricFamily(
            "db_client_connection_count",
            "Database connections open now, by state (used: by a unit of work).",
            labels=["db_client_connection_state"],
        )
        connections.add_metric(["used"], pool.checkedout() if pool else 0)
        connections.add_metric(["idle"], pool.checkedin() if pool else 0)
        yield connections
        yield GaugeMetricFamily(
            "db_client_connection_max",
            "Database connections the pool may hold (DATABASE_POOL_SIZE).",
            value=services.settings.database_pool_size,
        )


class Observers(NamedTuple):
    request: RequestObserver
    pool_wait: Callable[[float], None]


def install(app: FastAPI, token: str) -> Observers:
    """Add `GET /metrics`, answering only `token` as a bearer token; return what records each
    request and each pool wait."""
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)  # CPU, memory, open files: read from /proc per scrape
    registry.register(AppStateCollector(app))
    duration = Histogram(
        "http_server_request_duration_seconds",
        "Duration of HTTP server requests.",
        ["http_request_method", "http_route", "http_response_status_code"],
        buckets=LATENCY_BUCKETS,
        registry=registry,
    )
    active = Gauge(
        "http_server_active_requests",
        "Number of active HTTP server requests.",
        ["http_request_method"],
        registry=registry,
    )
    unauthorized = Counter(
        "quoteapi_http_unauthorized_requests",
        "Requests answered 401, by the problem's `code` (why the caller was refused).",
        ["code"],
        registry=registry,
    )
    webhooks = Counter(
        "quoteapi_webhook_deliveries",
        "Clerk webhook deliveries, by outcome: deleted, revoked, duplicate, ignored, refused.",
        ["outcome"],
        registry=registry,
    )
    pool_wait = Histogram(
        "db_client_connection_wait_time_seconds",
        "Time a unit of work waited for its turn at a pooled database connection.",
        buckets=LATENCY_BUCKETS,
        registry=registry,
    )

    def observe(scope: Scope) -> Callable[[str | None, int, float], None]:
        method = scope["method"] if scope["method"] in _METHODS else "_OTHER"
        in_flight = active.labels(method)
        in_flight.inc()

        def finished(route: str | None, status: int, seconds: float) -> None:
            in_flight.dec()
            duration.labels(method, route or UNMATCHED_ROUTE, str(status)).observe(seconds)
            state = scope["state"]  # what the app noted there: see these names' writers
            if status == 401 and "problem_code" in state:
                unauthorized.labels(state["problem_code"]).inc()
            if "webhook_outcome" in state:
                webhooks.labels(state["webhook_outcome"]).inc()

        return finished

    expected = f"Bearer {token}".encode()

    @app.get(METRICS_PATH, include_in_schema=False)
    async def metrics(request: Request) -> Response:
        given = request.headers.get("authorization", "").encode()
        if not hmac.compare_digest(given, expected):
            raise ApiError(
                METRICS_TOKEN_INVALID,
                "Send QUOTEAPI_METRICS_TOKEN as a bearer token (Prometheus: `authorization`).",
                headers={"WWW-Authenticate": 'Bearer realm="metrics"'},
            )
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return Observers(observe, pool_wait.observe)
