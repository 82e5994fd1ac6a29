"""The connection: uvicorn's httptools protocol, held to the edge's limits, with its reading in
one explicit state (`Reading`). What it relies on of uvicorn's own code (the methods it
overrides or calls, the attributes it reads) is pinned by tests/platform/test_edge_internals.py."""

from __future__ import annotations

import asyncio
import enum
import logging
import socket
import uuid
from collections.abc import Callable
from typing import Any

import httptools
from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from quoteapi.edge import heads
from quoteapi.edge.answers import INTERIM_CONTINUE, refusal
from quoteapi.edge.limits import (
    CLIENT_CHECK_SECONDS,
    LINGER_MAX_BYTES,
    LINGER_SECONDS,
    MAX_FIELDS,
    MAX_HEAD_BYTES,
    MAX_QUEUED_REQUESTS,
    MAX_TARGET_BYTES,
    PARSE_SLICE_BYTES,
)
from quoteapi.edge.worker import Worker
from quoteapi.middleware import CLIENT_GONE
from quoteapi.problems import (
    BAD_REQUEST,
    HEADERS_TOO_LARGE,
    REQUEST_TIMEOUT,
    RETRY_AFTER_SECONDS,
    TOO_MANY_CONNECTIONS,
    TRANSFER_CODING_NOT_IMPLEMENTED,
    URI_TOO_LONG,
    Problem,
)

log = logging.getLogger("quoteapi.http")

_TCP_CLOSE = 7  # TCP_INFO's state once the peer reset the connection (Linux)


class Reading(enum.Enum):
    """What the connection expects to read next. Every request goes IDLE -> HEAD -> BODY (->
    TRAILERS -> BODY ...) -> IDLE; any state may end in DROPPING."""

    IDLE = "idle"  # the first byte of the next request (none of it read yet)
    HEAD = "head"  # the rest of a request head; no app has it yet
    BODY = "body"  # the body of a request the app has (content, or chunks and their size lines)
    TRAILERS = "trailers"  # after a chunk's size line: its data (back to BODY) or the trailers
    DROPPING = "dropping"  # nothing more is parsed: refused, or closing after its last answer


