"""The HTTP edge's limits: what one connection may send and take, and how many connections a
worker holds (`EdgeLimits.from_settings`, from the same settings as the app)."""

from __future__ import annotations

import sys
from dataclasses import dataclass

from quoteapi.settings import ConfigError, Settings

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
    """QUOTEAPI_MAX_CONNECTIONS, or what the open-file soft limit leaves beside the database
    pool, RESERVED_DESCRIPTORS and LISTEN_BACKLOG. A worker out of descriptors accepts nobody,
    silently: a limit that leaves no room, or a cap above it, is a configuration error."""
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
