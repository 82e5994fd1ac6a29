"""Limits against abusive clients, against a real `quoteapi serve` process over raw sockets:
slow or silent clients are cut off within the request read timeout while everyone else is
served, oversized request heads are refused, idle connections are closed. The last test
pins why quoteapi.edge exists: stock uvicorn (0.54, httptools) never times out a
request head."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

import httpx
import pytest
import uvicorn

from quoteapi.edge.limits import MAX_HEAD_BYTES
from tests.support.polling import until
from tests.support.processes import ServerProcess, free_port, serve_fixture
from tests.support.raw_http import parse_response

pytestmark = pytest.mark.slow

READ_TIMEOUT_S = 1.5
KEEP_ALIVE_S = 1
# Timers fire on a loaded 2-core machine: allow this much lateness; and the server's clock for
# a connection starts a moment before the client's `open` returns.
LATE_S = 1.5
EARLY_S = 0.1


server = serve_fixture(
    quoteapi_request_read_timeout_seconds=READ_TIMEOUT_S,
    quoteapi_keep_alive_seconds=KEEP_ALIVE_S,
)


class RawConnection:
    """A TCP connection that sends exactly the bytes it is given, when it is told to."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.opened = time.monotonic()

    @classmethod
    async def open(cls, port: int) -> RawConnection:
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    async def send(self, data: bytes) -> bool:
        """Send `data`; False if the connection is gone."""
        try:
            self.writer.write(data)
            await self.writer.drain()
        except OSError:
            return False
        return True

    async def dribble_until_closed(self, byte: bytes, within: float) -> bytes:
        """Send `byte` every 100 ms until the server closes the connection; what it sent."""
        received = b""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            try:  # waiting 100 ms for the server to say something is also the client's pace
                chunk = await asyncio.wait_for(self.reader.read(65536), 0.1)
            except TimeoutError:
                if await self.send(byte):
                    continue
                return received + await self.read_until_closed(1)
            except OSError:
                return received
            if not chunk:
                return received
            received += chunk
        raise AssertionError(f"still open after {within} s; received {received[:200]!r}")

    async def read_until_closed(self, within: float) -> bytes:
        """Everything the server sends until it closes the connection."""
        received = b""
        deadline = time.monotonic() + within
        while (left := deadline - time.monotonic()) > 0:
            try:
                chunk = await asyncio.wait_for(self.reader.read(65536), left)
            except OSError:
                return received
            if not chunk:
                return received
            received += chunk
        raise AssertionError(f"still open after {within} s; received {received[:200]!r}")

    def close(self) -> None:
        self.writer.close()


@pytest.fixture
async def raw(server: ServerProcess) -> AsyncIterator[list[RawConnection]]:
    """Raw connections to the server, closed after the test."""
    connections: list[RawConnection] = []
    yield connections
    for connection in connections:
        connection.close()


async def _served_promptly(server: ServerProcess, rounds: int) -> list[float]:
    """GET /healthz `rounds` times on new connections; how long each took."""
    timings = []
    async with httpx.AsyncClient(base_url=server.url, timeout=5) as http:
        for _ in range(rounds):
            started = time.monotonic()
            response = await http.get("/healthz", headers={"Connection": "close"})
            assert response.status_code == 200
            timings.append(time.monotonic() - started)
    return timings


async def test_slowloris_clients_are_cut_off_while_others_are_served(
    server: ServerProcess, raw: list[RawConnection]
) -> None:
    slow = [await RawConnection.open(server.port) for _ in range(50)]
    raw.extend(slow)
    for connection in slow:
        assert await connection.send(b"GET /healthz HTTP/1.1\r\nHost: quoteapi.test\r\n")

    async def dribble(connection: RawConnection) -> float:
        """One header byte every 100 ms until the server hangs up; when it did."""
        answer = await connection.dribble_until_closed(b"X", READ_TIMEOUT_S + LATE_S)
        assert answer.startswith(b"HTTP/1.1 408 "), answer[:100]
        assert json.loads(parse_response(answer).body)["code"] == "request-timeout"
        return time.monotonic() - connection.opened

    dribbling = asyncio.gather(*(dribble(c) for c in slow))
    # Meanwhile, other clients are served at once, again and again.
    timings = await _served_promptly(server, 20)
    closed_after = await dribbling
    print(
        f"\n50 slowloris connections closed after {min(closed_after):.2f}-{max(closed_after):.2f} s"
    )
    print(f"other requests meanwhile: slowest {max(timings) * 1000:.0f} ms")
    assert max(timings) < 1.0
    assert min(closed_after) >= READ_TIMEOUT_S - EARLY_S
    assert max(closed_after) < READ_TIMEOUT_S + LATE_S


