"""Traces by OpenTelemetry, sent over OTLP/HTTP when OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT says
where (settings.TracingSettings). Off, nothing of the SDK, exporter or instrumentations is
imported (FastAPI imports the OpenTelemetry API itself) and FastAPI's own telemetry is off.

On: a server span per request and spans for its dependencies, handler and serialization
(FastAPI's own telemetry; a W3C `traceparent` continues the caller's trace), a client span per
database statement (SQLAlchemy's, on the app's engine only) and one per JWKS fetch (httpx's, on
the client made for them). What they record: docs/observability.md. No attribute holds a
header, a body or a statement's parameter values (the engine hides them; the instrumentations
capture no headers unless OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_* asks)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi.telemetry import TelemetryConfig

if TYPE_CHECKING:
    import httpx
    from opentelemetry.sdk.trace import TracerProvider
    from sqlalchemy.ext.asyncio import AsyncEngine

    from quoteapi.settings import Settings


class Tracing:
    """The app's tracer provider and what it instruments. Each app has its own: nothing is set
    globally, so each worker process (or each app of a test) exports its own spans."""

    def __init__(self, provider: TracerProvider, endpoint: str) -> None:
        self.provider = provider
        self.endpoint = endpoint

    def start(self) -> None:
        """Begin exporting: spans are sent in batches from a thread of the SDK's."""
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        self.provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(self.endpoint)))

    def instrument_engine(self, engine: AsyncEngine) -> None:
        """A span per statement on `engine`: its SQL text with placeholders, never the values.
        SQLAlchemy's instrumentor would also patch every engine of the process and open a
        span per `Engine.connect`; its engine tracer alone does the per-statement part."""
        from opentelemetry import metrics, trace
        from opentelemetry.instrumentation.sqlalchemy.engine import EngineTracer

        name = "opentelemetry.instrumentation.sqlalchemy"
        tracer = trace.get_tracer(name, tracer_provider=self.provider)
        # Connection counts as a metric: not exported (quoteapi.metrics has the pool's).
        usage = metrics.NoOpMeter(name).create_up_down_counter("db.client.connections.usage")
        EngineTracer(tracer, engine.sync_engine, usage)  # type: ignore[no-untyped-call]

    def traced_client(self, timeout: float) -> httpx.AsyncClient:
        """An HTTP client with a span per request it sends (for the JWKS fetches)."""
        import httpx
        from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

        client = httpx.AsyncClient(timeout=timeout)
        HTTPXClientInstrumentor.instrument_client(client, tracer_provider=self.provider)
        return client

    def shutdown(self) -> None:
        """Send the spans still buffered, then stop exporting (bounded by the exporter's own
        timeout, OTEL_EXPORTER_OTLP_TIMEOUT, 10 s by default)."""
        self.provider.shutdown()


# FastAPI's own telemetry off: no spans, metrics (quoteapi.metrics has ours) or logs, and no
# look-up of OpenTelemetry's global providers on each request.
FASTAPI_TELEMETRY_OFF: TelemetryConfig = {
    "tracing": False,
    "metrics": False,
    "logs": False,
    "auto_configure": False,
}


def tracing_from(settings: Settings) -> Tracing | None:
    """The app's tracing when the settings name an OTLP endpoint; None (and nothing of the
    SDK imported) when they do not. The lifespan starts the export and shuts it down."""
    endpoint = settings.otlp_traces_endpoint
    if endpoint is None:
        return None
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider

    # The sampler comes from OTEL_TRACES_SAMPLER (default: follow the caller's sampled flag).
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: settings.otel_service_name}))
    return Tracing(provider, endpoint)


def fastapi_telemetry(tracing: Tracing | None) -> TelemetryConfig:
    """`FastAPI(telemetry=...)`: spans to `tracing`'s provider, or nothing at all."""
    if tracing is None:
        return FASTAPI_TELEMETRY_OFF
    return {**FASTAPI_TELEMETRY_OFF, "tracing": True, "tracer_provider": tracing.provider}
