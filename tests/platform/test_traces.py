"""Traces (OTEL_EXPORTER_OTLP_*), sent to a real OTLP/HTTP receiver: a request continues the
caller's W3C trace, with a span per database statement and per JWKS fetch under it; no span
carries a token, a quote or a secret; without the variables nothing of OpenTelemetry is loaded
and nothing is sent."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from tests.support.app import make_settings, running_app
from tests.support.jwks import JwksServer
from tests.support.otlp import OtlpReceiver, ReceivedSpan
from tests.support.processes import running_server, serve_env
from tests.support.tokens import TEST_KEY, SigningKey, mint
from tests.support.webhooks import TEST_SECRET, URL, signed, user_deleted

CALLER_TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{CALLER_TRACE_ID}-{CALLER_SPAN_ID}-01"
TRACESTATE = "spa=page-42,vendor=abc"
_TRACING_MODULES = ("opentelemetry.sdk", "opentelemetry.exporter", "opentelemetry.instrumentation")


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver().running() as running:
        yield running


def _server_span(receiver: OtlpReceiver, name: str) -> ReceivedSpan:
    (span,) = [s for s in receiver.spans if s.kind == Span.SPAN_KIND_SERVER and s.name == name]
    return span


def _under(receiver: OtlpReceiver, parent: ReceivedSpan, instrumentation: str) -> list[str]:
    """The names of the spans below `parent` made by `instrumentation` (sqlalchemy, httpx)."""
    by_id = {span.span_id: span for span in receiver.spans}

    def below(span: ReceivedSpan) -> bool:
        while span.parent_span_id in by_id:
            span = by_id[span.parent_span_id]
            if span == parent:
                return True
        return False

    return [s.name for s in receiver.spans if s.scope.endswith(instrumentation) and below(s)]


def _handler_span(receiver: OtlpReceiver, handler: str) -> ReceivedSpan:
    """FastAPI's span for the work of `handler` (its endpoint function)."""
    (span,) = [
        s
        for s in receiver.spans
        if s.name == "fastapi.endpoint" and s.attributes["code.function.name"].endswith(handler)
    ]
    return span


def _leaks(receiver: OtlpReceiver, *secrets: str) -> list[tuple[str, str]]:
    return [
        (span.name, secret)
        for span in receiver.spans
        for value in span.every_value()
        for secret in secrets
        if secret in value
    ]


async def test_a_request_continues_the_callers_trace_with_its_statement_and_jwks_fetch_spans(
    database_url: str, jwks_server: JwksServer, receiver: OtlpReceiver
) -> None:
    settings = make_settings(
        database_url,
        clerk_jwks_url=jwks_server.url,
        otel_exporter_otlp_endpoint=receiver.url,
        otel_service_name="quoteapi-under-test",
    )
    # Signed by a key published only after start-up: the request itself fetches the JWKS.
    rotated = SigningKey.generate("ins_rotated_for_traces")
    token = mint(rotated, f"user_traces_{uuid.uuid4().hex[:8]}")
    quote = f"A quote no span may carry {uuid.uuid4().hex}"
    async with running_app(settings) as api:
        jwks_server.publish(TEST_KEY, rotated)
        headers = {
            "Authorization": f"Bearer {token}",
            "traceparent": TRACEPARENT,
            "tracestate": TRACESTATE,
        }
        response = await api.http.put("/me/message", json={"message": quote}, headers=headers)
        assert response.status_code == 201
    # The lifespan's end has sent every span still buffered.

    request = _server_span(receiver, "PUT /me/message")
    assert (request.trace_id, request.parent_span_id) == (CALLER_TRACE_ID, CALLER_SPAN_ID)
    assert request.trace_state == TRACESTATE
    assert request.attributes["http.route"] == "/me/message"
    assert request.resource["service.name"] == "quoteapi-under-test"
    statements = _under(receiver, request, "sqlalchemy")
    assert "INSERT" in statements, statements
    assert _under(receiver, request, "httpx") == ["GET"]  # the JWKS fetch
    assert _leaks(receiver, token, quote, token.split(".")[2]) == []


async def test_a_webhook_delivery_is_traced_with_its_statements_and_no_secret(
    database_url: str, receiver: OtlpReceiver
) -> None:
    settings = make_settings(
        database_url,
        clerk_webhook_signing_secret=TEST_SECRET,
        otel_exporter_otlp_traces_endpoint=f"{receiver.url}/v1/traces",
    )
    body, headers = signed(user_deleted(f"user_traces_{uuid.uuid4().hex[:8]}"))
    async with running_app(settings) as api:
        response = await api.http.post(URL, content=body, headers=headers)
        assert response.json() == {"outcome": "deleted"}

    delivery = _server_span(receiver, f"POST {URL}")
    work = _handler_span(receiver, "clerk_webhook")
    assert work.parent_span_id == delivery.span_id
    assert _under(receiver, work, "sqlalchemy"), "the erasure's statements"
    assert _leaks(receiver, TEST_SECRET, headers["svix-signature"].removeprefix("v1,")) == []


@pytest.mark.parametrize(
    "otel",
    [{}, {"otel_sdk_disabled": "true"}],
    ids=["no-otel-variable", "sdk-disabled"],
)
def test_serve_without_tracing_loads_no_opentelemetry_and_sends_nothing(
    database_url: str, tmp_path: Path, receiver: OtlpReceiver, otel: dict[str, str]
) -> None:
    endpoint = {"otel_exporter_otlp_endpoint": receiver.url} if otel else {}
    # Python writes each module it imports to stderr (in the server's log).
    env = serve_env(database_url, **endpoint, **otel, pythonprofileimporttime=1)
    with running_server(tmp_path, env) as server:
        response = httpx.get(
            f"{server.url}/me/message",
            headers={"Authorization": f"Bearer {mint(TEST_KEY, 'user_untraced')}"},
            timeout=10,
        )
        assert response.status_code == 404
    # FastAPI itself imports the OpenTelemetry API; the SDK, exporter and instrumentations
    # are what tracing adds.
    imported = [line.rsplit("|", 1)[-1].strip() for line in server.log.splitlines()]
    assert "quoteapi.app" in imported
    assert [name for name in imported if name.startswith(_TRACING_MODULES)] == []
    assert receiver.requests == 0


@pytest.mark.slow
def test_serve_with_workers_exports_every_workers_spans(
    database_url: str, tmp_path: Path, receiver: OtlpReceiver
) -> None:
    env = serve_env(database_url, otel_exporter_otlp_endpoint=receiver.url)
    with running_server(tmp_path, env, args=("--workers", "2"), ready_within=60) as server:
        for _ in range(4):  # a new connection each time: both workers get a chance
            httpx.get(f"{server.url}/me/message", headers={"traceparent": TRACEPARENT}, timeout=10)
    # Stopped: each worker's lifespan sent what it had buffered.
    requests = [span for span in receiver.spans if span.name == "GET /me/message"]
    assert len(requests) == 4
    assert {span.trace_id for span in requests} == {CALLER_TRACE_ID}
