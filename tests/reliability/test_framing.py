"""How the bytes of a request arrive never changes what it means, and every request that arrived
whole gets its answer, against a real `quoteapi serve` over raw sockets: chunked trailer fields
are never headers and cannot grow without bound; a malformed request pipelined after a good one
is refused after the good one's answer; a client that half-closes after its request still reads
the answer; an upgrade request is answered as plain HTTP."""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import pytest

from quoteapi.edge.limits import MAX_HEAD_BYTES
from tests.support.polling import wait_until
from tests.support.processes import ServerProcess, serve_fixture
from tests.support.raw_http import exchange, split_responses
from tests.support.tokens import MintToken

pytestmark = pytest.mark.slow

READ_TIMEOUT_S = 2.0
WEBHOOK_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
# Trailer fields over the cap: enough to refuse, sent whole or as one unfinished line.
BIG_TRAILERS = b"".join(b"X-Pad-%d: %s\r\n" % (i, b"a" * 990) for i in range(40))
UNFINISHED_TRAILER = b"X-Pad: " + b"a" * (MAX_HEAD_BYTES + 1000)


server = serve_fixture(
    quoteapi_request_read_timeout_seconds=READ_TIMEOUT_S,
    clerk_webhook_signing_secret=WEBHOOK_SECRET,
)


def _put(token: str | None, quote: str, request_id: str = "-", *, chunked: bool = False) -> bytes:
    """A PUT /me/message storing `quote`; chunked: up to its last chunk, trailers to follow."""
    body = json.dumps({"message": quote}).encode()
    head = "PUT /me/message HTTP/1.1\r\nHost: quoteapi.test\r\nContent-Type: application/json\r\n"
    head += f"X-Request-ID: {request_id}\r\n"
    if token is not None:
        head += f"Authorization: Bearer {token}\r\n"
    if chunked:
        head += "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        return head.encode() + b"%x\r\n%s\r\n0\r\n" % (len(body), body)
    return head.encode() + b"Content-Length: %d\r\n\r\n%s" % (len(body), body)


