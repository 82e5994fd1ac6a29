"""The HTTP edge's limits (`EdgeLimits.from_settings`, from the same settings as the app), and the
connection cap that the connections of one worker share."""

from __future__ import annotations

import collections
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING

from quoteapi.logs import EventLog
from quoteapi.settings import ConfigError, Settings

if TYPE_CHECKING:
    from quoteapi.edge.protocol import EdgeProtocol

log = EventLog("quoteapi.http")

# A head or trailer section: a Clerk token is at most 8 KiB, cookies a few more; nginx allows 32
# KiB too. So are a chunk's size line and extensions, which the parser takes unheard (the class
# of CVE-2024-22019). Within it, a target as nginx's and Apache's; fields as Apache's.
MAX_HEAD_BYTES = 32 * 1024
MAX_TARGET_BYTES = 8 * 1024
MAX_FIELDS = 100

# Pipelined requests parsed ahead of the one answered (browsers send none; others a few),
# parsed in slices so that one read cannot queue thousands at once.
MAX_QUEUED_REQUESTS = 16
PARSE_SLICE_BYTES = 4096

# A lingering close lasts long enough for a client to finish writing a body of the largest
# accepted size (1 MiB) on loopback or a LAN and read the answer; short, as it holds no shared
# resource. Past that much dropped, reading stops: TCP's own flow control holds the client.
LINGER_SECONDS = 2.0
LINGER_MAX_BYTES = 1024 * 1024
# Past this many lingering at once, per worker, the oldest closes: a flood of refusals cannot
# spend every descriptor.
MAX_LINGERING = 32

# Descriptors a worker keeps beside its connections and the database pool: the listening
# socket, loop and log files, Clerk, static files, connections lingering (MAX_LINGERING).
RESERVED_DESCRIPTORS = 64
# The listening queue. The loop accepts every queued connection before any reaches the cap's
# check, so its length is reserved too, or a burst past the descriptor limit goes unanswered.
LISTEN_BACKLOG = 128
# At the cap, a connection gives way to a newcomer once it has handed the app no request for
# this long: one just accepted has had no time to send its request, and a head dribbled a byte
# at a time must not hold its place for good.
IDLE_BEFORE_EVICTION_SECONDS = 1.0
# The connection cap's warning is written at most this often, with the count since the last.
CAP_WARNING_INTERVAL_SECONDS = 10.0


@dataclass(frozen=True)
class EdgeLimits:
    read_timeout: float  # QUOTEAPI_REQUEST_READ_TIMEOUT_SECONDS: a whole request, from its start
    write_timeout: float  # QUOTEAPI_WRITE_TIMEOUT_SECONDS: output left untaken
    max_connections: int  # QUOTEAPI_MAX_CONNECTIONS, or what the open-file limit allows

    @classmethod
    def from_settings(cls, settings: Settings) -> EdgeLimits:
        """The limits of `settings`. The connection cap is QUOTEAPI_MAX_CONNECTIONS, or what the
        open-file soft limit leaves beside the database pool, RESERVED_DESCRIPTORS and
        LISTEN_BACKLOG. A worker out of descriptors accepts nobody, silently: a limit that
        leaves no room, or a cap above it, is a ConfigError."""
        cap, limit = settings.quoteapi_max_connections, _open_file_limit()
        reserved = settings.database_pool_size + RESERVED_DESCRIPTORS + LISTEN_BACKLOG
        allowed = 65536 if limit is None else limit - reserved  # None: nothing to derive it from
        if allowed < 1:
            raise ConfigError(
                "ulimit -n",
                f"the open-file limit is {limit}, and {reserved} descriptors are kept for the "
                "database pool (DATABASE_POOL_SIZE) and files, leaving none for connections",
                "raise the open-file limit (e.g. `ulimit -n 1024`, or the container's nofile "
                "ulimit), or lower DATABASE_POOL_SIZE",
            )
        if limit is not None and cap is not None and cap > allowed:
            raise ConfigError(
                "QUOTEAPI_MAX_CONNECTIONS",
                f"the open-file limit is {limit}, of which {reserved} are kept for the database "
                f"pool (DATABASE_POOL_SIZE) and files, leaving {allowed} for {cap} connections",
                "raise the open-file limit (ulimit -n, or the container's nofile ulimit), or set "
                f"QUOTEAPI_MAX_CONNECTIONS to at most {allowed}",
            )
        return cls(
            read_timeout=settings.quoteapi_request_read_timeout_seconds,
            write_timeout=settings.quoteapi_write_timeout_seconds,
            max_connections=cap or allowed,
        )


def _open_file_limit() -> int | None:
    if sys.platform == "win32":
        return None
    import resource

    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return None if soft == resource.RLIM_INFINITY else soft


class Worker:
    """What one worker's connections share (uvicorn builds each worker's from its own copy)."""

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
