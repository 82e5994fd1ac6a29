"""Races on one user's quote, through a real `quoteapi serve` process (uvicorn, one worker, the
default pool of 10 connections) on the test PostgreSQL: hundreds of concurrent writes to one row
are each answered (never 500, never a deadlock), and what is stored afterwards is exactly what
the answers say it must be."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator

import httpx
import pytest

from tests.support.processes import ServerProcess, serve_fixture
from tests.support.tokens import AuthHeaders

pytestmark = pytest.mark.slow

RACERS = 500
# Conditional writers: all but one lose at once with 412, so fewer show the same thing.
CONDITIONAL_RACERS = 200


# The default pool (10 connections), but a pool wait long enough for 500 queued requests on a
# busy 2-core machine: this module is about correctness under races, not latency. The server
# keeps idle connections far longer than the client (below): a client starved of CPU reads an
# answer seconds after it was sent, and its idle clock starts only then.
server = serve_fixture(database_pool_timeout=60, quoteapi_keep_alive_seconds=60)


@pytest.fixture
async def http(server: ServerProcess) -> Iterator[httpx.AsyncClient]:
    # The client drops idle connections before the server's keep-alive closes them, as a proxy
    # in front of the service must; otherwise it may reuse one the server just closed.
    limits = httpx.Limits(max_connections=RACERS, keepalive_expiry=1)
    async with httpx.AsyncClient(base_url=server.url, limits=limits, timeout=120) as client:
        yield client


def _version(response: httpx.Response) -> int:
    return int(response.headers["etag"].strip('"'))


async def test_500_concurrent_puts_for_one_user_all_succeed_and_the_last_version_is_stored(
    http: httpx.AsyncClient, auth_headers: AuthHeaders
) -> None:
    headers = auth_headers("user_race_puts")
    responses = await asyncio.gather(
        *(
            http.put("/me/message", json={"message": f"writer {n}"}, headers=headers)
            for n in range(RACERS)
        )
    )
    statuses = [r.status_code for r in responses]
    assert set(statuses) <= {200, 201}, {s: statuses.count(s) for s in set(statuses)}
    assert statuses.count(201) == 1  # exactly one created it; all others replaced it
    # Every write got its own version; the highest acknowledged one is what is stored.
    versions = {_version(r): r.json()["message"] for r in responses}
    assert len(versions) == RACERS
    stored = await http.get("/me/message", headers=headers)
    assert _version(stored) == max(versions)
    assert stored.json()["message"] == versions[max(versions)]


async def test_puts_and_deletes_interleaved_leave_the_last_acknowledged_state(
    http: httpx.AsyncClient, auth_headers: AuthHeaders
) -> None:
    headers = auth_headers("user_race_put_delete")
    operations = ["PUT"] * (RACERS // 2) + ["DELETE"] * (RACERS // 2)
    random.Random(7).shuffle(operations)

    async def run(n: int, method: str) -> httpx.Response:
        if method == "PUT":
            return await http.put("/me/message", json={"message": f"put {n}"}, headers=headers)
        return await http.delete("/me/message", headers=headers)

    responses = await asyncio.gather(*(run(n, m) for n, m in enumerate(operations)))
    by_method = {
        m: sorted({r.status_code for r, o in zip(responses, operations, strict=True) if o == m})
        for m in ("PUT", "DELETE")
    }
    assert set(by_method["PUT"]) <= {200, 201}, by_method
    assert set(by_method["DELETE"]) <= {204, 404}, by_method
    # Whatever is stored (if anything) is the newest acknowledged write: a later one would have
    # a higher version, and a delete after it would have removed it.
    written = {_version(r): r.json()["message"] for r in responses if r.status_code in (200, 201)}
    stored = await http.get("/me/message", headers=headers)
    assert stored.status_code in (200, 404)
    if stored.status_code == 200:
        assert _version(stored) == max(written)
        assert stored.json()["message"] == written[max(written)]


async def test_if_match_writers_racing_on_one_etag_exactly_one_wins(
    http: httpx.AsyncClient, auth_headers: AuthHeaders
) -> None:
    headers = auth_headers("user_race_if_match")
    etag = (
        await http.put("/me/message", json={"message": "seen by all"}, headers=headers)
    ).headers["etag"]
    responses = await asyncio.gather(
        *(
            http.put(
                "/me/message", json={"message": f"tab {n}"}, headers={**headers, "If-Match": etag}
            )
            for n in range(CONDITIONAL_RACERS)
        )
    )
    statuses = [r.status_code for r in responses]
    assert sorted(set(statuses)) == [200, 412], {s: statuses.count(s) for s in set(statuses)}
    assert statuses.count(200) == 1
    (winner,) = [r for r in responses if r.status_code == 200]
    stored = await http.get("/me/message", headers=headers)
    assert stored.headers["etag"] == winner.headers["etag"]
    assert stored.json()["message"] == winner.json()["message"]


async def test_if_match_puts_and_deletes_racing_on_one_etag_exactly_one_wins(
    http: httpx.AsyncClient, auth_headers: AuthHeaders
) -> None:
    headers = auth_headers("user_race_if_match_delete")
    etag = (
        await http.put("/me/message", json={"message": "seen by all"}, headers=headers)
    ).headers["etag"]
    conditional = {**headers, "If-Match": etag}

    async def run(n: int) -> httpx.Response:
        if n % 2:
            return await http.delete("/me/message", headers=conditional)
        return await http.put("/me/message", json={"message": f"tab {n}"}, headers=conditional)

    responses = await asyncio.gather(*(run(n) for n in range(CONDITIONAL_RACERS)))
    statuses = [r.status_code for r in responses]
    assert set(statuses) <= {200, 204, 412}, {s: statuses.count(s) for s in set(statuses)}
    assert statuses.count(200) + statuses.count(204) == 1
    stored = await http.get("/me/message", headers=headers)
    if 204 in statuses:
        assert stored.status_code == 404
    else:
        (winner,) = [r for r in responses if r.status_code == 200]
        assert stored.json()["message"] == winner.json()["message"]
