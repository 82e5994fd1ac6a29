"""The HTTP protocol `quoteapi serve` runs: uvicorn's httptools protocol plus the two limits on
reading a request that uvicorn lacks.

uvicorn 0.54 (pinned to that minor version in pyproject.toml) arms `timeout_keep_alive` only
after a response; a connection that has not yet sent a whole request has no timer at all, and
httptools buffers a request head of any size. So a client dribbling header bytes (slowloris),
or one that connects and sends nothing, holds its connection and memory forever. ASGI middleware
cannot help: the app sees a request only once its head is complete. This protocol closes a
connection whose request (head and body) has not fully arrived within
QUOTEAPI_REQUEST_READ_TIMEOUT_SECONDS of its first byte (or of the connection, for the first
request, or of bytes such as a bare CRLF that begin none), and refuses a request head over
MAX_HEAD_BYTES with 431, counted as the parser reports it, however the head is split into reads.
It also answers 400 to a request without the Host header HTTP/1.1 requires, or with two.
A request this protocol refuses (400, 431, 408) never reaches the app. Its answer follows the
answers to any requests pipelined before it, and the connection then closes as RFC 9112
section 9.6 asks: the write side first, then the rest of what the client sends is read and
dropped for up to LINGER_SECONDS, so that a client still uploading reads the answer instead of
a reset.
"""

from __future__ import annotations

import asyncio
import json
from functools import cache
from typing import Any

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from quoteapi.problems import (
    BAD_REQUEST,
    HEADERS_TOO_LARGE,
    PROBLEM_MEDIA_TYPE,
    REQUEST_TIMEOUT,
    Problem,
    problem_body,
)
from quoteapi.settings import load_settings

# Request line plus headers. A Clerk session token is at most 8 KiB (auth refuses larger), and
# a browser's cookies a few KiB more; nginx's default allows 32 KiB too.
MAX_HEAD_BYTES = 32 * 1024

# How long a refused connection keeps reading (and dropping) what its client still sends, after
# the answer: long enough for a client to finish writing a body of the largest accepted size
# (1 MiB) on loopback or a LAN and read the answer; short, as it holds no shared resource.
LINGER_SECONDS = 2.0


@cache
def _read_timeout() -> float:
    # uvicorn builds protocols from an import string in each worker process, so the limit is
    # read from the environment there, once, as the worker's app factory reads its settings.
    return load_settings().quoteapi_request_read_timeout_seconds


