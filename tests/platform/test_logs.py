"""Logs: one JSON object per line for `serve` (worker processes included), `key=value` lines
for `dev`; every line an event with its data as fields, every line of a request with its
request id (and the current span's ids when tracing is on); never a token."""

from __future__ import annotations

import contextvars
import io
import json
import logging
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import opentelemetry.sdk.trace  # noqa: F401 - loaded as with tracing on: logs.py then reads spans
import pytest
from opentelemetry import trace

from quoteapi.logs import EventLog, JsonFormatter, ReadableFormatter, current_request_id
from tests.support.app import make_settings, running_app
from tests.support.otlp import OtlpReceiver
from tests.support.polling import wait_until
from tests.support.processes import ServerProcess, free_port, running_server, serve_env
from tests.support.tokens import TEST_KEY, MintToken, mint

_TRACE_ID, _SPAN_ID = 0x0AF7651916CD43DD8448EB211C80319C, 0x00F067AA0BA902B7


@pytest.fixture
def lines() -> Iterator[io.StringIO]:
    """What `EventLog("test.events")` writes, one JSON object per line."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("test.events")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    yield stream
    logger.removeHandler(handler)


def _written(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def _record(**fields: object) -> logging.LogRecord:
    record = logging.LogRecord("quoteapi.access", logging.INFO, __file__, 1, "request", (), None)
    record.fields = {"event": "request", **fields}
    return record


def test_an_event_is_a_json_line_with_its_name_and_data_as_fields(lines: io.StringIO) -> None:
    EventLog("test.events").warning("jwks_fetch_failed", url="https://x.test/jwks", error="timeout")
    (entry,) = _written(lines)
    assert "\n" not in lines.getvalue().rstrip("\n")
    assert entry["ts"].endswith("+00:00")
    assert {k: v for k, v in entry.items() if k != "ts"} == {
        "level": "warning",
        "logger": "test.events",
        "message": "jwks_fetch_failed",
        "event": "jwks_fetch_failed",
        "url": "https://x.test/jwks",
        "error": "timeout",
    }


def test_an_event_for_an_operator_says_what_to_fix_in_its_message(lines: io.StringIO) -> None:
    EventLog("test.events").error("rls_bypassed", "connect as a least-privilege role", role="o")
    (entry,) = _written(lines)
    assert (entry["event"], entry["message"], entry["role"]) == (
        "rls_bypassed",
        "connect as a least-privilege role",
        "o",
    )


def test_an_error_event_carries_its_exception(lines: io.StringIO) -> None:
    try:
        raise RuntimeError("boom")
    except RuntimeError as exc:
        EventLog("test.events").error("unhandled_error", exc=exc, error="RuntimeError")
    (entry,) = _written(lines)
    assert entry["error"] == "RuntimeError"
    assert "RuntimeError: boom" in entry["exception"]


def test_a_line_during_a_request_carries_its_request_id_and_none_outside() -> None:
    def during_request() -> str:
        current_request_id.set("req-1")
        return JsonFormatter().format(_record(status=200))

    assert json.loads(contextvars.copy_context().run(during_request))["request_id"] == "req-1"
    outside = json.loads(JsonFormatter().format(_record(status=200)))
    assert not {"request_id", "trace_id", "span_id"} & outside.keys()


def test_a_line_in_a_span_carries_its_trace_and_span_ids_as_lowercase_hex() -> None:
    context = trace.SpanContext(
        _TRACE_ID, _SPAN_ID, is_remote=False, trace_flags=trace.TraceFlags(1)
    )
    with trace.use_span(trace.NonRecordingSpan(context)):
        entry = json.loads(JsonFormatter().format(_record(status=200)))
        readable = ReadableFormatter().format(_record(status=200))
    assert entry["trace_id"] == "0af7651916cd43dd8448eb211c80319c"
    assert entry["span_id"] == "00f067aa0ba902b7"
    assert readable.endswith(" trace_id=0af7651916cd43dd8448eb211c80319c span_id=00f067aa0ba902b7")


def test_readable_formatter_writes_the_event_and_its_fields_as_key_value_pairs() -> None:
    line = ReadableFormatter().format(_record(method="GET", status=404))
    assert line == "INFO    quoteapi.access: event=request method=GET status=404"


def test_readable_formatter_shows_an_operators_message_before_the_fields() -> None:
    record = _record(role="owner")
    record.msg, record.fields["event"] = "connect as another role", "rls_bypassed"  # type: ignore[attr-defined]
    line = ReadableFormatter().format(record)
    assert line == "INFO    quoteapi.access: connect as another role event=rls_bypassed role=owner"


async def _failing_route() -> None:
    raise RuntimeError("a bug")


async def test_the_line_of_an_unhandled_error_carries_its_request_id(
    database_url: str, lines: io.StringIO
) -> None:
    # The 500 handler runs outside the request middleware (Starlette's ServerErrorMiddleware).
    logging.getLogger("quoteapi.errors").addHandler(handler := logging.StreamHandler(lines))
    handler.setFormatter(JsonFormatter())
    try:
        async with running_app(make_settings(database_url)) as api:
            api.app.add_api_route("/test/bug", _failing_route, methods=["GET"])
            async with api.client(raise_app_exceptions=False) as http:
                response = await http.get("/test/bug", headers={"X-Request-ID": "bug-1"})
    finally:
        logging.getLogger("quoteapi.errors").removeHandler(handler)
    assert response.status_code == 500
    (entry,) = [e for e in _written(lines) if e.get("event") == "unhandled_error"]
    assert entry["request_id"] == "bug-1"


@pytest.fixture
def server_with_tracing(
    database_url: str, tmp_path: Path
) -> Iterator[tuple[ServerProcess, OtlpReceiver]]:
    with OtlpReceiver().running() as receiver:
        env = serve_env(database_url, otel_exporter_otlp_endpoint=receiver.url)
        with running_server(tmp_path, env) as server:
            yield server, receiver


def _lines_of_one_request(
    server: ServerProcess, **request: Any
) -> tuple[str, list[dict[str, Any]]]:
    """Send one request to `server`; its request id and every JSON line written from when it
    was sent until its access line."""
    # The start-up role check runs in the background: its line is no request's.
    verdicts = ("rls_role_ok", "rls_bypassed", "rls_role_check_skipped")
    wait_until(lambda: any(map(server.logged_event, verdicts)), within=30, what="start-up")
    request_id = f"logs-{uuid.uuid4().hex[:12]}"
    before = len(server.log_records())
    headers = {"X-Request-ID": request_id, **request.pop("headers", {})}
    httpx.get(f"{server.url}/me/message", headers=headers, timeout=30, **request)

    def access_logged() -> bool:
        return any(
            r.get("request_id") == request_id
            for r in server.log_records()[before:]
            if r["logger"] == "quoteapi.access"
        )

    wait_until(access_logged, within=10, what="the access line")
    written = server.log_records()[before:]
    end = next(
        i
        for i, r in enumerate(written)
        if r["logger"] == "quoteapi.access" and r.get("request_id") == request_id
    )
    return request_id, written[: end + 1]


def test_every_line_of_a_refused_token_carries_the_request_id(server: ServerProcess) -> None:
    request_id, written = _lines_of_one_request(
        server, headers={"Authorization": "Bearer not.a.jwt"}
    )
    assert [(r["event"], r.get("code", r.get("status"))) for r in written] == [
        ("token_rejected", "token-malformed"),
        ("request", 401),
    ]
    assert {r.get("request_id") for r in written} == {request_id}
    assert "not.a.jwt" not in server.log


def test_every_line_of_a_request_the_database_fails_carries_the_request_id(
    tmp_path: Path,
) -> None:
    nowhere = f"postgresql://quoteapi:secret@127.0.0.1:{free_port()}/quoteapi"
    env = serve_env(nowhere, database_connect_timeout=1)
    with running_server(tmp_path, env) as server:
        token = mint(TEST_KEY, "user_logs_db")
        request_id, written = _lines_of_one_request(
            server, headers={"Authorization": f"Bearer {token}"}
        )
        start_up = server.log_records()
    events = [r["event"] for r in written]
    assert events[-2:] == ["database_request_failed", "request"], events
    assert {r.get("request_id") for r in written} == {request_id}
    assert all(
        "request_id" not in r for r in start_up if r.get("event") == "rls_role_check_skipped"
    )
    assert all("event=" not in r["message"] for r in server.log_records())


@pytest.mark.slow
def test_serve_with_two_workers_logs_json_access_lines_without_the_token(
    database_url: str, tmp_path: Path, mint_token: MintToken
) -> None:
    # uvicorn's worker processes are fresh interpreters: each must set up JSON logging itself.
    env = serve_env(database_url)
    token = mint_token("user_logs")
    request_ids = [f"logs-{uuid.uuid4().hex[:12]}" for _ in range(4)]
    with running_server(tmp_path, env, args=("--workers", "2"), ready_within=60) as server:
        for request_id in request_ids:
            headers = {"Authorization": f"Bearer {token}", "X-Request-ID": request_id}
            # A new connection each time, so that both workers get a chance to answer.
            httpx.get(f"{server.url}/me/message", headers=headers, timeout=10)
    text = server.log
    lines = [line for line in text.splitlines() if line.strip()]
    entries = [json.loads(line) for line in lines]  # every line is JSON, workers' too
    access = {e.get("request_id"): e for e in entries if e["logger"] == "quoteapi.access"}
    for request_id in request_ids:
        assert access[request_id]["route"] == "/me/message"
        assert access[request_id]["status"] == 404
    assert token not in text
    assert all("event=" not in entry["message"] for entry in entries)


def test_with_tracing_on_every_line_of_a_request_carries_its_trace_and_span_ids(
    server_with_tracing: tuple[ServerProcess, OtlpReceiver],
) -> None:
    server, receiver = server_with_tracing
    caller_trace_id = uuid.uuid4().hex
    traceparent = f"00-{caller_trace_id}-00f067aa0ba902b7-01"
    headers = {"Authorization": "Bearer not.a.jwt", "traceparent": traceparent}
    _, written = _lines_of_one_request(server, headers=headers)
    assert [r["event"] for r in written] == ["token_rejected", "request"]
    assert {r["trace_id"] for r in written} == {caller_trace_id}
    server.stop()  # sends the spans still buffered
    exported = {s.span_id for s in receiver.spans if s.trace_id == caller_trace_id}
    assert {r["span_id"] for r in written} <= exported
