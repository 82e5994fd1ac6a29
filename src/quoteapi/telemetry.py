"""Traces by OpenTelemetry over OTLP/HTTP, when OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT says where.
Off, nothing of the SDK is imported and FastAPI's own telemetry is off. What the spans record
(never a header, a body or a parameter value): docs/observability.md."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi.telemetry import TelemetryConfig

if TYPE_CHECKING:
    import httpx
    from opentelemetry.sdk.trace import TracerProvider
    from sqlalchemy.ext.asyncio import AsyncEngine

    from quoteapi.settings import Settings


class Tracing:
    """The app's tracer provider: nothing is set globally, so each app exports its own spans."""

    def __init__(self, provider: TracerProvider, endpoint: str) -> None:
        self.provider = provider
        self.endpoint = endpoint

    def start(self) -> None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        self.provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(self.endpoint)))

    def instrument_engine(self, engine: AsyncEngine) -> None:
        """A span per statement on `engine`. Not SQLAlchemy's instrumentor: it would patch every
        engine of the process and open a span per `Engine.connect`."""
        from opentelemetry import metrics, trace
        from opentelemetry.instrumentation.sqlalchemy.engine import EngineTracer

        name = "opentelemetry.instrumentation.sqlalchemy"
        tracer = trace.get_tracer(name, tracer_provider=self.provider)
        # Connection counts as a metric: not exported (quoteapi.metrics has the pool's).
        usage = metrics.NoOpMeter(name).create_up_down_counter("db.client.connections.usage")
        EngineTracer(tracer, engine.sync_engine, usage)  # type: ignore[no-untyped-call]

    def traced_client(self, timeout: float) -> httpx.AsyncClient:
        """An HTTP client with a span per request (for the JWKS fetches)."""
        import httpx
        from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

        client = httpx.AsyncClient(timeout=timeout)
        HTTPXClientInstrumentor.instrument_client(client, tracer_provider=self.provider)
        return client

    def shutdown(self) -> None:
        """Send the spans still buffered (bounded by OTEL_EXPORTER_OTLP_TIMEOUT, 10 s default)."""
        self.provider.shutdown()


def tracing_from(settings: Settings) -> Tracing | None:
    """The app's tracing when the settings name an OTLP endpoint, else None. The SDK would read
    the endpoint itself, but from the environment only, not from `.env`."""
    base = settings.otel_exporter_otlp_endpoint  # the signal's path goes after it
    endpoint = settings.otel_exporter_otlp_traces_endpoint or (
        base and f"{base.rstrip('/')}/v1/traces"
    )
    if settings.otel_sdk_disabled or not endpoint:
        return None
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider

    # The sampler comes from OTEL_TRACES_SAMPLER (default: follow the caller's sampled flag).
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: settings.otel_service_name}))
    return Tracing(provider, endpoint)


def fastapi_telemetry(tracing: Tracing | None) -> TelemetryConfig:
    # Otherwise off: no metrics (quoteapi.metrics has ours) or logs, and no look-up of
    # OpenTelemetry's global providers on each request.
    off: TelemetryConfig = {
        "tracing": False,
        "metrics": False,
        "logs": False,
        "auto_configure": False,
    }
    return off if tracing is None else {**off, "tracing": True, "tracer_provider": tracing.provider}
