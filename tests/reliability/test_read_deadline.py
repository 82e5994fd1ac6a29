"""Every byte a client sends leaves a deadline armed, against a real `quoteapi serve` over raw
sockets: the CRLFs a parser skips between keep-alive requests start no request, and uvicorn
cancels its keep-alive timer when they arrive, yet the connection still closes on time."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.support.processes import ServerProcess, serve_fixture

READ_TIMEOUT_S = 1.5
KEEP_ALIVE_S = 30  # far longer than the test: only the read deadline can close the connection
LATE_S = 1.5  # timers fire late on a loaded 2-core machine


server = serve_fixture(
    quoteapi_request_read_timeout_seconds=READ_TIMEOUT_S,
    quoteapi_keep_alive_seconds=KEEP_ALIVE_S,
)


@pytest.mark.parametrize("repeat", [False, True], ids=["one-crlf", "a-crlf-every-100ms"])
async def test_crlf_after_a_keep_alive_request_is_closed_within_the_read_timeout(
    server: ServerProcess, repeat: bool
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: quoteapi.test\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 200 ")
        length = next(
            int(line.split(b":")[1])
            for line in head.lower().split(b"\r\n")
            if line.startswith(b"content-length:")
        )
        await reader.readexactly(length)  # the whole response: the connection is idle now

        writer.write(b"\r\n")
        sent = time.monotonic()
        deadline = sent + READ_TIMEOUT_S + LATE_S
        while time.monotonic() < deadline:
            try:
                chunk = await asyncio.wait_for(reader.read(1024), 0.1)
            except TimeoutError:
                if repeat:
                    writer.write(b"\r\n")
                continue
            except ConnectionResetError:
                chunk = b""
            assert chunk == b"", chunk  # no answer: it was no request
            break
        else:
            raise AssertionError(f"still open {READ_TIMEOUT_S + LATE_S} s after the CRLF")
        closed_after = time.monotonic() - sent
        print(f"\nclosed {closed_after:.2f} s after the first CRLF")
        assert closed_after >= READ_TIMEOUT_S - 0.1
    finally:
        writer.close()
