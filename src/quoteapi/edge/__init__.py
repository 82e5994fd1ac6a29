"""The HTTP/1.1 edge of `quoteapi serve` and `quoteapi dev`: uvicorn's httptools protocol plus
the limits a server facing the internet needs and uvicorn lacks (its minor version is pinned in
pyproject.toml; tests/platform/test_edge_internals.py checks what this relies on). They live in
the protocol, per connection: ASGI middleware sees a request only once its head is whole, and
never sees the connection.

- reading.py: a request arrives within its read deadline (408); a head or trailer section, its
  fields and target are capped (431, 414); pipelined requests queue up to a bound, then reading
  stops. heads.py: Host is one host and port (400); `chunked` is the only transfer coding (501);
  an Upgrade is ignored, its request served with its body, then the connection closes.
- limits.py: at the worker's connection cap, a newcomer closes the connection idle (or
  dribbling a head) for longest; with none, it is 503.
- protocol.py: output the client leaves untaken for the write deadline aborts; a client that
  half-closes gets its answers, one that left has its request cancelled; an answer that begins
  before the body arrived whole closes; a refused request is answered in problem+json after the
  answers pipelined before it, and the connection closes without destroying that answer.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from quoteapi.edge.limits import LISTEN_BACKLOG, EdgeLimits, Worker
from quoteapi.edge.protocol import EdgeProtocol
from quoteapi.settings import Settings

__all__ = ["LISTEN_BACKLOG", "EdgeProtocol", "protocol_for"]


def protocol_for(settings: Settings) -> Callable[..., EdgeProtocol]:
    """The protocol uvicorn builds each connection with (its `http` setting), held to the limits
    of `settings` (EdgeLimits.from_settings). Each worker process gets its own copy of what the
    connections share."""
    return functools.partial(EdgeProtocol, worker=Worker(EdgeLimits.from_settings(settings)))