def _host_problem(http_version: str, headers: list[tuple[bytes, bytes]]) -> str | None:
    """Why the request's Host header breaks RFC 9112 section 3.2, or None: an HTTP/1.1 request
    carries exactly one, any request at most one (two could route it two ways)."""
    hosts = sum(1 for name, _ in headers if name == b"host")  # uvicorn lower-cases the names
    if hosts > 1:
        return f"Send one Host header; this request has {hosts} (RFC 9112, section 3.2)."
    if hosts == 0 and http_version == "1.1":
        return "An HTTP/1.1 request must carry a Host header (RFC 9112, section 3.2)."
    return None


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """httptools HTTP/1.1 with a deadline for receiving each request and a cap on its head."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._read_deadline: asyncio.TimerHandle | None = None
        self._in_head = True  # the next bytes belong to a request head not yet complete
        self._heads_begun = 0  # tells whether a read began and ended in the same head
        self._head_bytes = 0  # of the current head, as the parser reports them
        self._head_reads = 0  # of the current head, in reads that began and ended inside it
        self._request_started = False  # some bytes of the current request have arrived
        self._refused = False  # answered by this protocol: nothing more reaches the app
        self._held_answer: bytes | None = None  # a refusal waiting for earlier answers
        self._linger: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[arg-type]
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self._linger is not None:
            self._linger.cancel()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:  # the rest of a refused connection is dropped unparsed
            return
        head = self._heads_begun if self._in_head else None
        super().data_received(data)
        if self._refused:
            return
        # The parser reports a header only once its line is complete (httptools buffers it):
        # a read that began and ended inside the same head is all head, which bounds that buffer.
        if head == self._heads_begun and self._in_head and self._request_started:
            self._head_reads += len(data)
            if self._head_reads > MAX_HEAD_BYTES:
                self._refuse_head()
                return
        # uvicorn cancels its keep-alive timer on any byte received, but bytes that begin no
        # request (the CRLFs the parser skips between requests) arm nothing: arm the deadline.
        idle = self.cycle is None or self.cycle.response_complete
        if idle and self._read_deadline is None and not self.transport.is_closing():
            self._arm()

    # Parser callbacks. The head is counted where the parser reports it, in whatever reads it
    # arrived: with the end of a previous body, with the start of its own, or with a whole
    # request. Once refused, the rest of the read still runs through the parser: every callback
    # then does nothing, so no app starts and no body reaches one.

    def on_message_begin(self) -> None:
        if self._refused:
            return
        super().on_message_begin()
        self._in_head = True
        self._heads_begun += 1
        self._head_bytes = self._head_reads = 0
        self._request_started = True
        if self._read_deadline is None:  # the first request's deadline runs from the connect
            self._arm()

    def on_url(self, url: bytes) -> None:
        if not self._refused:
            super().on_url(url)
            self._count_head(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self._refused:
            super().on_header(name, value)
            self._count_head(len(name) + len(value) + 3)  # "name:value\r\n" at the least

    def on_headers_complete(self) -> None:
        if self._refused:
            return
        self._in_head = False
        if (wrong := _host_problem(self.parser.get_http_version(), self.headers)) is not None:
            self._refuse(400, BAD_REQUEST, wrong)
            return
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if not self._refused:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if self._refused:
            return
        self._disarm()
        self._in_head = True
        self._head_bytes = self._head_reads = 0
        self._request_started = False
        super().on_message_complete()

    def _count_head(self, size: int) -> None:
        self._head_bytes += size
        if self._head_bytes > MAX_HEAD_BYTES:
            self._refuse_head()

    def _refuse_head(self) -> None:
        self._refuse(431, HEADERS_TOO_LARGE, f"Send at most {MAX_HEAD_BYTES} bytes.")

    def _arm(self) -> None:
        self._disarm()
        self._read_deadline = self.loop.call_later(_read_timeout(), self._read_timed_out)

    def _disarm(self) -> None:
        if self._read_deadline is not None:
            self._read_deadline.cancel()
            self._read_deadline = None

    def _read_timed_out(self) -> None:
        self._read_deadline = None
        if self.transport.is_closing():
            return
        if self._in_head and self._request_started:
            self._refuse(408, REQUEST_TIMEOUT, "Send the whole request promptly.")
        else:  # nothing sent yet, or the app is already reading a body: just hang up
            self.transport.close()

    def on_response_complete(self) -> None:
        super().on_response_complete()  # starts the next pipelined request, if one waits
        if self.transport.is_closing():  # that response closed the connection
            self._held_answer = None
        elif self._held_answer is not None and self.cycle.response_complete:
            self._answer_and_close(self._held_answer)

    def _refuse(self, status: int, problem: Problem, detail: str) -> None:
        """Answer before any app sees the request, after the answers to requests pipelined
        before it, then close."""
        self._refused = True
        self._disarm()
        self.logger.warning("event=http_request_refused status=%s", status)
        body = json.dumps(problem_body(problem, detail, None)).encode()
        head = (
            f"content-type: {PROBLEM_MEDIA_TYPE}\r\ncontent-length: {len(body)}\r\n"
            "connection: close\r\n\r\n"
        )
        answer = STATUS_LINE[status] + head.encode() + body
        if self.pipeline or (self.cycle is not None and not self.cycle.response_complete):
            self._held_answer = answer
        else:
            self._answer_and_close(answer)

    def _answer_and_close(self, answer: bytes) -> None:
        self._held_answer = None
        self._unset_keepalive_if_required()
        self.transport.write(answer)
        if not self.transport.can_write_eof():
            self.transport.close()
            return
        # Closing with unread bytes would send a reset, which can destroy the answer before the
        # client reads it: half-close, and let the client's own close (or the linger) end it.
        self.transport.write_eof()
        self._linger = self.loop.call_later(LINGER_SECONDS, self.transport.close)
