"""quoteapi.edge's protocol subclasses uvicorn's httptools protocol. A uvicorn (or httptools)
upgrade that changes what it relies on fails here, in process and in a second, before the
process-level tests of tests/reliability/ say why: every method it overrides is still one that
uvicorn (or, for the parser's callbacks, httptools) calls, with the parameters uvicorn passes;
every private method and attribute it uses (UVICORN_PARTS) is still there on a live connection
and its request cycle; the refusals it writes with uvicorn's status lines are whole HTTP
responses; httptools still stops at the head of a request that asks to upgrade; and on
uvicorn's own server it still answers a pipelined request and then refuses a head over the cap."""

from __future__ import annotations

import asyncio
import inspect
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httptools
import pytest
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from quoteapi import problems
from quoteapi.edge import EdgeProtocol, protocol_for, reading
from quoteapi.edge.limits import MAX_HEAD_BYTES
from quoteapi.edge.protocol import TOO_MANY_CONNECTIONS, refusal
from tests.support.app import NO_DATABASE_URL, make_settings
from tests.support.polling import until
from tests.support.processes import free_port
from tests.support.raw_http import exchange, split_responses

# What quoteapi.edge.protocol relies on of uvicorn's HttpToolsProtocol beyond its public
# interface: the methods it overrides or calls, and the attributes it reads, of the protocol
# and of its request cycle. Keep it in step with the protocol's code.
UVICORN_PARTS = {
    "protocol methods": (
        "_start_asgi_task",
        "_unset_keepalive_if_required",
        "timeout_keep_alive_handler",
        "on_response_complete",
        "shutdown",
    ),
    "protocol attributes": (
        "cycle",
        "pipeline",
        "connections",
        "tasks",
        "flow",
        "loop",
        "parser",
        "headers",
        "timeout_keep_alive",
        "timeout_keep_alive_task",
        "transport",
    ),
    "cycle attributes": (
        "scope",
        "transport",
        "keep_alive",
        "response_started",
        "response_complete",
        "disconnected",
        "message_event",
    ),
}

# httptools calls these on the protocol when it defines them; uvicorn's own class does not.
PARSER_CALLBACKS = {"on_chunk_header", "on_chunk_complete"}
# The protocol's own public members, which override nothing.
OWN = {"abort", "close", "close_after_answer", "closing", "drop"}
# The edge's layers over uvicorn's class (reading, then the connection).
EDGE_CLASSES = EdgeProtocol.__mro__[: EdgeProtocol.__mro__.index(HttpToolsProtocol)]
# What the edge answers by itself, before any app sees the request.
EDGE_REFUSALS = (
    problems.BAD_REQUEST,
    reading.REQUEST_TIMEOUT,
    reading.URI_TOO_LONG,
    reading.HEADERS_TOO_LARGE,
    reading.TRANSFER_CODING_NOT_IMPLEMENTED,
    TOO_MANY_CONNECTIONS,
)
SETTINGS = make_settings(
    NO_DATABASE_URL,
    quoteapi_request_read_timeout_seconds=5,
    quoteapi_write_timeout_seconds=5,
    quoteapi_max_connections=10,
)


def test_every_public_method_the_edge_protocol_defines_overrides_one_uvicorn_has() -> None:
    defined = {
        name
        for cls in EDGE_CLASSES
        for name, value in vars(cls).items()
        if (callable(value) or isinstance(value, property)) and not name.startswith("_")
    }
    assert defined - PARSER_CALLBACKS - OWN - set(dir(HttpToolsProtocol)) == set()


OVERRIDDEN = sorted(
    name
    for cls in EDGE_CLASSES
    for name, value in vars(cls).items()
    if callable(value) and name != "__init__" and callable(getattr(HttpToolsProtocol, name, None))
)


@pytest.mark.parametrize("name", OVERRIDDEN)
def test_each_method_the_edge_overrides_takes_the_parameters_uvicorn_passes(name: str) -> None:
    def parameters(cls: type) -> list[str]:
        return list(inspect.signature(getattr(cls, name)).parameters)

    assert parameters(EdgeProtocol) == parameters(HttpToolsProtocol)


