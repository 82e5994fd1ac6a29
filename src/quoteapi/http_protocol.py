"""The HTTP/1.1 edge of `quoteapi serve`: uvicorn's httptools protocol plus the limits a server
facing the internet needs and uvicorn 0.54 lacks (the minor version is pinned in pyproject.toml;
tests/platform/test_http_protocol_internals.py checks the internals this relies on).

Every limit is per connection, in the protocol, because ASGI middleware sees a request only once
its head is complete and never sees the connection:

- Reading: a request (head, body, trailers) must arrive within
  QUOTEAPI_REQUEST_READ_TIMEOUT_SECONDS of its first byte, or of the connection for the first;
  time during which the server itself is not reading does not count. A head, or a trailer
  section, over MAX_HEAD_BYTES is refused with 431, however it is split into reads.
- Queueing: bytes are parsed in slices, and parsing stops while MAX_QUEUED_REQUESTS pipelined
  requests wait for their turn; reading stops while any wait. A connection's memory is bounded
  by that queue, one read, and uvicorn's body buffer.
- Trailer fields are never request headers (RFC 9110 section 6.5.1): they are read and dropped.
- Writing: output the client leaves untaken for QUOTEAPI_WRITE_TIMEOUT_SECONDS (writing paused
  that long, or a closing connection whose output stops draining) aborts the connection.
- Connections: at the worker's cap (`connection_cap`), a newcomer closes the longest-idle
  connection (idle for a second at least); with none, it is answered 503 too-many-connections.
- A client that half-closes after whole requests gets their answers, then the connection closes.
- Upgrade requests are answered as plain HTTP (there is no WebSocket here), then the connection
  closes.

A request the protocol refuses (400 for bytes that are not HTTP/1.1 or a wrong Host, 408, 431,
503) is answered in problem+json after the answers to the requests pipelined before it, and the
connection closes as RFC 9112 section 9.6 asks: the write side first, then what the client still
sends is read and dropped for up to LINGER_SECONDS, so that a client still uploading reads the
answer instead of a reset.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import re
import socket
import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any

import httptools
from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.httptools_impl import (
    STATUS_LINE,
    HttpToolsProtocol,
    RequestResponseCycle,
)

from quoteapi.middleware import CLIENT_GONE
from quoteapi.problems import (
    BAD_REQUEST,
    HEADERS_TOO_LARGE,
    PROBLEM_MEDIA_TYPE,
    REQUEST_TIMEOUT,
    RETRY_AFTER_SECONDS,
    TOO_MANY_CONNECTIONS,
    TRANSFER_CODING_NOT_IMPLEMENTED,
    URI_TOO_LONG,
    Problem,
    problem_body,
)
from quoteapi.settings import ConfigError, Settings, load_settings

log = logging.getLogger("quoteapi.http")

# Request line plus headers (and, apart, a trailer section). A Clerk session token is at most
# 8 KiB (auth refuses larger), and a browser's cookies a few KiB more; nginx allows 32 KiB too.
MAX_HEAD_BYTES = 32 * 1024
# Within that: the request target (this API's are a few bytes; 414 past it, as nginx and Apache
# at 8 KiB) and the field lines of a section (browsers send about 20; Apache allows 100: 431).
MAX_TARGET_BYTES = 8 * 1024
MAX_FIELDS = 100

# How long a refused connection keeps reading (and dropping) what its client still sends, after
# the answer: long enough for a client to finish writing a body of the largest accepted size
# (1 MiB) on loopback or a LAN and read the answer; short, as it holds no shared resource. Past
# that much dropped it stops reading (closing would reset the connection and destroy the
# answer): a client still uploading is held by TCP's own flow control until the linger ends.
LINGER_SECONDS = 2.0
LINGER_MAX_BYTES = 1024 * 1024

# Pipelined requests parsed ahead of the one being answered. Browsers do not pipeline; clients
# that do send a few. Parsing in slices keeps one read from queueing thousands at once.
MAX_QUEUED_REQUESTS = 16
PARSE_SLICE_BYTES = 4096

# Refused connections lingering at once, per worker: past that the one lingering longest (its
# answer long written) is closed, so that a flood of refusals cannot spend every descriptor.
MAX_LINGERING = 32
# Descriptors a worker keeps beside its client connections, on top of the database pool: the
# listening socket, event loop and log files, connections to Clerk, the docs' static files,
# and refused connections lingering (MAX_LINGERING).
RESERVED_DESCRIPTORS = 64
# The listening socket's queue of connections not yet accepted. The event loop accepts every
# queued one at once, before any reaches the cap's check: the queue's length is reserved too,
# or a burst of connections past the descriptor limit is dropped unanswered by the loop.
LISTEN_BACKLOG = 128

# A client's FIN cannot tell "I send no more" (a half-close: it still reads) from "I left" (its
# socket is closed): only bytes sent to it can, which a closed socket answers with a reset. So
# while the answer to its request has not begun, it is sent an interim 100 (Continue), which
# every HTTP/1.1 client reads past (RFC 9110, section 15.2), and the connection's TCP state is
# then checked this often: reset, the client left, and its request is cancelled.
CLIENT_CHECK_SECONDS = 0.1
_INTERIM_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_TCP_CLOSE = 7  # TCP_INFO's state once the peer reset the connection (Linux)

# The connection cap's warning is written at most this often, with the count since the last.
CAP_WARNING_INTERVAL_SECONDS = 10.0
# At the cap, a connection idle for less than this is not closed for a newcomer: one just
# accepted has had no time to send its request, and a client opening connections fast would
# otherwise close every user's before its request is read. The newcomer is refused instead. A
# connection still sending a head it began that long ago counts as idle: a real client's head
# arrives at once, and one sent a byte at a time would otherwise hold its place for good.
IDLE_BEFORE_EVICTION_SECONDS = 1.0


@dataclass(frozen=True)
class EdgeLimits:
    read_timeout: float
    write_timeout: float
    max_connections: int


def connection_cap(settings: Settings) -> int:
    """QUOTEAPI_MAX_CONNECTIONS, or by default what the worker's open-file soft limit allows
    beside the database pool, RESERVED_DESCRIPTORS and LISTEN_BACKLOG. A worker that runs out
    of descriptors can accept nobody, silently: a limit that leaves no room for connections, or
    a cap above the room it leaves, is a configuration error."""
    cap = settings.quoteapi_max_connections
    limit = _open_file_limit()
    if limit is None:
        return cap or 65536  # nothing to derive a cap from
    reserved = settings.database_pool_size + RESERVED_DESCRIPTORS + LISTEN_BACKLOG
    allowed = limit - reserved
    if allowed < 1:
        raise ConfigError(
            "ulimit -n",
            f"the open-file limit is {limit}, and {reserved} descriptors are kept for the "
            "database pool (DATABASE_POOL_SIZE) and files, leaving none for connections",
            "raise the open-file limit (e.g. `ulimit -n 1024`, or the container's nofile "
            "ulimit), or lower DATABASE_POOL_SIZE",
        )
    if cap is not None and cap > allowed:
        raise ConfigError(
            "QUOTEAPI_MAX_CONNECTIONS",
            f"the open-file limit is {limit}, of which {reserved} are kept for the database pool "
            f"(DATABASE_POOL_SIZE) and files, leaving {allowed} for {cap} connections",
            "raise the open-file limit (ulimit -n, or the container's nofile ulimit), or set "
            f"QUOTEAPI_MAX_CONNECTIONS to at most {allowed}",
        )
    return cap or allowed


def _open_file_limit() -> int | None:
    """The process's soft limit on open files; None when there is none (Windows, unlimited)."""
    if sys.platform == "win32":
        return None
    import resource

    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return None if soft == resource.RLIM_INFINITY else soft


