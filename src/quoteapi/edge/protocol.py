"""The connection: answers in order, refusals, the connection cap, the write deadline, the
half-close and the lingering close (the package's docstring says what each does for a client)."""

from __future__ import annotations

import asyncio
import socket
import uuid
from http import HTTPStatus
from typing import Any

from starlette.responses import JSONResponse
from uvicorn.protocols.http.httptools_impl import RequestResponseCycle

from quoteapi.edge.heads import has_body
from quoteapi.edge.limits import LINGER_SECONDS, Worker
from quoteapi.edge.reading import Reading, RequestReading
from quoteapi.logs import EventLog
from quoteapi.middleware import CLIENT_GONE
from quoteapi.problems import PROBLEM_MEDIA_TYPE, RETRY_AFTER_SECONDS, Problem, problem_body

log = EventLog("quoteapi.http")

TOO_MANY_CONNECTIONS = Problem(503, "too-many-connections", "Too many connections")

LEAVE_PROBE_SECONDS = 0.1  # after a half-close, how often the client is checked for a reset
_TCP_CLOSE = 7  # TCP_INFO's state once the peer reset the connection (Linux)


class EdgeProtocol(RequestReading):
    def __init__(self, *args: Any, worker: Worker, **kwargs: Any) -> None:
        super().__init__(*args, limits=worker.limits, **kwargs)
        self._worker = worker
        self._running: RequestResponseCycle | None = None  # the request the app is answering
        self._running_task: asyncio.Task[None] | None = None
        self._held_answer: bytes | None = None  # a refusal waiting for earlier answers
        self._linger: asyncio.TimerHandle | None = None
        self._leave_probe: asyncio.TimerHandle | None = None
        self._write_deadline: asyncio.TimerHandle | None = None
        self._writes_resumed = 0  # times writing resumed: the client took some output

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if len(self.connections) > self.limits.max_connections:
            others = [c for c in self.connections if isinstance(c, EdgeProtocol) and c is not self]
            evicted = self._worker.make_room(others, self.loop.time())
            if evicted is not None:
                evicted.close()
            else:
                why = "The server holds as many connections as it can; retry shortly."
                retry = {"retry-after": str(RETRY_AFTER_SECONDS)}
                # Not logged: the cap's own warning counts them.
                self._refuse(TOO_MANY_CONNECTIONS, why, headers=retry, logged=False)

    def connection_lost(self, exc: Exception | None) -> None:
        for timer in (self._write_deadline, self._leave_probe, self._linger):
            if timer is not None:
                timer.cancel()
        self._worker.forget(self)
        running, task = self._running, self._running_task
        if running is not None and task is not None and not running.response_started:
            # The client left before its answer began: give up what the request waits for
            # (a database slot, a lock, a statement) rather than hold it for nobody.
            running.scope[CLIENT_GONE] = True  # type: ignore[literal-required]
            task.cancel()
        super().connection_lost(exc)

    def eof_received(self) -> bool:  # type: ignore[override]  # asyncio.Protocol allows it
        """The client sends no more: answer the whole requests it sent, then close. A request
        cut off by the EOF can never complete: close now."""
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
            # A FIN cannot tell a half-close (the client still reads) from a client that left:
            # bytes sent to it can, which a closed socket answers with a reset. An interim 100
            # (Continue) is read past by every HTTP/1.1 client (RFC 9110, section 15.2).
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            self._leave_probe = self.loop.call_later(LEAVE_PROBE_SECONDS, self._probe_leave)
        return True

    def _probe_leave(self) -> None:
        running, transport = self._running, self.transport
        if running is None or running.response_started or transport.is_closing():
            return
        sock = transport.get_extra_info("socket")
        if sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0] == _TCP_CLOSE:
            transport.abort()  # the client left: connection_lost cancels its request
        else:
            self._leave_probe = self.loop.call_later(LEAVE_PROBE_SECONDS, self._probe_leave)

    def _busy(self) -> bool:
        running = self._running
        return bool(self.pipeline) or (
            running is not None and not running.response_complete and not running.disconnected
        )

    def close(self) -> None:
        """Close once the output is out; the write deadline covers a client that takes none."""
        self.transport.close()
        if self.transport.get_write_buffer_size():
            self._watch_writes()

    def abort(self) -> None:
        """Abort; an app still answering finds its client gone, not a closed transport."""
        for cycle in (self._running, self.cycle):
            if cycle is not None and not cycle.response_complete:
                cycle.disconnected = True
                cycle.message_event.set()
        self.transport.abort()

    def timeout_keep_alive_handler(self) -> None:
        if not self.closing:
            self.close()

    def shutdown(self) -> None:
        if self.cycle is None or self.cycle.response_complete:
            self.close()
        else:
            super().shutdown()

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        if (
            self._reading is Reading.BODY
            and not self.parser.should_upgrade()
            and has_body(self.headers)
        ):
            # An answer that begins before the body has arrived whole closes the connection (its
            # head says so): what the client still sends, if it sends it at all (a refused
            # `Expect: 100-continue`), is never taken for the next request, nor read for nothing.
            self.cycle.transport = _LingeringClose(self, self.cycle.keep_alive)  # type: ignore[assignment]
            self.cycle.keep_alive = False

    def on_message_complete(self) -> None:
        super().on_message_complete()
        if self._reading is Reading.IDLE:  # the body is whole: its own keep-alive again
            transport = self.cycle.transport
            if isinstance(transport, _LingeringClose) and not self.cycle.response_started:
                self.cycle.keep_alive = transport.keep_alive

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
                self._watch_writes()
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
        self.drop()
        self._answer_and_close(b"")

    def pause_writing(self) -> None:
        super().pause_writing()
        self._watch_writes()

    def resume_writing(self) -> None:
        super().resume_writing()
        self._writes_resumed += 1

    def _watch_writes(self) -> None:
        """Unless it runs, start the write deadline: a client that takes none of the output for
        `write_timeout` (writing stays paused, or a closing connection's output does not shrink)
        is cut, so that it cannot hold the connection for good."""
        if self._write_deadline is None:
            self._write_deadline = self.loop.call_later(
                self.limits.write_timeout,
                self._check_writes,
                self.transport.get_write_buffer_size(),
                self._writes_resumed,
            )

    def _check_writes(self, pending_before: int, resumed_before: int) -> None:
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
            self._watch_writes()
            return
        log.warning("write_timeout", pending_bytes=pending)
        self.abort()

    def _refuse(
        self,
        problem: Problem,
        detail: str,
        *,
        headers: dict[str, str] | None = None,
        logged: bool = True,
    ) -> None:
        """Answer `problem` for the request being read, after the answers to the requests
        pipelined before it, then close. A request already handed to the app is taken back from
        the queue, or its app is told the client left; one the app has begun to answer gets no
        second answer."""
        handed_over = self._reading in (Reading.BODY, Reading.TRAILERS)
        self.drop()
        request_id = uuid.uuid4().hex
        if logged:
            log.warning(
                "http_request_refused",
                status=problem.status,
                code=problem.code,
                request_id=request_id,
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
        """Write `answer`, then half-close and drop what the client still sends until it closes
        or the linger ends: closing with unread bytes sends a reset, which can destroy the
        answer before the client reads it (RFC 9112, section 9.6)."""
        self._held_answer = None
        self._unset_keepalive_if_required()
        if answer:
            self.transport.write(answer)
        if not self.transport.can_write_eof():
            self.close()
            return
        self.transport.write_eof()
        self._linger = self.loop.call_later(LINGER_SECONDS, self.close)
        self._worker.linger(self)


class _LingeringClose:
    """The transport as the cycle of a request with a body sees it: uvicorn closes it after an
    answer that began before the body arrived whole, and then the close lingers instead."""

    def __init__(self, connection: EdgeProtocol, keep_alive: bool) -> None:
        self._connection = connection
        self.keep_alive = keep_alive  # the request's own, for when its body arrives whole

    def __getattr__(self, name: str) -> Any:
        return getattr(self._connection.transport, name)

    def close(self) -> None:
        self._connection.close_after_answer()


def refusal(problem: Problem, detail: str, request_id: str, headers: dict[str, str]) -> bytes:
    """A whole `problem` answer that closes the connection, written without the app."""
    fields = {"x-request-id": request_id, **headers, "connection": "close"}
    body = problem_body(problem, detail, request_id)
    response = JSONResponse(body, problem.status, fields, media_type=PROBLEM_MEDIA_TYPE)
    status = b"HTTP/1.1 %d %s" % (problem.status, HTTPStatus(problem.status).phrase.encode())
    head = [status, *(b"%s: %s" % field for field in response.raw_headers)]
    return b"\r\n".join([*head, b"", response.body])
