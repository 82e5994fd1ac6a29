"""The HTTP/1.1 edge of `quoteapi serve` and `quoteapi dev`: uvicorn's httptools protocol plus
the limits a server facing the internet needs and uvicorn lacks (its minor version is pinned in
pyproject.toml; tests/platform/test_edge_internals.py checks what this relies on). Every limit
is per connection, in the protocol, because ASGI middleware sees a request only once its head
is complete and never sees the connection:

- Reading: a request (head, body, trailers) must arrive within its read deadline of its first
  byte, or of the connection for the first (time the server itself is not reading does not
  count): 408. A head or a trailer section over MAX_HEAD_BYTES is 431, however it is split into
  reads; more than MAX_FIELDS fields, 431; a target over MAX_TARGET_BYTES, 414; body bytes the
  parser takes without a word (a chunk's size line and extensions) past MAX_HEAD_BYTES, 400.
- Framing: Host is one host and port (400); `chunked` is the only transfer coding (501);
  trailer fields are never request headers (RFC 9110, section 6.5.1); an Upgrade is ignored,
  its request served with its body, then the connection closes.
- Queueing: bytes are parsed in slices, and parsing stops while MAX_QUEUED_REQUESTS pipelined
  requests wait for their turn; reading stops while any wait. A connection's memory is bounded
  by that queue, one read, and uvicorn's body buffer.
- Writing: output the client leaves untaken for the write deadline aborts the connection.
- Connections: at the worker's cap, a newcomer closes the connection that has handed the app no
  request for longest (idle, or dribbling a head, a second at least); with none, it is 503.
- Ending: a client that half-closes gets the answers to its whole requests; one that leaves
  before its answer begins has its request cancelled; an answer that begins before the body
  arrived whole closes the connection.

A request the edge refuses (400, 408, 414, 431, 501, 503) is answered in problem+json after the
answers to the requests pipelined before it, and the connection closes as RFC 9112 section 9.6
asks: the write side first, then what the client still sends is read and dropped (for at most
LINGER_SECONDS and LINGER_MAX_BYTES), so that a client still uploading reads the answer.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from quoteapi.edge.limits import LISTEN_BACKLOG, EdgeLimits
from quoteapi.edge.protocol import EdgeProtocol
from quoteapi.edge.worker import Worker

__all__ = ["LISTEN_BACKLOG", "EdgeLimits", "EdgeProtocol", "protocol_for"]


def protocol_for(limits: EdgeLimits) -> Callable[..., EdgeProtocol]:
    """The protocol uvicorn builds each connection with (its `http` setting), held to
    `limits`. Each worker process gets its own copy of what the connections share."""
    return functools.partial(EdgeProtocol, worker=Worker(limits))
