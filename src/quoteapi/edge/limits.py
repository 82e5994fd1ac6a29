"""The HTTP edge's limits: what one connection may send and take, and how many connections a
worker holds. `EdgeLimits.from_settings` builds them from the same settings as the app; the
command that starts the server hands them to the protocol (`quoteapi.edge.protocol_for`)."""

from __future__ import annotations

import sys
from dataclasses import dataclass

from quoteapi.settings import ConfigError, Settings

# Request line plus headers (and, apart, a trailer section). A Clerk session token is at most
# 8 KiB (auth refuses larger), and a browser's cookies a few KiB more; nginx allows 32 KiB too.
# The same cap holds for body bytes the parser takes without a word: a chunk's size line and
# its extensions (the class of CVE-2024-22019).
MAX_HEAD_BYTES = 32 * 1024
# Within that: the request target (this API's are a few bytes; 414 past it, as nginx and Apache
# at 8 KiB) and the field lines of a section (browsers send about 20; Apache allows 100: 431).
MAX_TARGET_BYTES = 8 * 1024
MAX_FIELDS = 100

# How long a closing connection keeps reading (and dropping) what its client still sends after
# the answer: long enough for a client to finish writing a body of the largest accepted size
# (1 MiB) on loopback or a LAN and read the answer; short, as it holds no shared resource. Past
# that much dropped it stops reading (closing would reset the connection and destroy the
# answer): a client still uploading is held by TCP's own flow control until the linger ends.
LINGER_SECONDS = 2.0
LINGER_MAX_BYTES = 1024 * 1024
# Connections lingering at once, per worker: past that the one lingering longest (its answer
# long written) is closed, so that a flood of refusals cannot spend every descriptor.
MAX_LINGERING = 32

# Pipelined requests parsed ahead of the one being answered. Browsers do not pipeline; clients
# that do send a few. Parsing in slices keeps one read from queueing thousands at once.
MAX_QUEUED_REQUESTS = 16
PARSE_SLICE_BYTES = 4096

# Descriptors a worker keeps beside its client connections, on top of the database pool: the
# listening socket, event loop and log files, connections to Clerk, the docs' static files,
# and connections lingering (MAX_LINGERING).
RESERVED_DESCRIPTORS = 64
# The listening socket's queue of connections not yet accepted. The event loop accepts every
# queued one at once, before any reaches the cap's check: the queue's length is reserved too,
# or a burst of connections past the descriptor limit is dropped unanswered by the loop.
LISTEN_BACKLOG = 128
# At the cap, a connection that has sent no whole request for less than this is not closed for
# a newcomer: one just accepted has had no time to send its request, and a client opening
# connections fast would otherwise close every user's before its request is read. Past it, an
# idle connection gives way, and so does one still sending a head it began that long ago: a
# real client's head arrives at once, one sent a byte at a time would hold its place for good.
IDLE_BEFORE_EVICTION_SECONDS = 1.0
# The connection cap's warning is written at most this often, with the count since the last.
CAP_WARNING_INTERVAL_SECONDS = 10.0

# A client's FIN cannot tell "I send no more" (a half-close: it still reads) from "I left" (its
# socket is closed): only bytes sent to it can, which a closed socket answers with a reset. So
# while its answer has not begun, it is sent an interim 100 (Continue), which every HTTP/1.1
# client reads past (RFC 9110, section 15.2), and the connection's TCP state is checked this
# often: reset, the client left, and its request is cancelled.
CLIENT_CHECK_SECONDS = 0.1


@dataclass(frozen=True)
class EdgeLimits:
    """The limits a worker's connections are held to, from the settings."""

    read_timeout: float  # QUOTEAPI_REQUEST_READ_TIMEOUT_SECONDS: a whole request, from its start
    write_timeout: float  # QUOTEAPI_WRITE_TIMEOUT_SECONDS: output left untaken
    max_connections: int  # QUOTEAPI_MAX_CONNECTIONS, or what the open-file limit allows

    @classmethod
    def from_settings(cls, settings: Settings) -> EdgeLimits:
        """The limits of `settings`; ConfigError for a connection cap that cannot hold."""
        return cls(
            read_timeout=settings.quoteapi_request_read_timeout_seconds,
            write_timeout=settings.quoteapi_write_timeout_seconds,
            max_connections=connection_cap(settings),
        )


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