async def test_a_connection_that_sends_nothing_is_closed_within_the_read_timeout(
    server: ServerProcess, raw: list[RawConnection]
) -> None:
    silent = await RawConnection.open(server.port)
    raw.append(silent)
    assert await silent.read_until_closed(READ_TIMEOUT_S + LATE_S) == b""
    assert time.monotonic() - silent.opened >= READ_TIMEOUT_S - EARLY_S


async def test_a_slow_body_is_cut_off_within_the_read_timeout(
    server: ServerProcess, raw: list[RawConnection]
) -> None:
    connection = await RawConnection.open(server.port)
    raw.append(connection)
    head = b"PUT /me/message HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
    assert await connection.send(head + b"Content-Length: 1000\r\n\r\n{")
    await connection.dribble_until_closed(b" ", READ_TIMEOUT_S + LATE_S)
    assert time.monotonic() - connection.opened < READ_TIMEOUT_S + LATE_S


async def test_a_request_head_over_the_cap_is_refused_with_431(
    server: ServerProcess, raw: list[RawConnection]
) -> None:
    connection = await RawConnection.open(server.port)
    raw.append(connection)
    padding = b"X-Padding: " + b"a" * MAX_HEAD_BYTES + b"\r\n"
    await connection.send(b"GET /healthz HTTP/1.1\r\nHost: t\r\n" + padding + b"\r\n")
    answer = await connection.read_until_closed(5)
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:100]
    assert b"application/problem+json" in answer
    assert json.loads(parse_response(answer).body)["code"] == "headers-too-large"


async def test_a_request_head_under_the_cap_is_served(server: ServerProcess) -> None:
    padding = "a" * (MAX_HEAD_BYTES - 1024)
    async with httpx.AsyncClient(base_url=server.url, timeout=5) as http:
        response = await http.get("/healthz", headers={"X-Padding": padding})
    assert response.status_code == 200


async def test_an_idle_connection_is_closed_after_the_keep_alive(
    server: ServerProcess, raw: list[RawConnection]
) -> None:
    connection = await RawConnection.open(server.port)
    raw.append(connection)
    await connection.send(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
    answer = await connection.read_until_closed(KEEP_ALIVE_S + READ_TIMEOUT_S + LATE_S)
    assert answer.startswith(b"HTTP/1.1 200 ")
    assert time.monotonic() - connection.opened < KEEP_ALIVE_S + LATE_S


async def test_stock_uvicorn_never_times_out_a_request_head() -> None:
    """Why quoteapi.edge exists: uvicorn's own httptools protocol, with a 1 s keep-alive,
    still holds a connection that dribbles its headers after 3 s (it arms no timer before a
    first response). If this starts failing, uvicorn has grown a header timeout."""

    async def app(scope: dict, receive: object, send: object) -> None:  # never reached
        raise AssertionError("the request head never completes")

    port = free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, http="httptools", timeout_keep_alive=1, log_config=None
    )
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    try:
        await until(lambda: server.started, within=10, what="stock uvicorn started")
        connection = await RawConnection.open(port)
        assert await connection.send(b"GET / HTTP/1.1\r\nHost: t\r\n")
        with pytest.raises(AssertionError, match="still open after"):
            await connection.dribble_until_closed(b"X", 3)  # three keep-alive periods
        connection.close()
    finally:
        server.should_exit = True
        await serving
