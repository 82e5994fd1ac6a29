"""Closing without destroying the answer. Closing a socket that still has unread bytes sends a
reset, which can destroy the answer before the client reads it (RFC 9112, section 9.6): the
connection half-closes instead, and reads and drops what the client still sends until the client
closes or the linger ends (LINGER_SECONDS, LINGER_MAX_BYTES)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from quoteapi.edge.protocol import EdgeProtocol

# Long enough for a client to finish writing a body of the largest accepted size (1 MiB) on
# loopback or a LAN and read the answer; short, as it holds no shared resource. Past that much
# dropped, reading stops: TCP's own flow control holds the client until the linger ends.
LINGER_SECONDS = 2.0
LINGER_MAX_BYTES = 1024 * 1024
# Connections lingering at once, per worker: past that the one lingering longest is closed, so
# that a flood of refusals cannot spend every descriptor.
MAX_LINGERING = 32


class LingeringClose:
    """The transport as the cycle of a request with a body sees it: uvicorn closes it after an
    answer that began before the body arrived whole, and then the close lingers instead."""

    def __init__(self, connection: EdgeProtocol) -> None:
        self._connection = connection

    def __getattr__(self, name: str) -> Any:
        return getattr(self._connection.transport, name)

    def close(self) -> None:
        self._connection.close_after_answer()