class EdgeProtocol(HttpToolsProtocol):
    """httptools HTTP/1.1 with deadlines both ways, bounded memory, a connection cap and strict
    framing (the package's docstring says each limit)."""

    def __init__(self, *args: Any, worker: Worker, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._worker = worker
        self._limits = worker.limits
        self._reading = Reading.IDLE
        self._unparsed: bytes | memoryview = b""  # read, not parsed while the queue is full
        # The current field section (a head, or what follows a chunk's size line): bytes the
        # parser reported, bytes it took without a word (an unfinished line), field lines.
        self._section_bytes = self._unheard_bytes = self._fields = self._target_bytes = 0
        self._heard = 0  # parser callbacks acted on, to tell a slice taken without a word
        self._dropped_bytes = 0
        self._running: RequestResponseCycle | None = None  # the request the app is answering
        self._running_task: asyncio.Task[None] | None = None  # the app answering it
        self._keep_alive_after_body: bool | None = None  # the request's own, once its body ends
        self._held_answer: bytes | None = None  # a refusal waiting for earlier answers
        self._writes_resumed = 0
        self._read_deadline: asyncio.TimerHandle | None = None
        self._write_deadline: asyncio.TimerHandle | None = None
        self._linger: asyncio.TimerHandle | None = None
        self._client_check: asyncio.TimerHandle | None = None
        # Since when the connection has handed the app no request (idle, or still sending a
        # head: a client dribbling one never counts as busy); None while it is busy. The cap's.
        self.waiting_since: float | None = None

    @property
    def closing(self) -> bool:
        return self.transport.is_closing()

    # --- the connection ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[arg-type]
        self.flow = _ReadGate(self.transport, self._holding_reads)
        self.waiting_since = self.loop.time()
        self._arm_read_deadline()
        if len(self.connections) > self._limits.max_connections:
            others = [c for c in self.connections if isinstance(c, EdgeProtocol) and c is not self]
            evicted = self._worker.make_room(others, self.loop.time())
            if evicted is not None:
                evicted.close()
            else:
                self._refuse(
                    TOO_MANY_CONNECTIONS,
                    "The server holds as many connections as it can; retry shortly.",
                    headers={"retry-after": str(RETRY_AFTER_SECONDS)},
                    logged=False,  # the cap's own warning counts them
                )

    def connection_lost(self, exc: Exception | None) -> None:
        for timer in (self._read_deadline, self._write_deadline, self._linger, self._client_check):
            if timer is not None:
                timer.cancel()
        self._read_deadline = self._write_deadline = self._linger = self._client_check = None
        self.waiting_since = None
        self._worker.forget(self)
        running, task = self._running, self._running_task
        if running is not None and task is not None and not running.response_started:
            # The client left before its answer began: give up what the request waits for
            # (a database slot, a lock, a statement) rather than hold it for nobody.
            running.scope[CLIENT_GONE] = True  # type: ignore[literal-required]
            task.cancel()
        super().connection_lost(exc)

    def eof_received(self) -> bool:  # type: ignore[override]  # asyncio.Protocol allows it
        """The client sends no more (a half-close): answer the whole requests it sent, then
        close. A request cut off by the EOF can never complete: close now. While an answer has
        not begun, probe whether the client left (CLIENT_CHECK_SECONDS)."""
        if self._reading in (Reading.HEAD, Reading.BODY, Reading.TRAILERS) or not self._busy():
            return False
        if self.cycle is not None:
            self.cycle.keep_alive = False  # the last request's answer closes the connection
        running = self._running
        if (
            running is not None
            and not running.response_started
            and running.scope["http_version"] == "1.1"
            and hasattr(socket, "TCP_INFO")  # Linux
        ):
            self.transport.write(INTERIM_CONTINUE)
            self._client_check = self.loop.call_later(CLIENT_CHECK_SECONDS, self._check_client)
        return True

    def _check_client(self) -> None:
        """Until the answer begins: a client that reset the connection has left; closing it
        cancels its request (`connection_lost`)."""
        self._client_check = None
        running = self._running
        if running is None or running.response_started or self.closing:
            return
        sock = self.transport.get_extra_info("socket")
        if sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0] == _TCP_CLOSE:
            self.transport.abort()
        else:
            self._client_check = self.loop.call_later(CLIENT_CHECK_SECONDS, self._check_client)

    def _busy(self) -> bool:
        running = self._running
        return bool(self.pipeline) or (
            running is not None and not running.response_complete and not running.disconnected
        )

    def close(self) -> None:
        """Close once the output is out; the write deadline covers a client that takes none."""
        self.transport.close()
        if self.transport.get_write_buffer_size():
            self._watch_output()

    def timeout_keep_alive_handler(self) -> None:
        if not self.closing:
            self.close()

    def shutdown(self) -> None:
        if self.cycle is None or self.cycle.response_complete:
            self.close()
        else:
            super().shutdown()

    # --- reading -----------------------------------------------------------------------------

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
        heard = self._heard
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            self._read_past_upgrade(bytes(data[upgrade.args[0] :]))
            return
        except httptools.HttpParserError as exc:
            self._refuse(BAD_REQUEST, f"The request is not valid HTTP/1.1 ({exc}).")
            return
        if self._heard != heard or self._reading in (Reading.IDLE, Reading.DROPPING):
            return
        # The parser took the whole slice without a word: an unfinished field line (which
        # httptools buffers), or a chunk's size line and its extensions (which it skips).
        self._unheard_bytes += len(data)
        if self._reading is Reading.BODY:
            if self._unheard_bytes > MAX_HEAD_BYTES:
                why = f"Send chunk size lines (extensions too) of at most {MAX_HEAD_BYTES} bytes."
                self._refuse(BAD_REQUEST, why)
        elif self._section_bytes + self._unheard_bytes > MAX_HEAD_BYTES:
            self._refuse_fields(f"{MAX_HEAD_BYTES} bytes")

    def _read_past_upgrade(self, rest: bytes) -> None:
        """httptools stops at the head of a request that asks to upgrade. Its Upgrade is ignored
        (RFC 9110, section 7.8: there is no other protocol here) and its answer closes the
        connection: a parser of its own reads the body on, framed as the head said."""
        rest += bytes(self._unparsed)
        self._unparsed = b""
        if self.cycle.scope["method"] == "CONNECT":  # a tunnel asked for: nothing to read on
            self._drop()
            return
        self.parser = httptools.HttpRequestParser(_BodyPastUpgrade(self))
        self.parser.feed_data(b"POST / HTTP/1.1\r\n%s\r\n\r\n" % heads.framing(self.headers))
        self._unparsed = rest

    def _drop(self) -> None:
        """Parse nothing more: what follows is read and dropped (the connection is closing)."""
        self._reading = Reading.DROPPING
        self._unparsed = b""
        self._disarm_read_deadline()
        self.waiting_since = None

    # Parser callbacks. Once dropping, the rest of a slice still runs through the parser: every
    # callback then does nothing, so no app starts and no body reaches one. Each one that does
    # something was heard from (`_unheard_bytes` starts again).

    def on_message_begin(self) -> None:
        if self._reading is Reading.DROPPING:
            return
        super().on_message_begin()
        self._heard += 1
        self._reading = Reading.HEAD
        self._target_bytes = 0
        self._begin_section()
        if self._read_deadline is None:  # the first request's deadline runs from the connect
            self._arm_read_deadline()

    def on_url(self, url: bytes) -> None:
        if self._reading is Reading.DROPPING:
            return
        super().on_url(url)
        self._heard += 1
        self._target_bytes += len(url)  # httptools may report a long target in pieces
        if self._target_bytes > MAX_TARGET_BYTES:
            self._refuse(
                URI_TOO_LONG, f"Send a request target of at most {MAX_TARGET_BYTES} bytes."
            )
            return
        self._count_field_bytes(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._reading is Reading.DROPPING:
            return
        if self._reading is Reading.HEAD:  # a trailer field is counted, never a header
            super().on_header(name, value)
        self._heard += 1
        self._fields += 1
        if self._fields > MAX_FIELDS:
            self._refuse_fields(f"{MAX_FIELDS} fields")
            return
        self._count_field_bytes(len(name) + len(value) + 3)  # "name:value\r\n" at the least

    def on_headers_complete(self) -> None:
        if self._reading is Reading.DROPPING:
            return
        if (wrong := heads.host_problem(self.parser.get_http_version(), self.headers)) is not None:
            self._refuse(BAD_REQUEST, wrong)
            return
        if (wrong := heads.coding_problem(self.headers)) is not None:
            self._refuse(TRANSFER_CODING_NOT_IMPLEMENTED, wrong)
            return
        self._heard += 1
        self._reading = Reading.BODY
        self._unheard_bytes = 0
        self.waiting_since = None  # a whole head: the connection is the app's now
        super().on_headers_complete()
        if self.parser.should_upgrade():
            self.cycle.keep_alive = False
        elif heads.has_body(self.headers):
            # An answer that begins before the body has arrived whole closes the connection (its
            # head says so): what the client still sends, if it sends it at all (a refused
            # `Expect: 100-continue`), is never taken for the next request, nor read for nothing.
            self._keep_alive_after_body = self.cycle.keep_alive
            self.cycle.keep_alive = False
            self.cycle.transport = _LingeringClose(self)  # type: ignore[assignment]

    def on_chunk_header(self) -> None:
        if self._reading is not Reading.DROPPING:
            self._heard += 1
            self._reading = Reading.TRAILERS
            self._begin_section()

    def on_body(self, body: bytes) -> None:
        if self._reading is not Reading.DROPPING:
            self._heard += 1
            self._reading = Reading.BODY
            self._unheard_bytes = 0
            super().on_body(body)

    def on_chunk_complete(self) -> None:
        if self._reading is not Reading.DROPPING:
            self._heard += 1
            self._reading = Reading.BODY
            self._unheard_bytes = 0

    def on_message_complete(self) -> None:
        if self._reading is Reading.DROPPING or self.parser.should_upgrade():
            return  # nothing is read any more; or, past an Upgrade, its body is still to come
        self._heard += 1
        self._reading = Reading.IDLE
        self._disarm_read_deadline()
        if self._keep_alive_after_body is not None and not self.cycle.response_started:
            self.cycle.keep_alive = self._keep_alive_after_body
        self._keep_alive_after_body = None
        super().on_message_complete()

    def _begin_section(self) -> None:
        self._section_bytes = self._unheard_bytes = self._fields = 0

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
        self._read_deadline = self.loop.call_later(self._limits.read_timeout, self._read_timed_out)

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

    # --- answering ---------------------------------------------------------------------------

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: Any) -> None:
        # As uvicorn's, but the task is kept: a client that leaves cancels it.
        self._running = cycle
        self._running_task = self.loop.create_task(cycle.run_asgi(app))
        self._running_task.add_done_callback(self.tasks.discard)
        self.tasks.add(self._running_task)

    def on_response_complete(self) -> None:
        super().on_response_complete()  # starts the next pipelined request, if one waits
        if self.closing:  # that response closed the connection
            self._held_answer = None
            if self.transport.get_write_buffer_size():
                self._watch_output()
            return
        if self._held_answer is not None:
            if not self._busy():
                self._answer_and_close(self._held_answer)
            return
        if self._unparsed:  # requests left unparsed while the queue was full: on with them
            self._unset_keepalive_if_required()
            self._parse()
        self.flow.resume_reading()  # uvicorn asked before it took the next from the queue
        if not self._busy() and self._reading is Reading.IDLE:
            self.waiting_since = self.loop.time()
            if self.timeout_keep_alive_task is None and not self._unparsed:
                self.timeout_keep_alive_task = self.loop.call_later(
                    self.timeout_keep_alive, self.timeout_keep_alive_handler
                )

    def close_after_answer(self) -> None:
        """Close after an answer: at once when its request arrived whole, else once the client
        read it (its body, still coming, is dropped meanwhile, within the linger's bounds)."""
        if self._reading not in (Reading.BODY, Reading.TRAILERS):
            self.transport.close()
            return
        self._drop()
        self._answer_and_close(b"")

    def pause_writing(self) -> None:
        super().pause_writing()
        self._watch_output()

    def resume_writing(self) -> None:
        super().resume_writing()
        self._writes_resumed += 1

    def _watch_output(self) -> None:
        if self._write_deadline is None:
            self._write_deadline = self.loop.call_later(
                self._limits.write_timeout,
                self._check_output,
                self.transport.get_write_buffer_size(),
                self._writes_resumed,
            )

    def _check_output(self, pending_before: int, resumed_before: int) -> None:
        """Abort when the client took none of the output since the watch began: writing stayed
        paused throughout, or a closing connection's output did not shrink."""
        self._write_deadline = None
        pending = self.transport.get_write_buffer_size()
        if not pending:
            return
        if self.flow.write_paused:
            stalled = self._writes_resumed == resumed_before
        elif self.closing:
            stalled = pending >= pending_before
        else:  # flowing again, under the high-water mark: pause_writing watches anew
            return
        if not stalled:
            self._watch_output()
            return
        log.warning("event=write_timeout pending_bytes=%s", pending)
        # Before the transport reports the loss: an app still sending must find its client
        # gone, not a closed transport.
        for cycle in (self._running, self.cycle):
            if cycle is not None and not cycle.response_complete:
                cycle.disconnected = True
                cycle.message_event.set()
        self.transport.abort()

    def _refuse(
        self,
        problem: Problem,
        detail: str,
        *,
        headers: dict[str, str] | None = None,
        logged: bool = True,
    ) -> None:
        """Answer `problem` for the request being read, after the answers to the requests
        pipelined before it, then close. A request already handed to the app (its body or
        trailers were being read) is taken back from the queue, or its app is told the client
        left (it answers nobody); one the app has begun to answer gets no second answer."""
        handed_over = self._reading in (Reading.BODY, Reading.TRAILERS)
        self._drop()
        request_id = uuid.uuid4().hex
        if logged:
            log.warning(
                "event=http_request_refused status=%s code=%s request_id=%s",
                problem.status,
                problem.code,
                request_id,
            )
        answer = refusal(problem, detail, request_id, headers or {})
        cycle = self.cycle
        if handed_over and cycle is not None:
            queued = [entry for entry in self.pipeline if entry[0] is cycle]
            if queued:
                self.pipeline.remove(queued[0])
            elif cycle.response_started:
                answer = b""
            else:
                cycle.disconnected = True
                cycle.message_event.set()
        if self._busy():
            self._held_answer = answer
        else:
            self._answer_and_close(answer)

    def _answer_and_close(self, answer: bytes) -> None:
        self._held_answer = None
        self._unset_keepalive_if_required()
        if answer:
            self.transport.write(answer)
        if not self.transport.can_write_eof():
            self.close()
            return
        # Closing with unread bytes would send a reset, which can destroy the answer before the
        # client reads it: half-close, and let the client's own close (or the linger) end it.
        self.transport.write_eof()
        self._linger = self.loop.call_later(LINGER_SECONDS, self.close)
        self._worker.linger(self)