@pytest.mark.parametrize("name", UVICORN_PARTS["protocol methods"])
def test_uvicorn_still_has_each_protocol_method_the_edge_relies_on(name: str) -> None:
    assert callable(getattr(HttpToolsProtocol, name, None)), name


async def _ok(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]}
    )
    await send({"type": "http.response.body", "body": b"ok"})


@asynccontextmanager
async def uvicorn_with_the_edge(app: Any) -> AsyncIterator[uvicorn.Server]:
    """uvicorn's own server, in this event loop, building each connection with the edge's
    protocol, serving the ASGI `app` on a free loopback port (`server.config.port`)."""
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=free_port(),
        http=protocol_for(SETTINGS),  # type: ignore[arg-type]
        lifespan="off",
        log_config=None,
    )
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    try:
        await until(lambda: server.started, within=10, what="uvicorn started")
        yield server
    finally:
        server.should_exit = True
        await serving


@pytest.fixture(scope="module")
async def live_connection() -> dict[str, Any]:
    """The edge protocol of a real connection and its request cycle, caught while uvicorn has
    the app answer a request on it."""
    caught: dict[str, Any] = {}

    async def catching(scope: dict[str, Any], receive: Any, send: Any) -> None:
        (protocol,) = server.server_state.connections
        caught.update({"protocol attributes": protocol, "cycle attributes": protocol.cycle})
        await _ok(scope, receive, send)

    async with uvicorn_with_the_edge(catching) as server:
        request = b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
        await exchange(server.config.port, request)
    assert isinstance(caught["protocol attributes"], EdgeProtocol)
    return caught


@pytest.mark.parametrize(
    ("part", "name"),
    [
        (part, name)
        for part in ("protocol attributes", "cycle attributes")
        for name in UVICORN_PARTS[part]
    ],
)
def test_uvicorn_still_sets_each_attribute_the_edge_reads(
    live_connection: dict[str, Any], part: str, name: str
) -> None:
    assert hasattr(live_connection[part], name), f"{part}: {name}"


@pytest.mark.parametrize("problem", EDGE_REFUSALS, ids=lambda problem: problem.code)
def test_each_refusal_the_edge_writes_is_a_whole_response_with_its_status(
    problem: problems.Problem,
) -> None:
    class Response:
        def __init__(self) -> None:
            self.headers: dict[bytes, bytes] = {}
            self.body, self.complete = b"", False

        def on_header(self, name: bytes, value: bytes) -> None:
            self.headers[name.lower()] = value

        def on_body(self, body: bytes) -> None:
            self.body += body

        def on_message_complete(self) -> None:
            self.complete = True

    response = Response()
    parser = httptools.HttpResponseParser(response)
    parser.feed_data(refusal(problem, "what to do", "req-1", {"retry-after": "1"}))
    assert response.complete
    assert parser.get_status_code() == problem.status
    assert response.headers[b"connection"] == b"close"
    assert json.loads(response.body)["code"] == problem.code


def test_httptools_still_stops_at_the_head_of_a_request_that_asks_to_upgrade() -> None:
    seen: list[str] = []

    class Callbacks:
        def on_body(self, body: bytes) -> None:
            seen.append("body")

        def on_message_complete(self) -> None:
            seen.append("complete")

    head = b"PUT / HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n"
    request = head + b"Content-Length: 5\r\n\r\nhello"
    with pytest.raises(httptools.HttpParserUpgrade) as upgrade:
        httptools.HttpRequestParser(Callbacks()).feed_data(request)
    # The edge reads the body on from that offset, with a parser of its own.
    assert (seen, request[upgrade.value.args[0] :]) == (["complete"], b"hello")


async def test_on_uvicorns_server_it_answers_a_pipelined_request_then_refuses_a_big_head() -> None:
    big_head = b"GET / HTTP/1.1\r\nHost: t\r\nX-Pad: " + b"a" * MAX_HEAD_BYTES + b"\r\n\r\n"
    async with uvicorn_with_the_edge(_ok) as server:
        answer = await exchange(server.config.port, b"GET / HTTP/1.1\r\nHost: t\r\n\r\n" + big_head)
    first, refused = split_responses(answer)
    assert (first.status, first.body) == (200, b"ok")
    assert refused.status == 431
    assert refused.headers["connection"] == "close"