def _webhook_post() -> bytes:
    """A chunked webhook delivery with plausible Svix headers, up to its last chunk."""
    body = b'{"type": "user.deleted", "data": {"id": "user_x"}}'
    head = (
        "POST /webhooks/clerk HTTP/1.1\r\nHost: quoteapi.test\r\nContent-Type: application/json\r\n"
        f"svix-id: msg_{uuid.uuid4().hex}\r\nsvix-timestamp: {int(time.time())}\r\n"
        "svix-signature: v1,bm90IGEgcmVhbCBzaWduYXR1cmUgYXQgYWxs\r\n"
        "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + b"%x\r\n%s\r\n0\r\n" % (len(body), body)


async def _stored_quote(server: ServerProcess, token: str) -> str | None:
    request = (
        f"GET /me/message HTTP/1.1\r\nHost: quoteapi.test\r\nAuthorization: Bearer {token}\r\n"
        "Connection: close\r\n\r\n"
    )
    [(status, _, body)] = split_responses(await exchange(server.port, request.encode()))
    if status == 404:
        return None
    assert status == 200, body
    quote: str = json.loads(body)["message"]
    return quote


def _access_status(server: ServerProcess, request_id: str) -> int | None:
    for record in server.log_records():
        if record.get("request_id") == request_id and "status" in record:
            status: int = record["status"]
            return status
    return None


@pytest.mark.parametrize("apart_s", [0.0, 0.1], ids=["one-write", "trailers-100ms-later"])
@pytest.mark.parametrize("credential", ["Authorization: Bearer {}", "Cookie: __session={}"])
async def test_a_credential_sent_only_as_a_trailer_field_never_authenticates(
    server: ServerProcess, mint_token: MintToken, credential: str, apart_s: float
) -> None:
    token = mint_token(f"user_trailer_{uuid.uuid4().hex[:8]}")
    start = _put(None, "Stored through a trailer?", chunked=True)
    trailers = f"Host: elsewhere.test\r\n{credential.format(token)}\r\n\r\n".encode()

    writes = (start, trailers) if apart_s else (start + trailers,)
    [(status, headers, _)] = split_responses(await exchange(server.port, *writes, apart_s=apart_s))

    assert status == 401
    assert headers["content-type"] == "application/problem+json"
    assert await _stored_quote(server, token) is None


@pytest.mark.parametrize(
    "trailers", [BIG_TRAILERS, UNFINISHED_TRAILER], ids=["whole", "unfinished"]
)
@pytest.mark.parametrize("route", ["put-signed-in", "webhook-anonymous"])
async def test_trailers_over_the_cap_are_answered_431_at_once(
    server: ServerProcess, mint_token: MintToken, route: str, trailers: bytes
) -> None:
    token = mint_token(f"user_trailer_{uuid.uuid4().hex[:8]}")
    start = _put(token, "Refused with its trailers.", chunked=True)
    if route == "webhook-anonymous":
        start = _webhook_post()

    began = time.monotonic()
    answer = await exchange(server.port, start, trailers, apart_s=0.1)
    took = time.monotonic() - began

    [(status, headers, body)] = split_responses(answer)
    assert status == 431
    assert headers["content-type"] == "application/problem+json"
    assert json.loads(body)["code"] == "headers-too-large"
    assert took < READ_TIMEOUT_S, f"answered only after {took:.1f} s"
    assert await _stored_quote(server, token) is None


@pytest.mark.parametrize(
    "malformed",
    [
        b"GET /healthz HTTP/1.1\r\nHost: quoteapi.test\r\nX-Folded: a\r\n b\r\n\r\n",
        b"POST /me/message HTTP/1.1\r\nHost: quoteapi.test\r\nContent-Length: 3\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"GET /healthz HTTP/9.9\r\nHost: quoteapi.test\r\n\r\n",
    ],
    ids=["obs-fold", "content-length-with-chunked", "http-9.9"],
)
async def test_a_malformed_request_after_a_good_put_is_refused_after_the_puts_answer(
    server: ServerProcess, mint_token: MintToken, malformed: bytes
) -> None:
    token = mint_token(f"user_pipelined_{uuid.uuid4().hex[:8]}")

    answer = await exchange(server.port, _put(token, "Answered first.") + malformed)

    [(first, _, body), (second, headers, problem)] = split_responses(answer)
    assert first == 201
    assert json.loads(body)["message"] == "Answered first."
    assert second == 400
    assert headers["content-type"] == "application/problem+json"
    assert json.loads(problem)["code"] == "bad-request"
    assert json.loads(problem)["request_id"] == headers["x-request-id"]


async def test_a_client_that_half_closes_after_its_put_reads_the_answer(
    server: ServerProcess, mint_token: MintToken
) -> None:
    token = mint_token(f"user_half_close_{uuid.uuid4().hex[:8]}")
    request_id = f"half-close-{uuid.uuid4().hex[:8]}"
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        writer.write(_put(token, "Sent, then no more.", request_id))
        writer.write_eof()
        answer = await asyncio.wait_for(reader.read(), 10)  # until the server closes
    finally:
        writer.close()

    # An interim 100 may come first: the probe that tells a half-close from a client that left.
    *interim, (status, _, body) = split_responses(answer)
    assert [response.status for response in interim] in ([], [100])
    assert status == 201
    assert json.loads(body)["message"] == "Sent, then no more."
    wait_until(lambda: _access_status(server, request_id), within=5, what="the access log line")
    assert _access_status(server, request_id) == 201


@pytest.mark.parametrize(("path", "status"), [("/ws", 404), ("/healthz", 200)])
async def test_an_upgrade_request_is_answered_as_plain_http_and_the_connection_closes(
    server: ServerProcess, path: str, status: int
) -> None:
    request = (
        f"GET {path} HTTP/1.1\r\nHost: quoteapi.test\r\nConnection: Upgrade\r\n"
        "Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    )
    answer = await exchange(server.port, request.encode())  # returns once the server closes

    [(answered, headers, _)] = split_responses(answer)
    assert answered == status
    expected = "application/problem+json" if status >= 400 else "application/json"
    assert headers["content-type"] == expected
