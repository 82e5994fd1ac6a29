"""The HTTP edge at its seams, against a real `quoteapi serve` over raw sockets: a Host that is no
host is 400; a transfer coding other than chunked is 501; a request target past its limit is 414,
and a head of many tiny fields 431; an answer that begins before the request's body has arrived
(a refused `Expect: 100-continue`, a 401 to a huge upload) closes the connection."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid

import pytest

from quoteapi.edge.limits import MAX_FIELDS, MAX_TARGET_BYTES
from tests.support.processes import ServerProcess
from tests.support.raw_http import exchange, read_head, split_responses
from tests.support.tokens import MintToken
from tests.support.webhooks import session_ended, signed

pytestmark = pytest.mark.slow


async def _refused(server: ServerProcess, request: bytes) -> tuple[int, dict[str, object]]:
    """The status and problem the server answers `request` with; it never reached the app."""
    request_id = f"seam-{uuid.uuid4().hex[:12]}"
    answer = await exchange(server.port, request.replace(b"{id}", request_id.encode()))
    [response] = split_responses(answer)
    assert response.headers["content-type"] == "application/problem+json", answer[:300]
    assert response.headers["connection"] == "close"
    assert not any(r.get("request_id") == request_id for r in server.log_records())
    problem: dict[str, object] = json.loads(response.body)
    return response.status, problem


@pytest.mark.parametrize(
    "host", [b"a b", b"a@b", b"quoteapi.test/x", b"[::1", b"quoteapi.test:80x"]
)
async def test_a_host_that_is_not_a_host_and_port_is_refused_400(
    server: ServerProcess, host: bytes
) -> None:
    request = b"GET /healthz HTTP/1.1\r\nHost: %s\r\nX-Request-ID: {id}\r\n\r\n" % host
    status, problem = await _refused(server, request)
    assert (status, problem["code"]) == (400, "bad-request")


@pytest.mark.parametrize(
    "host", [b"quoteapi.test", b"127.0.0.1:8000", b"[::1]:8000", b"xn--bcher-kva.example"]
)
async def test_a_host_and_port_is_served(server: ServerProcess, host: bytes) -> None:
    answer = await exchange(
        server.port, b"GET /healthz HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n" % host
    )
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:200]


@pytest.mark.parametrize("coding", [b"gzip, chunked", b"deflate,chunked", b"x-custom , chunked"])
async def test_a_transfer_coding_other_than_chunked_is_refused_501(
    server: ServerProcess, coding: bytes
) -> None:
    request = (
        b"PUT /me/message HTTP/1.1\r\nHost: quoteapi.test\r\nX-Request-ID: {id}\r\n"
        b"Transfer-Encoding: %s\r\n\r\n5\r\nhello\r\n0\r\n\r\n" % coding
    )
    status, problem = await _refused(server, request)
    assert (status, problem["code"]) == (501, "transfer-coding-not-implemented")


async def test_a_request_target_past_its_limit_is_refused_414(server: ServerProcess) -> None:
    target = b"/me/message?" + b"a" * (100 * 1024)
    request = b"GET %s HTTP/1.1\r\nHost: quoteapi.test\r\nX-Request-ID: {id}\r\n\r\n" % target
    status, problem = await _refused(server, request)
    assert (status, problem["code"]) == (414, "uri-too-long")
    assert str(MAX_TARGET_BYTES) in str(problem["detail"])


async def test_a_head_of_many_tiny_fields_is_refused_431(server: ServerProcess) -> None:
    fields = b"".join(b"a%d:\r\n" % n for n in range(7900))
    request = b"GET /healthz HTTP/1.1\r\nHost: quoteapi.test\r\nX-Request-ID: {id}\r\n%s\r\n"
    status, problem = await _refused(server, request % fields)
    assert (status, problem["code"]) == (431, "headers-too-large")
    assert f"{MAX_FIELDS} fields" in str(problem["detail"])


async def test_a_refused_expect_100_continue_closes_so_no_next_request_is_taken_as_its_body(
    server: ServerProcess,
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        writer.write(
            b"PUT /me/message HTTP/1.1\r\nHost: quoteapi.test\r\nExpect: 100-continue\r\n"
            b"Content-Type: application/json\r\nContent-Length: 26\r\n\r\n"
        )
        status, headers = await asyncio.wait_for(read_head(reader), 5)
        body = await reader.readexactly(int(headers["content-length"]))
        assert (status, headers["connection"]) == (401, "close"), body
        # The client skips the body, as it may once refused; the server reads nothing more.
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: quoteapi.test\r\n\r\n")
        assert await asyncio.wait_for(reader.read(), 5) == b""
    finally:
        writer.close()


class Upload:
    """Writes `head`, then `chunk` after `chunk` (up to `limit` bytes, or without end) until the
    server stops taking them; `sent` counts the chunk bytes written."""

    def __init__(self, writer: asyncio.StreamWriter, head: bytes, chunk: bytes, limit: float):
        self.writer, self.head, self.chunk, self.limit = writer, head, chunk, limit
        self.sent = 0
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        self.writer.write(self.head)
        with contextlib.suppress(ConnectionError):
            while self.sent < self.limit:
                self.writer.write(self.chunk)
                await self.writer.drain()
                self.sent += len(self.chunk)


async def test_an_answer_before_a_large_body_ends_closes_instead_of_reading_it_all(
    server: ServerProcess,
) -> None:
    declared = 8 * 1024**3  # 8 GiB, never to be read
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    head = (
        b"PUT /me/message HTTP/1.1\r\nHost: quoteapi.test\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % declared
    )
    upload = Upload(writer, head, b"a" * 65536, declared)
    started = time.monotonic()
    try:
        status, headers = await asyncio.wait_for(read_head(reader), 5)
        assert (status, headers["connection"]) == (401, "close")
        await asyncio.wait_for(upload.task, 5)  # the server stops reading: the upload fails
    finally:
        upload.task.cancel()
        writer.close()
    print(
        f"\nearly answer: upload cut after {upload.sent / 1024**2:.0f} MiB, "
        f"{time.monotonic() - started:.2f} s"
    )
    assert time.monotonic() - started < 3


async def test_an_endless_chunk_extension_is_refused_400_once_past_the_head_cap(
    webhook_server: ServerProcess,
) -> None:
    # A webhook delivery reads its whole body (the signature covers it) before anything else.
    reader, writer = await asyncio.open_connection("127.0.0.1", webhook_server.port)
    head = (
        b"POST /webhooks/clerk HTTP/1.1\r\nHost: quoteapi.test\r\n"
        b"Content-Type: application/json\r\nsvix-id: msg_x\r\n"
        b"svix-timestamp: %d\r\nsvix-signature: v1,AAAA\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n5;ext=" % int(time.time())
    )
    upload = Upload(writer, head, b"e" * 65536, float("inf"))  # an extension without end
    started = time.monotonic()
    try:
        status, headers = await asyncio.wait_for(read_head(reader), 5)
    finally:
        upload.task.cancel()
        writer.close()
    elapsed = time.monotonic() - started
    taken = upload.sent / 1024**2
    print(f"\nendless chunk extension: 400 after {elapsed:.2f} s, {taken:.0f} MiB taken")
    assert (status, headers["connection"]) == (400, "close")
    assert elapsed < 3
    assert upload.sent < 64 * 1024**2, upload.sent  # the server stopped taking it long before


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_a_put_asking_to_upgrade_is_served_with_its_body_then_the_connection_closes(
    server: ServerProcess, mint_token: MintToken, chunked: bool
) -> None:
    body = json.dumps({"message": "Sent as curl --http2 sends it."}).encode()
    framing = (
        b"Transfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
        if chunked
        else b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    request = (
        b"PUT /me/message HTTP/1.1\r\nHost: quoteapi.test\r\nContent-Type: application/json\r\n"
        b"Authorization: Bearer %s\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
        b"HTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\n%s"
        % (mint_token(f"user_h2c_{uuid.uuid4().hex[:8]}").encode(), framing)
    )
    answer = await exchange(server.port, request + b"GET /healthz HTTP/1.1\r\n\r\n")
    [response] = split_responses(answer)  # the answer, then the close: nothing after is read
    assert response.status == 201, answer[:300]
    assert json.loads(response.body)["message"] == "Sent as curl --http2 sends it."


async def test_a_signed_webhook_asking_to_upgrade_is_verified_over_its_whole_body(
    webhook_server: ServerProcess,
) -> None:
    body, headers = signed(session_ended("user_h2c", f"sess_{uuid.uuid4().hex[:12]}"))
    fields = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    request = (
        b"POST /webhooks/clerk HTTP/1.1\r\nHost: quoteapi.test\r\n"
        b"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
        b"HTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\n%sContent-Length: %d\r\n\r\n%s"
        % (fields.encode(), len(body), body)
    )
    [response] = split_responses(await exchange(webhook_server.port, request))
    assert (response.status, json.loads(response.body)) == (200, {"outcome": "revoked"})
