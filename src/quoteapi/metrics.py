"""Prometheus metrics at `GET /metrics`, only when QUOTEAPI_METRICS_ENABLED is on.

Off, nothing here is imported: no route, no per-request work. On, a request (timed by the
request-id middleware, which calls the observer `install` returns) costs one counter increment
and one histogram observation (by method, route template and status). Everything else is read
at scrape time from the objects that already keep it, by a collector: JWKS fetches
(`JwksKeys.fetches_ok/_failed`), token-cache hits and misses (`TokenCache` counts them), and
the SQLAlchemy pool's checked-out connections and size.

Each app has its own registry, and each process its own counts: with `serve --workers N` a
scrape reaches whichever worker accepts it. Run one worker per container when metrics are on,
and scale with replicas (each scraped on its own; `sum()` them in PromQL). prometheus-client's
multiprocess mode is not used: it cannot carry the scrape-time collector's values.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable
from typing import Any

from fastapi import FastAPI, Request, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

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
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class AppStateCollector(Collector):
    """Reads, at scrape time, what the app's verifier and engine already keep."""

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
        yield GaugeMetricFamily(
            "quoteapi_db_pool_checked_out",
            "Database connections in use by requests now.",
            value=pool.checkedout() if pool else 0,
        )
        yield GaugeMetricFamily(
            "quoteapi_db_pool_size",
            "Database connections the pool may hold (DATABASE_POOL_SIZE).",
            value=services.settings.database_pool_size,
        )


def install(app: FastAPI, token: str) -> RequestObserver:
    """Add `GET /metrics` to `app`, answering only `token` as a bearer token, and return the
    observer that records each request (call only when enabled)."""
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)  # CPU, memory, open files: read from /proc per scrape
    registry.register(AppStateCollector(app))
    requests = Counter(
        "quoteapi_http_requests",
        "HTTP requests answered, by method, route template and status.",
        ["method", "route", "status"],
        registry=registry,
    )
    duration = Histogram(
        "quoteapi_http_request_duration_seconds",
        "Time to answer an HTTP request, by method and route template.",
        ["method", "route"],
        buckets=LATENCY_BUCKETS,
        registry=registry,
    )

    def record(method: str, route: str | None, status: int, seconds: float) -> None:
        method = method if method in _METHODS else "other"
        route = route or UNMATCHED_ROUTE
        requests.labels(method, route, str(status)).inc()
        duration.labels(method, route).observe(seconds)

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

    return record
