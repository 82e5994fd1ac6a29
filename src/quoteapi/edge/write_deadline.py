"""The write deadline: a connection whose client takes none of its output for `write_timeout`
(writing stays paused throughout, or a closing connection's output does not shrink) is aborted,
so that a client that stops reading cannot hold the connection and its buffers for good."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from quoteapi.logs import EventLog

if TYPE_CHECKING:
    from quoteapi.edge.protocol import EdgeProtocol

log = EventLog("quoteapi.http")


class WriteDeadline:
    def __init__(self, connection: EdgeProtocol) -> None:
        self._connection = connection
        self._timer: asyncio.TimerHandle | None = None
        self._resumed = 0  # times writing resumed: the client took some output

    def resumed(self) -> None:
        self._resumed += 1

    def watch(self) -> None:
        """Start the deadline, unless it runs already."""
        if self._timer is None:
            connection = self._connection
            self._timer = connection.loop.call_later(
                connection.limits.write_timeout,
                self._check,
                connection.transport.get_write_buffer_size(),
                self._resumed,
            )

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _check(self, pending_before: int, resumed_before: int) -> None:
        self._timer = None
        connection = self._connection
        pending = connection.transport.get_write_buffer_size()
        if not pending:
            return
        if connection.flow.write_paused:
            stalled = self._resumed == resumed_before
        elif connection.closing:
            stalled = pending >= pending_before
        else:  # flowing again, under the high-water mark: pause_writing watches anew
            return
        if not stalled:
            self.watch()
            return
        log.warning("write_timeout", pending_bytes=pending)
        connection.abort()