class _ReadGate(FlowControl):
    """uvicorn's flow control, except that reading stays paused while `held()`: uvicorn resumes
    reading whenever the app asks for body, which would let pipelined requests pile up."""

    def __init__(self, transport: asyncio.Transport, held: Callable[[], bool]) -> None:
        super().__init__(transport)
        self._held = held

    def resume_reading(self) -> None:
        if self.read_paused and not self._held():
            super().resume_reading()


class _LingeringClose:
    """The transport as the cycle of a request with a body sees it: uvicorn closes it after an
    answer that began before the body arrived whole, and closing a socket the client still
    writes to would reset it, destroying the answer: the close lingers instead."""

    def __init__(self, connection: EdgeProtocol) -> None:
        self._connection = connection

    def __getattr__(self, name: str) -> Any:
        return getattr(self._connection.transport, name)

    def close(self) -> None:
        self._connection.close_after_answer()


class _BodyPastUpgrade:
    """Parser callbacks for the rest of a request that asked to upgrade, which httptools does
    not read: the head that frames it for a parser of its own is dropped, its body and trailers
    go to the connection, and nothing after it is read (its answer closes the connection)."""

    def __init__(self, connection: EdgeProtocol) -> None:
        self.connection = connection
        self.head_done = False

    def on_headers_complete(self) -> None:
        self.head_done = True

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.head_done:  # a trailer field
            self.connection.on_header(name, value)

    def on_body(self, body: bytes) -> None:
        self.connection.on_body(body)

    def on_chunk_header(self) -> None:
        self.connection.on_chunk_header()

    def on_chunk_complete(self) -> None:
        self.connection.on_chunk_complete()

    def on_message_complete(self) -> None:
        self.connection.on_message_complete()
        self.connection._drop()
