"""What the connections of one worker share: the limits they are held to, the connection cap
(who gives way to a newcomer), and the connections lingering after their last answer."""

from __future__ import annotations

import collections
from typing import TYPE_CHECKING

from quoteapi.edge.limits import (
    CAP_WARNING_INTERVAL_SECONDS,
    IDLE_BEFORE_EVICTION_SECONDS,
    EdgeLimits,
)
from quoteapi.edge.lingering import MAX_LINGERING
from quoteapi.logs import EventLog

if TYPE_CHECKING:
    from quoteapi.edge.protocol import EdgeProtocol

log = EventLog("quoteapi.http")


class Worker:
    """One per worker process (uvicorn builds each worker's protocols from its own copy)."""

    def __init__(self, limits: EdgeLimits) -> None:
        self.limits = limits
        self._lingering: collections.deque[EdgeProtocol] = collections.deque()
        self._warned_at = float("-inf")
        self._reached = 0  # times the cap was reached since the last warning

    def make_room(self, others: list[EdgeProtocol], now: float) -> EdgeProtocol | None:
        """Over the cap: the connection to close for a newcomer (of `others`, the one that has
        handed the app no request for longest, a second at least), or None: it is refused."""
        waited_enough = now - IDLE_BEFORE_EVICTION_SECONDS
        candidates = [
            other
            for other in others
            if other.waiting_since is not None
            and other.waiting_since <= waited_enough
            and not other.closing
        ]
        self._reached += 1
        if now >= self._warned_at + CAP_WARNING_INTERVAL_SECONDS:
            log.warning(
                "connection_cap_reached",
                cap=self.limits.max_connections,
                connections=len(others) + 1,
                idle=len(candidates),
                times=self._reached,
            )
            self._warned_at, self._reached = now, 0
        return min(candidates, key=lambda other: other.waiting_since or now, default=None)

    def linger(self, connection: EdgeProtocol) -> None:
        """`connection` lingers after its last answer; past MAX_LINGERING the oldest is closed."""
        self._lingering.append(connection)
        if len(self._lingering) > MAX_LINGERING:
            self._lingering.popleft().close()

    def forget(self, connection: EdgeProtocol) -> None:
        if connection in self._lingering:
            self._lingering.remove(connection)
