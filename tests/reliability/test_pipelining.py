"""A client that pipelines requests faster than it reads the answers holds a bounded amount of
the worker's memory, against a real `quoteapi serve` over raw sockets: the server stops reading
while requests of that connection are queued, so the client's writes block instead of the
worker parsing and queueing requests without limit. Meanwhile other connections are served,
and pipelining as HTTP/1.1 allows it still works: every request answered, in order."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import psutil
import pytest

from tests.support.processes import ServerProcess, serve_fixture
from tests.support.raw_http import read_response

pytestmark = pytest.mark.slow

REQUEST = b"GET /healthz HTTP/1.1\r\nHost: quoteapi.test\r\n\r\n"
BACK_TO_BACK = REQUEST * 1000  # one write of the attacking client, about 46 KB
SLOW_READ_BYTES = 4096  # the attacking client reads this much of the answers...
SLOW_READ_EVERY_S = 0.1  # ...this often
FLOOD_S = 5.0
RSS_SAMPLE_EVERY_S = 0.25
MAX_RSS_GROWTH = 50 * 1024 * 1024
ANSWERED_WITHIN_S = 2.0


# A fresh `quoteapi serve` for each test: with one worker, this process is the worker.
server = serve_fixture(scope="function", quoteapi_shutdown_grace_seconds=1)


@asynccontextmanager
async def one_connection_pipelining(port: int) -> AsyncIterator[None]:
    """While the block runs, one keep-alive connection writes GET /healthz back to back as fast
    as the server takes them, and reads the answers slowly."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)

    async def write_back_to_back() -> None:
        while True:
            writer.write(BACK_TO_BACK)
            await writer.drain()  # blocks while the server reads nothing more

    async def read_slowly() -> None:
        while True:
            if not await reader.read(SLOW_READ_BYTES):
                return  # the server closed the connection
            await asyncio.sleep(SLOW_READ_EVERY_S)  # the client's pace, not a wait for anything

    tasks = [asyncio.create_task(write_back_to_back()), asyncio.create_task(read_slowly())]
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()  # a write blocked in drain() ends here
        await asyncio.gather(*tasks, return_exceptions=True)
        writer.close()


def rss(pid: int) -> int:
    return int(psutil.Process(pid).memory_info().rss)


async def test_a_connection_pipelining_faster_than_it_reads_holds_bounded_memory(
    server: ServerProcess,
) -> None:
    assert server.process is not None
    before = rss(server.process.pid)
    samples = []
    async with one_connection_pipelining(server.port):
        for _ in range(int(FLOOD_S / RSS_SAMPLE_EVERY_S)):
            await asyncio.sleep(RSS_SAMPLE_EVERY_S)  # the sampling pace
            samples.append(rss(server.process.pid))
    growth = max(samples) - before
    print(f"\nworker RSS {before / 2**20:.0f} MiB, at most {max(samples) / 2**20:.0f} MiB")
    assert growth <= MAX_RSS_GROWTH, f"the worker grew by {growth / 2**20:.0f} MiB"


async def test_a_connection_pipelining_does_not_starve_a_new_connection(
    server: ServerProcess,
) -> None:
    answered_in = []
    async with one_connection_pipelining(server.port):
        end = time.monotonic() + FLOOD_S
        while time.monotonic() < end:
            async with httpx.AsyncClient(base_url=server.url, timeout=ANSWERED_WITHIN_S) as http:
                started = time.monotonic()
                try:
                    response = await http.get("/healthz")
                except httpx.TimeoutException:
                    raise AssertionError(
                        f"GET /healthz on a new connection not answered within "
                        f"{ANSWERED_WITHIN_S} s while another connection pipelines"
                    ) from None
                answered_in.append(time.monotonic() - started)
            assert response.status_code == 200, response.text
    print(f"\n{len(answered_in)} answers, the slowest in {max(answered_in):.2f} s")


async def test_pipelined_requests_are_all_answered_in_order(server: ServerProcess) -> None:
    request_ids = [f"pipelined-{i:02d}" for i in range(50)]
    requests = b"".join(
        f"GET /healthz HTTP/1.1\r\nHost: quoteapi.test\r\nX-Request-ID: {rid}\r\n\r\n".encode()
        for rid in request_ids
    )
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        writer.write(requests)  # all of them in one write
        await writer.drain()
        answers = [await asyncio.wait_for(read_response(reader), 10) for _ in request_ids]
    finally:
        writer.close()
    assert [status for status, _, _ in answers] == [200] * len(request_ids)
    assert [headers["x-request-id"] for _, headers, _ in answers] == request_ids