def edge_limits(settings: Settings) -> EdgeLimits:
    """The limits of `settings`; raises ConfigError for a connection cap that cannot hold."""
    return EdgeLimits(
        read_timeout=settings.quoteapi_request_read_timeout_seconds,
        write_timeout=settings.quoteapi_write_timeout_seconds,
        max_connections=connection_cap(settings),
    )


@cache
def _worker_limits() -> EdgeLimits:
    # uvicorn builds protocols from an import string in each worker process, so the limits are
    # read from the environment there, once, as the worker's app factory reads its settings.
    return edge_limits(load_settings())


# RFC 3986's host [ ":" port ]: an IP literal in brackets, or a reg-name (unreserved,
# percent-encoded and sub-delims characters; an IPv4 address is one too), then digits.
_HOST = re.compile(
    rb"(\[[0-9A-Fa-f:.]+\]|(?:[A-Za-z0-9\-._~!$&'()*+,;=]|%[0-9A-Fa-f]{2})*)(:[0-9]*)?"
)


def _host_problem(http_version: str, headers: list[tuple[bytes, bytes]]) -> str | None:
    """Why the request's Host header breaks RFC 9112 section 3.2, or None: an HTTP/1.1 request
    carries exactly one, any request at most one (two could route it two ways), and its value is
    a host and port (RFC 3986), nothing else."""
    hosts = [value for name, value in headers if name == b"host"]  # uvicorn lower-cases names
    if len(hosts) > 1:
        return f"Send one Host header; this request has {len(hosts)} (RFC 9112, section 3.2)."
    if not hosts and http_version == "1.1":
        return "An HTTP/1.1 request must carry a Host header (RFC 9112, section 3.2)."
    if hosts and _HOST.fullmatch(hosts[0]) is None:
        return "The Host header must be a host name or address and a port (RFC 9112, 3.2)."
    return None


