"""quoteapi.edge's protocol subclasses uvicorn's httptools protocol. A uvicorn (or httptools)
upgrade that changes what it relies on fails here, in process and in a second, before the
process-level tests of tests/reliability/ say why: every method it overrides is still one that
uvicorn (or, for the parser's callbacks, httptools) calls; every private method and attribute it
uses (UVICORN_PARTS) is still there; httptools still stops at the head of a request that asks to
upgrade; and on uvicorn's own server it still answers a pipelined request and then refuses a
head over the cap, which uses uvicorn's transport, loop, request cycle and queue."""

from __future__ import annotations

import asyncio
import inspect
import re
from typing import Any

import httptools
import pytest
import uvicorn
from uvicorn.protocols.http import httptools_impl
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from quoteapi.edge import EdgeLimits, EdgeProtocol, protocol_for
from quoteapi.edge.limits import MAX_HEAD_BYTES
from tests.support.polling import until
from tests.support.processes import free_port
from tests.support.raw_http import exchange, split_responses

# What quoteapi.edge (reading.py, protocol.py) relies on of uvicorn's HttpToolsProtocol beyond
# its public interface: the methods it overrides or calls, and the attributes it reads, of the
# protocol and of its request cycle. Keep it in step with the edge's code.
UVICORN_PARTS = {
    "protocol methods": (
        "_start_asgi_task",
        "_unset_keepalive_if_required",
        "timeout_keep_alive_handler",
        "on_response_complete",
        "shutdown",
    ),
    "protocol attributes": (
        "loop",
        "transport",
        "cycle",
        "pipeline",
        "connections",
        "tasks",
        "flow",
        "parser",
        "headers",
        "timeout_keep_alive",
        "timeout_keep_alive_task",
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


def test_every_public_method_the_edge_protocol_defines_overrides_one_uvicorn_has() -> None:
    defined = {
        name
        for cls in EDGE_CLASSES
        for name, value in vars(cls).items()
        if (callable(value) or isinstance(value, property)) and not name.startswith("_")
    }
    assert defined - PARSER_CALLBACKS - OWN - set(dir(HttpToolsProtocol)) == set()


@pytest.mark.parametrize("name", UVICORN_PARTS["protocol methods"])
def test_uvicorn_still_has_each_protocol_method_the_edge_relies_on(name: str) -> None:
    assert callable(getattr(HttpToolsProtocol, name, None)), name


def _assigned(cls: type, name: str) -> bool:
    return re.search(rf"\bself\.{name}\s*(:[^=]+)?=", inspect.getsource(cls)) is not None


@pytest.mark.parametrize(
    ("cls", "name"),
    [(HttpToolsProtocol, name) for name in UVICORN_PARTS["protocol attributes"]]
    + [(httptools_impl.RequestResponseCycle, name) for name in UVICORN_PARTS["cycle attributes"]],
)
def test_uvicorn_still_sets_each_attribute_the_edge_reads(cls: type, name: str) -> None:
    assert _assigned(cls, name), f"{cls.__name__}.{name}"


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


async def _ok(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]}
    )
    await send({"type": "http.response.body", "body": b"ok"})


async def test_on_uvicorns_server_it_answers_a_pipelined_request_then_refuses_a_big_head() -> None:
    port = free_port()
    limits = EdgeLimits(read_timeout=5, write_timeout=5, max_connections=10)
    config = uvicorn.Config(
        _ok,
        host="127.0.0.1",
        port=port,
        http=protocol_for(limits),  # type: ignore[arg-type]
        lifespan="off",
        log_config=None,
    )
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    try:
        await until(lambda: server.started, within=10, what="uvicorn started")
        big_head = b"GET / HTTP/1.1\r\nHost: t\r\nX-Pad: " + b"a" * MAX_HEAD_BYTES + b"\r\n\r\n"
        answer = await exchange(port, b"GET / HTTP/1.1\r\nHost: t\r\n\r\n" + big_head)
    finally:
        server.should_exit = True
        await serving
    first, refusal = split_responses(answer)
    assert (first.status, first.body) == (200, b"ok")
    assert refusal.status == 431
    assert refusal.headers["connection"] == "close"
