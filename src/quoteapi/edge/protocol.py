"""The connection: reading as `quoteapi.edge.reading` does, answering pipelined requests in
order, refusing with problem+json, the connection cap, the write deadline, the half-close and
the lingering close. What it relies on of uvicorn is pinned by
tests/platform/test_edge_internals.py."""

from __future__ import annotations

import asyncio
import uuid
from http import HTTPStatus
from typing import Any

from uvicorn.protocols.http.httptools_impl import RequestResponseCycle

from quoteapi.edge import heads
from quoteapi.edge.half_close import LeaveProbe
from quoteapi.edge.lingering import LINGER_SECONDS, LingeringClose
from quoteapi.edge.reading import Reading, RequestReading
from quoteapi.edge.worker import Worker
from quoteapi.edge.write_deadline import WriteDeadline
from quoteapi.logs import EventLog
from quoteapi.middleware import CLIENT_GONE, problem_answer
from quoteapi.problems import RETRY_AFTER_SECONDS, TOO_MANY_CONNECTIONS, Problem

log = EventLog("quoteapi.http")


class EdgeProtocol(RequestReading):
    """httptools HTTP/1.1 with deadlines both ways, bounded memory, a connection cap and strict
    framing (the package's docstring says each limit and where it lives)."""

    def __init__(self, *args: Any, worker: Worker, **kwargs: Any) -> None:
        super().__init__(*args, limits=worker.limits, **kwargs)
        self._worker = worker
        self._running: RequestResponseCycle | None = None  # the request the app is answering
        self._running_task: asyncio.Task[None] | None = None
        self._held_answer: bytes | None = None  # a refusal waiting for earlier answers
        self._keep_alive_after_body: bool | None = None  # the request's own, once its body ends
        self._linger: asyncio.TimerHandle | None = None
        self._write_deadline = WriteDeadline(self)
        self._leave_probe = LeaveProbe(self, lambda: self._running)

    # --- the connection ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if len(self.connections) > self.limits.max_connections:
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
        self._write_deadline.cancel()
        self._leave_probe.cancel()
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None
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
        self._leave_probe.start()
        return True

    def _busy(self) -> bool:
        running = self._running
        return bool(self.pipeline) or (
            running is not None and not running.response_complete and not running.disconnected
        )

    def close(self) -> None:
        """Close once the output is out; the write deadline covers a client that takes none."""
        self.transport.close()
        if self.transport.get_write_buffer_size():
            self._write_deadline.watch()

    def abort(self) -> None:
        """Abort, first telling each app still answering that its client left (an app still
        sending must find its client gone, not a closed transport)."""
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

    # --- answering ---------------------------------------------------------------------------

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        if (
            self._reading is Reading.BODY
            and not self.parser.should_upgrade()
            and heads.has_body(self.headers)
        ):
            # An answer that begins before the body has arrived whole closes the connection (its
            # head says so): what the client still sends, if it sends it at all (a refused
            # `Expect: 100-continue`), is never taken for the next request, nor read for nothing.
            self._keep_alive_after_body = self.cycle.keep_alive
            self.cycle.keep_alive = False
            self.cycle.transport = LingeringClose(self)  # type: ignore[assignment]

    def on_message_complete(self) -> None:
        super().on_message_complete()
        if self._reading is Reading.IDLE and self._keep_alive_after_body is not None:
            if not self.cycle.response_started:
                self.cycle.keep_alive = self._keep_alive_after_body
            self._keep_alive_after_body = None

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
                self._write_deadline.watch()
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
        self._write_deadline.watch()

    def resume_writing(self) -> None:
        super().resume_writing()
        self._write_deadline.resumed()

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
        self._held_answer = None
        self._unset_keepalive_if_required()
        if answer:
            self.transport.write(answer)
        if not self.transport.can_write_eof():
            self.close()
            return
        self.transport.write_eof()  # the lingering close (quoteapi.edge.lingering)
        self._linger = self.loop.call_later(LINGER_SECONDS, self.close)
        self._worker.linger(self)


def refusal(problem: Problem, detail: str, request_id: str, headers: dict[str, str]) -> bytes:
    """A whole `problem` answer that closes the connection, written without the app."""
    headers = {"x-request-id": request_id, **headers}
    fields, body = problem_answer(problem, detail, request_id, headers, close=True)
    status = b"HTTP/1.1 %d %s\r\n" % (problem.status, HTTPStatus(problem.status).phrase.encode())
    return status + b"".join(b"%s: %s\r\n" % field for field in fields) + b"\r\n" + body
