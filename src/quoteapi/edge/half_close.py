"""A client's FIN cannot tell "I send no more" (a half-close: it still reads) from "I left" (its
socket is closed): only bytes sent to it can, which a closed socket answers with a reset. So while
its answer has not begun, it is sent an interim 100 (Continue), which every HTTP/1.1 client reads
past (RFC 9110, section 15.2), and the connection's TCP state is checked every
CHECK_SECONDS: reset, the client left, and aborting the connection cancels its request."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING

from uvicorn.protocols.http.httptools_impl import RequestResponseCycle

if TYPE_CHECKING:
    from quoteapi.edge.protocol import EdgeProtocol

CHECK_SECONDS = 0.1
INTERIM_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_TCP_CLOSE = 7  # TCP_INFO's state once the peer reset the connection (Linux)


class LeaveProbe:
    """Probes, after a half-close, whether the client of the request being answered left."""

    def __init__(
        self, connection: EdgeProtocol, running: Callable[[], RequestResponseCycle | None]
    ) -> None:
        self._connection = connection
        self._running = running  # the request the app is answering, if any
        self._timer: asyncio.TimerHandle | None = None

    def start(self) -> None:
        running = self._running()
        if (
            running is not None
            and not running.response_started
            and running.scope["http_version"] == "1.1"
            and hasattr(socket, "TCP_INFO")  # Linux
        ):
            self._connection.transport.write(INTERIM_CONTINUE)
            self._timer = self._connection.loop.call_later(CHECK_SECONDS, self._check)

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _check(self) -> None:
        self._timer = None
        running, transport = self._running(), self._connection.transport
        if running is None or running.response_started or transport.is_closing():
            return
        sock = transport.get_extra_info("socket")
        if sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0] == _TCP_CLOSE:
            transport.abort()
        else:
            self._timer = self._connection.loop.call_later(CHECK_SECONDS, self._check)
