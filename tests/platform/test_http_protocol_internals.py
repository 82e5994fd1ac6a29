"""quoteapi.http_protocol subclasses uvicorn's httptools protocol. A uvicorn upgrade that changes
what it relies on fails here, in process and in a second, before the process-level tests of
tests/reliability/ say why: every method it overrides is still one that uvicorn (or, for the
parser's callbacks, httptools) calls, and on uvicorn's own server it still answers a pipelined
request and then refuses a head over the cap, which uses uvicorn's transport, loop, request
cycle and queue."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from quoteapi.http_protocol import MAX_HEAD_BYTES, GuardedHttpToolsProtocol
from tests.support.polling import until
from tests.support.processes import free_port
from tests.support.raw_http import exchange, split_responses

# httptools calls these on the protocol when it defines them; uvicorn's own class does not.
PARSER_CALLBACKS = {"on_chunk_header", "on_chunk_complete"}


def test_every_public_method_the_guarded_protocol_defines_overrides_one_uvicorn_has() -> None:
    defined = {
        name
        for name, value in vars(GuardedHttpToolsProtocol).items()
        if callable(value) and not name.startswith("_")
    }
    assert defined - PARSER_CALLBACKS - set(dir(HttpToolsProtocol)) == set()


def test_uvicorn_still_builds_status_lines_for_the_refusals() -> None:
    assert STATUS_LINE[400].startswith(b"HTTP/1.1 400")
    assert STATUS_LINE[408].startswith(b"HTTP/1.1 408")
    assert STATUS_LINE[431].startswith(b"HTTP/1.1 431")


async def _ok(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]}
    )
    await send({"type": "http.response.body", "body": b"ok"})


async def test_on_uvicorns_server_it_answers_a_pipelined_request_then_refuses_a_big_head(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)  # the protocol reads its limits as a worker does: no .env here
    port = free_port()
    config = uvicorn.Config(
        _ok,
        host="127.0.0.1",
        port=port,
        http=GuardedHttpToolsProtocol,
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
