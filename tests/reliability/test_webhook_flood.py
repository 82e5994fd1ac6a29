"""No anonymous request holds a database slot: connections that send plausible `svix-*`
headers and then dribble a 100 kB body to POST /webhooks/clerk are read (and timed out)
without a database session, so a signed-in user's reads and writes keep their latency.
Real `quoteapi serve`, pool of 2 slots, 10 dribbling connections."""

from __future__ import annotations

import asyncio
import base64
import math
import os
import time
import uuid
from collections.abc import Callable

import httpx

from tests.support.processes import ServerProcess
from tests.support.webhooks import TEST_SECRET

POOL_SIZE = 2
FLOODERS = 10
REQUESTS_PER_PHASE = 150
BODY_BYTES = 100_000
AuthHeaders = Callable[[str], dict[str, str]]


def p99(latencies: list[float]) -> float:
    ordered = sorted(latencies)
    return ordered[math.ceil(0.99 * len(ordered)) - 1]


async def user_latencies(http: httpx.AsyncClient, headers: dict[str, str]) -> list[float]:
    """A signed-in user alternating PUT and GET; stops at the first answer that is not 2xx
    or that takes over 1 s (a starved user: no need to wait out the rest)."""
    latencies: list[float] = []
    for i in range(REQUESTS_PER_PHASE):
        started = time.perf_counter()
        if i % 2:
            response = await http.get("/me/message", headers=headers)
        else:
            response = await http.put("/me/message", headers=headers, json={"message": f"q{i}"})
        elapsed = time.perf_counter() - started
        assert response.is_success, (i, response.status_code, response.text, elapsed)
        assert elapsed < 1.0, (i, elapsed)
        latencies.append(elapsed)
    return latencies


async def dribble(port: int, started: asyncio.Event, stop: asyncio.Event) -> None:
    """Plausible svix headers (fresh timestamp, a well-formed but wrong signature), then 100 B
    of the announced 100 kB body every 100 ms until told to stop."""
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    signature = "v1," + base64.b64encode(os.urandom(32)).decode()
    head = (
        "POST /webhooks/clerk HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {BODY_BYTES}\r\n"
        f"svix-id: msg_{uuid.uuid4().hex}\r\n"
        f"svix-timestamp: {int(time.time())}\r\n"
        f"svix-signature: {signature}\r\n\r\n"
    )
    try:
        writer.write(head.encode() + b'{"type": "user.deleted", "data": {"id": "')
        await writer.drain()
        started.set()
        while not stop.is_set():
            writer.write(b"x" * 100)
            await writer.drain()
            await asyncio.sleep(0.1)  # the dribble rate itself, not a wait for readiness
    except ConnectionError:
        pass
    finally:
        writer.close()


async def test_a_webhook_dribble_flood_does_not_starve_signed_in_users(
    database_url: str,
    start_server: Callable[..., ServerProcess],
    auth_headers: AuthHeaders,
) -> None:
    server = start_server(
        database_url,
        clerk_webhook_signing_secret=TEST_SECRET,
        database_pool_size=POOL_SIZE,
        database_pool_timeout=2,
        quoteapi_request_read_timeout_seconds=60,  # the flood outlives the measurement
    )
    headers = auth_headers(f"user_flood_{uuid.uuid4().hex[:8]}")
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        await user_latencies(http, headers)  # warm up: connections, statements, token cache
        quiet = await user_latencies(http, headers)

        stop = asyncio.Event()
        started = [asyncio.Event() for _ in range(FLOODERS)]
        flood = [asyncio.create_task(dribble(server.port, s, stop)) for s in started]
        try:
            await asyncio.wait_for(asyncio.gather(*(s.wait() for s in started)), 10)
            flooded = await user_latencies(http, headers)
            assert not any(task.done() for task in flood), "the flood kept its connections"
        finally:
            stop.set()
            await asyncio.gather(*flood, return_exceptions=True)

    print(
        f"\nuser p99 over {REQUESTS_PER_PHASE} requests: {p99(quiet) * 1000:.1f} ms quiet, "
        f"{p99(flooded) * 1000:.1f} ms with {FLOODERS} dribbling webhook connections "
        f"(pool {POOL_SIZE})"
    )
    assert p99(flooded) < p99(quiet) + 0.25
