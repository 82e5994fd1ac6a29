"""The Host header per RFC 9112 section 3.2, against a real `quoteapi serve`: an HTTP/1.1
request without one, or any request with two, is answered 400 problem+json before the app sees
it; and no response points a client at a host taken from the request."""

from __future__ import annotations

import json
import uuid

import httpx
import pytest

from tests.support.processes import ServerProcess
from tests.support.raw_http import exchange


@pytest.mark.parametrize(
    ("hosts", "why"),
    [
        (b"", b"must carry a Host header"),
        (b"Host: quoteapi.test\r\nHost: evil.example\r\n", b"this request has 2"),
    ],
    ids=["no-host", "two-hosts"],
)
async def test_an_http11_request_without_exactly_one_host_is_refused_400(
    server: ServerProcess, hosts: bytes, why: bytes
) -> None:
    request_id = f"host-{uuid.uuid4().hex[:12]}"
    request = b"GET /healthz HTTP/1.1\r\n%sX-Request-ID: %s\r\n\r\n" % (hosts, request_id.encode())
    answer = await exchange(server.port, request)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 "), answer[:200]
    assert b"content-type: application/problem+json" in head.lower()
    problem = json.loads(body)
    assert (problem["status"], problem["code"]) == (400, "bad-request")
    assert why in problem["detail"].encode()
    assert not any(r.get("request_id") == request_id for r in server.log_records())


async def test_an_http10_request_without_host_is_served(server: ServerProcess) -> None:
    answer = await exchange(server.port, b"GET /healthz HTTP/1.0\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:200]


async def test_a_trailing_slash_is_not_redirected_to_the_requests_host(
    server: ServerProcess,
) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=5) as http:
        response = await http.get("/me/message/", headers={"Host": "evil.example"})
    assert response.status_code == 404, response.headers
    assert "location" not in response.headers
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "not-found"