def _has_body(headers: list[tuple[bytes, bytes]]) -> bool:
    return any(
        (name == b"content-length" and value.strip() not in (b"0", b""))
        or name == b"transfer-encoding"
        for name, value in headers
    )


def _framing(headers: list[tuple[bytes, bytes]]) -> bytes:
    """The field that frames the body of a request with `headers`, as its head gave it."""
    for name, value in headers:
        if name == b"transfer-encoding":
            return b"transfer-encoding: " + value
        if name == b"content-length":
            return b"content-length: " + value
    return b"content-length: 0"


class _LingeringClose:
    """The transport as the cycle of a request with a body sees it: uvicorn closes it after an
    answer that began before the body arrived whole, and closing a socket the client still
    writes to would reset it, destroying the answer: the close lingers instead."""

    def __init__(self, protocol: GuardedHttpToolsProtocol) -> None:
        self._protocol = protocol

    def __getattr__(self, name: str) -> Any:
        return getattr(self._protocol.transport, name)

    def close(self) -> None:
        self._protocol._close_after_answer()


class _BodyPastUpgrade:
    """Parser callbacks for the rest of a request that asked to upgrade, which httptools does not
    read: the head that frames it for a parser of its own is dropped, its body and trailers go
    to the protocol, and nothing after it is read (its answer closes the connection)."""

    def __init__(self, protocol: GuardedHttpToolsProtocol) -> None:
        self.protocol = protocol
        self.head_done = False

    def on_headers_complete(self) -> None:
        self.head_done = True

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.head_done:  # a trailer field
            self.protocol.on_header(name, value)

    def on_body(self, body: bytes) -> None:
        self.protocol.on_body(body)

    def on_chunk_header(self) -> None:
        self.protocol.on_chunk_header()

    def on_chunk_complete(self) -> None:
        self.protocol.on_chunk_complete()

    def on_message_complete(self) -> None:
        self.protocol.on_message_complete()
        self.protocol._stop_reading()


def _coding_problem(headers: list[tuple[bytes, bytes]]) -> str | None:
    """Why the request's Transfer-Encoding asks for what this server does not do, or None: it
    decodes `chunked` only (RFC 9112, section 6.1: any other coding is 501)."""
    codings = [
        coding.strip().lower()
        for name, value in headers
        if name == b"transfer-encoding"
        for coding in value.split(b",")
    ]
    if any(coding != b"chunked" for coding in codings):
        return "Only the chunked transfer coding is accepted; send the body without others."
    return None


