"""Reading requests, held to the edge's limits (the package's docstring lists them);
`quoteapi.edge.protocol` answers and closes."""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import httptools
from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from quoteapi.edge.heads import coding_problem, host_problem, parser_past_upgrade
from quoteapi.edge.limits import (
    LINGER_MAX_BYTES,
    MAX_FIELDS,
    MAX_HEAD_BYTES,
    MAX_QUEUED_REQUESTS,
    MAX_TARGET_BYTES,
    PARSE_SLICE_BYTES,
    EdgeLimits,
)
from quoteapi.problems import BAD_REQUEST, Problem

REQUEST_TIMEOUT = Problem(408, "request-timeout", "Request not received in time")
HEADERS_TOO_LARGE = Problem(431, "headers-too-large", "Request headers too large")
URI_TOO_LONG = Problem(414, "uri-too-long", "Request target too long")
TRANSFER_CODING_NOT_IMPLEMENTED = Problem(
    501, "transfer-coding-not-implemented", "Transfer coding not implemented"
)


class Reading(enum.Enum):
    """What the connection expects to read next: IDLE -> HEAD -> BODY (-> TRAILERS -> BODY ...)
    -> IDLE; any state may end in DROPPING."""

    IDLE = "idle"  # the first byte of the next request
    HEAD = "head"  # the rest of a request head; no app has it yet
    BODY = "body"  # the body of a request the app has (content, or chunks and their size lines)
    TRAILERS = "trailers"  # after a chunk's size line: its data (back to BODY) or the trailers
    DROPPING = "dropping"  # nothing more is parsed: refused, or closing after its last answer


