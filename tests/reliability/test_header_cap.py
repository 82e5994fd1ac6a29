"""The request-head cap (MAX_HEAD_BYTES) holds however the head is framed into reads, against a
real `quoteapi serve` over raw sockets: a head over the cap is answered 431 and never reaches
the application (no access-log line, no quote written). The 431 comes after the answer to a
request pipelined before it, and reaches a client still sending: the server closes without a
reset, so any reset fails these tests."""

from __future__ import annotations

import json
import uuid

import httpx
import pytest

from quoteapi.edge.limits import MAX_HEAD_BYTES
from tests.support.processes import ServerProcess, serve_fixture
from tests.support.raw_http import exchange, split_responses
from tests.support.tokens import MintToken

# Between two writes, so that the server reads them apart (framing is what these tests vary).
READ_APART_S = 0.3


server = serve_fixture(quoteapi_request_read_timeout_seconds=5)


def _head(token: str, request_id: str, padding: int, content_length: int) -> bytes:
    """The head of a PUT /me/message with `padding` bytes of extra headers."""
    pad = "".join(f"X-Pad-{i}: {'a' * 990}\r\n" for i in range(padding // 1000))
    return (
        f"PUT /me/message HTTP/1.1\r\nHost: quoteapi.test\r\nAuthorization: Bearer {token}\r\n"
        f"X-Request-ID: {request_id}\r\nContent-Type: application/json\r\n{pad}"
        f"Content-Length: {content_length}\r\n\r\n"
    ).encode()


def _put(token: str, quote: str, request_id: str, padding: int = 0) -> tuple[bytes, bytes]:
    """A PUT /me/message storing `quote`: its head and its body."""
    body = json.dumps({"message": quote}).encode()
    return _head(token, request_id, padding, len(body)), body


async def _stored_quote(server: ServerProcess, token: str) -> str | None:
    async with httpx.AsyncClient(base_url=server.url, timeout=5) as http:
        response = await http.get("/me/message", headers={"Authorization": f"Bearer {token}"})
    if response.status_code == 404:
        return None
    assert response.status_code == 200, response.text
    quote: str = response.json()["message"]
    return quote


def _reached_the_app(server: ServerProcess, request_id: str) -> bool:
    return any(record.get("request_id") == request_id for record in server.log_records())


def _split(head: bytes, body: bytes, framing: str, previous: tuple[bytes, bytes]) -> list[bytes]:
    """The writes that carry `head` + `body` in `framing`."""
    if framing == "with-the-end-of-the-previous-body":
        before_head, before_body = previous
        return [before_head + before_body[:5], before_body[5:] + head + body]
    if framing == "with-the-start-of-its-own-body":
        return [head + body[:5], body[5:]]
    assert framing == "with-its-whole-body"
    return [head + body]


@pytest.mark.parametrize(
    ("framing", "padding"),
    [
        ("with-the-end-of-the-previous-body", 60_000),
        ("with-the-start-of-its-own-body", 60_000),
        ("with-the-start-of-its-own-body", 100_000),
        ("with-its-whole-body", 40_000),
    ],
)
async def test_a_head_over_the_cap_is_refused_431_and_never_reaches_the_app(
    server: ServerProcess, mint_token: MintToken, framing: str, padding: int
) -> None:
    assert padding > MAX_HEAD_BYTES
    token = mint_token(f"user_cap_{uuid.uuid4().hex[:8]}")
    refused_id = f"cap-{uuid.uuid4().hex[:12]}"
    head, body = _put(token, "Refused: this head is too large.", refused_id, padding)
    previous = _put(token, "Sent first, on the same connection.", f"first-{refused_id}")

    answer = await exchange(
        server.port, *_split(head, body, framing, previous), apart_s=READ_APART_S
    )

    assert b"HTTP/1.1 431 " in answer, answer[:200]
    assert json.loads(split_responses(answer)[-1].body)["code"] == "headers-too-large"
    assert await _stored_quote(server, token) != "Refused: this head is too large."
    assert not _reached_the_app(server, refused_id)


async def test_a_head_just_under_the_cap_with_its_whole_body_is_served(
    server: ServerProcess, mint_token: MintToken
) -> None:
    token = mint_token(f"user_cap_{uuid.uuid4().hex[:8]}")
    head, body = _put(token, "Served: this head fits.", "under-cap", MAX_HEAD_BYTES - 2_000)
    head = head.replace(b"HTTP/1.1\r\n", b"HTTP/1.1\r\nConnection: close\r\n", 1)
    answer = await exchange(server.port, head + body)
    assert answer.startswith(b"HTTP/1.1 201 "), answer[:200]
    assert await _stored_quote(server, token) == "Served: this head fits."


async def test_a_refused_head_is_answered_after_the_request_pipelined_before_it(
    server: ServerProcess, mint_token: MintToken
) -> None:
    token = mint_token(f"user_cap_{uuid.uuid4().hex[:8]}")
    first_head, first_body = _put(token, "Sent first, on the same connection.", "pipelined-first")
    head, body = _put(token, "Refused: this head is too large.", "pipelined-refused", 60_000)

    answer = await exchange(server.port, first_head + first_body + head + body)

    assert answer.startswith(b"HTTP/1.1 201 "), answer[:200]
    assert answer.index(b"HTTP/1.1 431 ") > answer.index(b"Sent first, on the same connection.")
    assert await _stored_quote(server, token) == "Sent first, on the same connection."


async def test_a_client_still_sending_its_body_when_refused_reads_the_431(
    server: ServerProcess, mint_token: MintToken
) -> None:
    token = mint_token(f"user_cap_{uuid.uuid4().hex[:8]}")
    chunks = [b"a" * 20_000] * 10
    head = _head(token, "still-sending", 40_000, content_length=len(b"".join(chunks)))

    answer = await exchange(server.port, head, *chunks, apart_s=0.05)

    assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