class _ReadGate(FlowControl):
    """uvicorn's flow control, except that reading stays paused while `held()`: uvicorn resumes
    reading whenever the app asks for body, which would let pipelined requests pile up."""

    def __init__(self, transport: asyncio.Transport, held: Callable[[], bool]) -> None:
        super().__init__(transport)
        self._held = held

    def resume_reading(self) -> None:
        if self.read_paused and not self._held():
            super().resume_reading()


class _Throttle:
    """True at most once per `interval` seconds; counts the calls in between."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.next_at = 0.0
        self.count = 0

    def due(self, now: float) -> bool:
        self.count += 1
        if now < self.next_at:
            return False
        self.next_at = now + self.interval
        return True


_cap_warning = _Throttle(CAP_WARNING_INTERVAL_SECONDS)
# This worker's refused connections still lingering, longest first.
_lingering: collections.deque[GuardedHttpToolsProtocol] = collections.deque()


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """httptools HTTP/1.1 with deadlines both ways, bounded memory and a connection cap."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._limits = _worker_limits()
        self._read_deadline: asyncio.TimerHandle | None = None
        self._write_deadline: asyncio.TimerHandle | None = None
        self._linger: asyncio.TimerHandle | None = None
        self._client_check: asyncio.TimerHandle | None = None
        self._unparsed: bytes | memoryview = b""  # read, not parsed while the queue is full
        self._running: RequestResponseCycle | None = None  # the request the app is answering
        self._running_task: asyncio.Task[None] | None = None  # the app answering it
        self._request_started = False  # bytes of a request arrived; it is not complete yet
        self._in_head = True  # the next bytes belong to a request head
        # A field section is a head or what follows a chunk header (where trailers come). Its
        # size is counted as the parser reports fields, plus whole slices that began and ended
        # inside it (httptools buffers an unfinished field line).
        self._in_fields = True
        self._sections_begun = 0
        self._field_bytes = 0
        self._field_slices = 0
        self._fields = 0  # field lines of the section, counted apart: many tiny ones cost too
        self._keep_alive_after_body: bool | None = None  # the request's own, once its body ends
        self._body_events = 0  # body callbacks so far, and body bytes since the last one
        self._unheard = 0
        self._dropped = 0  # bytes read and dropped once nothing more is parsed
        self._target_bytes = 0
        self._done_reading = False  # refused or upgraded: nothing more is parsed
        self._held_answer: bytes | None = None  # a refusal waiting for earlier answers
        self._writes_resumed = 0
        # For the connection cap: since when the connection has given the app no request (idle,
        # or still sending a head: a client dribbling one never counts as busy); None while busy.
        self.idle_since: float | None = None

    # --- the connection ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[arg-type]
        self.flow = _ReadGate(self.transport, self._holding_reads)
        self.idle_since = self.loop.time()
        self._arm_read_deadline()
        if len(self.connections) > self._limits.max_connections:
            self._make_room()

    def connection_lost(self, exc: Exception | None) -> None:
        for timer in (self._read_deadline, self._write_deadline, self._linger, self._client_check):
            if timer is not None:
                timer.cancel()
        self._read_deadline = self._write_deadline = self._linger = self._client_check = None
        self.idle_since = None
        if self in _lingering:
            _lingering.remove(self)
        running, task = self._running, self._running_task
        if running is not None and task is not None and not running.response_started:
            # The client left before its answer began: give up what the request waits for
            # (a database slot, a lock, a statement) rather than hold it for nobody.
            running.scope[CLIENT_GONE] = True  # type: ignore[literal-required]
            task.cancel()
        super().connection_lost(exc)

    def eof_received(self) -> bool:  # type: ignore[override]  # asyncio.Protocol allows it
        """The client sends no more (a half-close): answer the whole requests it sent, then
        close. A request cut off by the EOF can never complete: close now."""
        if self._request_started or not self._busy():
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
            self.transport.write(_INTERIM_CONTINUE)
            self._client_check = self.loop.call_later(CLIENT_CHECK_SECONDS, self._check_client)
        return True

    def _check_client(self) -> None:
        """Until the answer begins: a client that reset the connection has left; closing it
        cancels its request (`connection_lost`)."""
        self._client_check = None
        running = self._running
        if running is None or running.response_started or self.transport.is_closing():
            return
        sock = self.transport.get_extra_info("socket")
        if sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0] == _TCP_CLOSE:
            self.transport.abort()
        else:
            self._client_check = self.loop.call_later(CLIENT_CHECK_SECONDS, self._check_client)

    def _make_room(self) -> None:
        """Over the cap: close the longest-idle connection for this one, or refuse this one."""
        idle_before = self.loop.time() - IDLE_BEFORE_EVICTION_SECONDS
        idle = [
            other
            for other in self.connections
            if isinstance(other, GuardedHttpToolsProtocol)
            and other.idle_since is not None
            and other.idle_since <= idle_before
            and not other.transport.is_closing()
        ]
        if _cap_warning.due(self.loop.time()):
            log.warning(
                "event=connection_cap_reached cap=%s connections=%s idle=%s times=%s",
                self._limits.max_connections,
                len(self.connections),
                len(idle),
                _cap_warning.count,
            )
            _cap_warning.count = 0
        if idle:
            min(idle, key=lambda other: other.idle_since or 0.0)._close()
        else:
            self._refuse(
                TOO_MANY_CONNECTIONS,
                "The server holds as many connections as it can; retry shortly.",
                headers={"retry-after": str(RETRY_AFTER_SECONDS)},
                logged=False,  # the warning above counts them
            )

    def _busy(self) -> bool:
        running = self._running
        return bool(self.pipeline) or (
            running is not None and not running.response_complete and not running.disconnected
        )

    def _close(self) -> None:
        """Close once the output is out; the write deadline covers a client that takes none."""
        self.transport.close()
        if self.transport.get_write_buffer_size():
            self._watch_output()

    def timeout_keep_alive_handler(self) -> None:
        if not self.transport.is_closing():
            self._close()

    def shutdown(self) -> None:
        if self.cycle is None or self.cycle.response_complete:
            self._close()
        else:
            super().shutdown()

    # --- reading -----------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self._done_reading:  # the rest of a refused or upgraded connection is dropped
            self._dropped += len(data)
            if self._dropped > LINGER_MAX_BYTES and self.transport.is_reading():
                self.transport.pause_reading()
            return
        self._unset_keepalive_if_required()
        self._unparsed = bytes(self._unparsed) + data if self._unparsed else data
        self._parse()
        # uvicorn cancels its keep-alive timer on any byte received, but bytes that begin no
        # request (the CRLFs the parser skips between requests) arm nothing: arm the deadline.
        idle = not self._request_started and not self._busy()
        if idle and self._read_deadline is None and not self.transport.is_closing():
            self._arm_read_deadline()

    def _close_after_answer(self) -> None:
        """Close after an answer: at once when its request arrived whole, else once the client
        read it (its body, still coming, is dropped meanwhile, within the linger's bounds)."""
        if not self._request_started:
            self.transport.close()
            return
        self._stop_reading()
        self._request_started = False
        self._answer_and_close(b"")

    def _stop_reading(self) -> None:
        """Parse nothing more: what follows is dropped (the connection closes after its answer)."""
        self._done_reading = True
        self._unparsed = b""

    def _holding_reads(self) -> bool:
        return bool(self._unparsed) or bool(self.pipeline)

    def _parse(self) -> None:
        """Feed what was read to the parser, a slice at a time, until the queue is full."""
        while self._unparsed and not self._done_reading:
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
        section = self._sections_begun if self._in_fields else None
        heard = self._body_events
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            # The request is answered as plain HTTP, its Upgrade ignored (RFC 9110, section 7.8:
            # there is no other protocol here), and its answer closes the connection. httptools
            # stops at the head of such a request: a parser of its own reads the body on.
            rest = bytes(data[upgrade.args[0] :]) + bytes(self._unparsed)
            self._unparsed = b""
            if self.cycle.scope["method"] == "CONNECT":  # nothing to read on: a tunnel asked
                self._done_reading = True
                return
            self.parser = httptools.HttpRequestParser(_BodyPastUpgrade(self))
            self.parser.feed_data(b"POST / HTTP/1.1\r\n%s\r\n\r\n" % _framing(self.headers))
            self._unparsed = rest
            return
        except httptools.HttpParserError as exc:
            self._refuse(BAD_REQUEST, f"The request is not valid HTTP/1.1 ({exc}).")
            return
        if self._done_reading:
            return
        if section == self._sections_begun and self._in_fields and self._request_started:
            self._field_slices += len(data)
            if self._field_slices > MAX_HEAD_BYTES:
                self._refuse_fields()
        elif not self._in_fields and self._request_started:
            # Body bytes the parser took without a word: a chunk's size line and its extensions,
            # which httptools skips unseen (a stream of them would never end).
            self._unheard = 0 if self._body_events != heard else self._unheard + len(data)
            if self._unheard > MAX_HEAD_BYTES:
                why = f"Send chunk size lines (extensions too) of at most {MAX_HEAD_BYTES} bytes."
                self._refuse(BAD_REQUEST, why)

    # Parser callbacks. Once refused, the rest of a slice still runs through the parser: every
    # callback then does nothing, so no app starts and no body reaches one.

    def on_message_begin(self) -> None:
        if self._done_reading:
            return
        super().on_message_begin()
        self._in_head = True
        self._request_started = True
        self._target_bytes = self._unheard = 0
        self._begin_section()
        if self._read_deadline is None:  # the first request's deadline runs from the connect
            self._arm_read_deadline()

    def on_url(self, url: bytes) -> None:
        if self._done_reading:
            return
        super().on_url(url)
        self._target_bytes += len(url)  # httptools may report a long target in pieces
        if self._target_bytes > MAX_TARGET_BYTES:
            self._refuse(
                URI_TOO_LONG, f"Send a request target of at most {MAX_TARGET_BYTES} bytes."
            )
            return
        self._count_fields(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._done_reading:
            return
        if self._in_head:  # a trailer field is counted, and never becomes a header
            super().on_header(name, value)
        self._fields += 1
        if self._fields > MAX_FIELDS:
            self._refuse_fields(f"at most {MAX_FIELDS} fields")
            return
        self._count_fields(len(name) + len(value) + 3)  # "name:value\r\n" at the least

    def on_headers_complete(self) -> None:
        if self._done_reading:
            return
        if (wrong := _host_problem(self.parser.get_http_version(), self.headers)) is not None:
            self._refuse(BAD_REQUEST, wrong)
            return
        if (wrong := _coding_problem(self.headers)) is not None:
            self._refuse(TRANSFER_CODING_NOT_IMPLEMENTED, wrong)
            return
        self._in_head = self._in_fields = False
        self.idle_since = None  # a whole head: the connection is the app's now
        super().on_headers_complete()
        if self.parser.should_upgrade():
            self.cycle.keep_alive = False
        elif _has_body(self.headers):
            # An answer that begins before the body has arrived whole closes the connection (its
            # head says so): what the client still sends, if it sends it at all (a refused
            # `Expect: 100-continue`), is never taken for the next request, nor read for nothing.
            self._keep_alive_after_body = self.cycle.keep_alive
            self.cycle.keep_alive = False
            self.cycle.transport = _LingeringClose(self)  # type: ignore[assignment]

    def on_chunk_header(self) -> None:
        if not self._done_reading:
            self._body_events += 1
            self._begin_section()  # a chunk's size line; after the last chunk, the trailers

    def on_body(self, body: bytes) -> None:
        if not self._done_reading:
            self._body_events += 1
            self._in_fields = False
            super().on_body(body)

    def on_chunk_complete(self) -> None:
        self._body_events += 1
        self._in_fields = False

    def on_message_complete(self) -> None:
        if self._done_reading or self.parser.should_upgrade():  # the body is still to come
            return
        self._disarm_read_deadline()
        self._request_started = False
        self._in_head = self._in_fields = True
        self._field_bytes = self._field_slices = 0
        if self._keep_alive_after_body is not None and not self.cycle.response_started:
            self.cycle.keep_alive = self._keep_alive_after_body
        self._keep_alive_after_body = None
        super().on_message_complete()

    def _begin_section(self) -> None:
        self._in_fields = True
        self._sections_begun += 1
        self._field_bytes = self._field_slices = self._fields = 0

    def _count_fields(self, size: int) -> None:
        self._field_bytes += size
        if self._field_bytes > MAX_HEAD_BYTES:
            self._refuse_fields()

    def _refuse_fields(self, limit: str = f"{MAX_HEAD_BYTES} bytes") -> None:
        what = "head" if self._in_head else "trailer section"
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
        if self.transport.is_closing():
            return
        if self.flow.read_paused:  # the server is not reading: the client is not late
            self._arm_read_deadline()
        elif self._in_head and self._request_started:
            self._refuse(REQUEST_TIMEOUT, "Send the whole request promptly.")
        else:  # nothing sent yet, or a body too slow for the app reading it: just hang up
            self._close()

    # --- answering ---------------------------------------------------------------------------

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: Any) -> None:
        # As uvicorn's, but the task is kept: a client that leaves cancels it.
        self._running = cycle
        self._running_task = self.loop.create_task(cycle.run_asgi(app))
        self._running_task.add_done_callback(self.tasks.discard)
        self.tasks.add(self._running_task)

    def on_response_complete(self) -> None:
        super().on_response_complete()  # starts the next pipelined request, if one waits
        if self.transport.is_closing():  # that response closed the connection
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
        if not self._busy() and not self._request_started:
            self.idle_since = self.loop.time()
            if self.timeout_keep_alive_task is None and not self._unparsed:
                self.timeout_keep_alive_task = self.loop.call_later(
                    self.timeout_keep_alive, self.timeout_keep_alive_handler
                )

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
        elif self.transport.is_closing():
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
        self._done_reading = True
        self._unparsed = b""
        self._disarm_read_deadline()
        self.idle_since = None
        request_id = uuid.uuid4().hex
        if logged:
            log.warning(
                "event=http_request_refused status=%s code=%s request_id=%s",
                problem.status,
                problem.code,
                request_id,
            )
        answer = _problem_answer(problem, detail, request_id, headers or {})
        cycle = self.cycle
        if self._request_started and not self._in_head and cycle is not None:
            queued = [entry for entry in self.pipeline if entry[0] is cycle]
            if queued:
                self.pipeline.remove(queued[0])
            elif cycle.response_started:
                answer = b""
            else:
                cycle.disconnected = True
                cycle.message_event.set()
        self._request_started = False
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
            self._close()
            return
        # Closing with unread bytes would send a reset, which can destroy the answer before the
        # client reads it: half-close, and let the client's own close (or the linger) end it.
        self.transport.write_eof()
        self._linger = self.loop.call_later(LINGER_SECONDS, self._close)
        _lingering.append(self)
        if len(_lingering) > MAX_LINGERING:
            _lingering.popleft()._close()


def _problem_answer(
    problem: Problem, detail: str, request_id: str, headers: dict[str, str]
) -> bytes:
    body = json.dumps(problem_body(problem, detail, request_id)).encode()
    fields = {
        "content-type": PROBLEM_MEDIA_TYPE,
        "content-length": str(len(body)),
        "x-request-id": request_id,
        **headers,
        "connection": "close",
    }
    head = "".join(f"{name}: {value}\r\n" for name, value in fields.items())
    return STATUS_LINE[problem.status] + head.encode() + b"\r\n" + body