class RequestReading(HttpToolsProtocol):
    """uvicorn's httptools protocol, its reading held to the edge's limits: a request that
    passes one is refused."""

    def __init__(self, *args: Any, limits: EdgeLimits, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limits = limits
        self._reading = Reading.IDLE
        self._unparsed: bytes | memoryview = b""  # read, not parsed while the queue is full
        # The field section being read (a head, or what follows a chunk's size line): bytes the
        # parser reported, bytes it took without a callback (an unfinished line), field lines.
        self._section_bytes = self._unheard_bytes = self._fields = self._target_bytes = 0
        self._dropped_bytes = 0
        self._read_deadline: asyncio.TimerHandle | None = None
        # Since when the connection has handed the app no request (idle, or still sending a
        # head: dribbling one never counts as busy); None while busy. The cap evicts by it.
        self.waiting_since: float | None = None

    if TYPE_CHECKING:  # the connection's own (quoteapi.edge.protocol)

        def _refuse(self, problem: Problem, detail: str) -> None: ...
        def _busy(self) -> bool: ...
        def close(self) -> None: ...

    @property
    def closing(self) -> bool:
        return self.transport.is_closing()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[arg-type]
        self.flow = _ReadGate(self.transport, self._holding_reads)
        self.waiting_since = self.loop.time()
        self._arm_read_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_read_deadline()
        self.waiting_since = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._reading is Reading.DROPPING:
            self._dropped_bytes += len(data)
            if self._dropped_bytes > LINGER_MAX_BYTES and self.transport.is_reading():
                self.transport.pause_reading()
            return
        self._unset_keepalive_if_required()
        self._unparsed = bytes(self._unparsed) + data if self._unparsed else data
        self._parse()
        # uvicorn cancels its keep-alive timer on any byte received, but bytes that begin no
        # request (the CRLFs the parser skips between requests) arm nothing: arm the deadline.
        idle = self._reading is Reading.IDLE and not self._busy()
        if idle and self._read_deadline is None and not self.closing:
            self._arm_read_deadline()

    def _holding_reads(self) -> bool:
        return bool(self._unparsed) or bool(self.pipeline)

    def _parse(self) -> None:
        """Feed what was read to the parser, a slice at a time, until the queue is full."""
        while self._unparsed and self._reading is not Reading.DROPPING:
            if len(self.pipeline) >= MAX_QUEUED_REQUESTS:
                self.flow.pause_reading()
                return
            data = self._unparsed
            if len(data) > PARSE_SLICE_BYTES:
                view = memoryview(data)
                data, self._unparsed = view[:PARSE_SLICE_BYTES], view[PARSE_SLICE_BYTES:]
            else:
                self._unparsed = b""
            self._feed(data)

    def _feed(self, data: bytes | memoryview) -> None:
        # Every callback that acts zeroes the count: what it still holds, the parser took
        # without a word (an unfinished field line, which httptools buffers, or a chunk's size
        # line and its extensions, which it skips).
        self._unheard_bytes += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            rest = bytes(data[upgrade.args[0] :]) + bytes(self._unparsed)
            if self.cycle.scope["method"] == "CONNECT":  # a tunnel: nothing to read on
                self.drop()
            else:
                self.parser = parser_past_upgrade(self, self.headers)
                self._unparsed = rest
            return
        except httptools.HttpParserError as exc:
            self._refuse(BAD_REQUEST, f"The request is not valid HTTP/1.1 ({exc}).")
            return
        if self._reading is Reading.BODY:
            if self._unheard_bytes > MAX_HEAD_BYTES:
                why = f"Send chunk size lines (extensions too) of at most {MAX_HEAD_BYTES} bytes."
                self._refuse(BAD_REQUEST, why)
        elif self._reading in (Reading.HEAD, Reading.TRAILERS) and (
            self._section_bytes + self._unheard_bytes > MAX_HEAD_BYTES
        ):
            self._refuse_fields(f"{MAX_HEAD_BYTES} bytes")

    def drop(self) -> None:
        """Parse nothing more: what follows is read and dropped (the connection is closing)."""
        self._reading = Reading.DROPPING
        self._unparsed = b""
        self._disarm_read_deadline()
        self.waiting_since = None

    # Parser callbacks. Once dropping, the rest of a slice still runs through the parser: every
    # callback then does nothing, so no app starts and no body reaches one.

    def on_message_begin(self) -> None:
        if self._reading is Reading.DROPPING:
            return
        super().on_message_begin()
        self._heard_from(Reading.HEAD)
        self._target_bytes = self._section_bytes = self._fields = 0
        if self._read_deadline is None:  # the first request's deadline runs from the connect
            self._arm_read_deadline()

    def on_url(self, url: bytes) -> None:
        if self._reading is Reading.DROPPING:
            return
        super().on_url(url)
        self._target_bytes += len(url)  # httptools may report a long target in pieces
        if self._target_bytes > MAX_TARGET_BYTES:
            why = f"Send a request target of at most {MAX_TARGET_BYTES} bytes."
            self._refuse(URI_TOO_LONG, why)
            return
        self._count_field_bytes(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._reading is Reading.DROPPING:
            return
        if self._reading is Reading.HEAD:  # a trailer field is counted, never a header
            super().on_header(name, value)
        self._fields += 1
        if self._fields > MAX_FIELDS:
            self._refuse_fields(f"{MAX_FIELDS} fields")
            return
        self._count_field_bytes(len(name) + len(value) + 3)  # "name:value\r\n" at the least

    def on_headers_complete(self) -> None:
        if self._reading is Reading.DROPPING:
            return
        if (wrong := host_problem(self.parser.get_http_version(), self.headers)) is not None:
            self._refuse(BAD_REQUEST, wrong)
            return
        if (wrong := coding_problem(self.headers)) is not None:
            self._refuse(TRANSFER_CODING_NOT_IMPLEMENTED, wrong)
            return
        self._heard_from(Reading.BODY)
        self.waiting_since = None  # a whole head: the connection is the app's now
        super().on_headers_complete()
        if self.parser.should_upgrade():
            self.cycle.keep_alive = False

    def on_chunk_header(self) -> None:
        if self._reading is not Reading.DROPPING:
            self._heard_from(Reading.TRAILERS)
            self._section_bytes = self._fields = 0

    def on_body(self, body: bytes) -> None:
        if self._reading is not Reading.DROPPING:
            self._heard_from(Reading.BODY)
            super().on_body(body)

    def on_chunk_complete(self) -> None:
        if self._reading is not Reading.DROPPING:
            self._heard_from(Reading.BODY)

    def on_message_complete(self) -> None:
        if self._reading is Reading.DROPPING or self.parser.should_upgrade():
            return  # nothing is read any more; or, past an Upgrade, its body is still to come
        self._heard_from(Reading.IDLE)
        self._disarm_read_deadline()
        super().on_message_complete()

    def _heard_from(self, reading: Reading) -> None:
        self._reading = reading
        self._unheard_bytes = 0

    def _count_field_bytes(self, size: int) -> None:
        self._section_bytes += size
        self._unheard_bytes = 0  # the line it took unheard is told now
        if self._section_bytes > MAX_HEAD_BYTES:
            self._refuse_fields(f"{MAX_HEAD_BYTES} bytes")

    def _refuse_fields(self, limit: str) -> None:
        what = "head" if self._reading is Reading.HEAD else "trailer section"
        self._refuse(HEADERS_TOO_LARGE, f"Send a request {what} of at most {limit}.")

    def _arm_read_deadline(self) -> None:
        self._disarm_read_deadline()
        self._read_deadline = self.loop.call_later(self.limits.read_timeout, self._read_timed_out)

    def _disarm_read_deadline(self) -> None:
        if self._read_deadline is not None:
            self._read_deadline.cancel()
            self._read_deadline = None

    def _read_timed_out(self) -> None:
        self._read_deadline = None
        if self.closing:
            return
        if self.flow.read_paused:  # the server is not reading: the client is not late
            self._arm_read_deadline()
        elif self._reading is Reading.HEAD:
            self._refuse(REQUEST_TIMEOUT, "Send the whole request promptly.")
        else:  # nothing sent yet, or a body too slow for the app reading it: just hang up
            self.close()


class _ReadGate(FlowControl):
    """uvicorn's flow control, except that reading stays paused while `held()`: uvicorn resumes
    reading whenever the app asks for body, which would let pipelined requests pile up."""

    def __init__(self, transport: asyncio.Transport, held: Callable[[], bool]) -> None:
        super().__init__(transport)
        self._held = held

    def resume_reading(self) -> None:
        if self.read_paused and not self._held():
            super().resume_reading()
