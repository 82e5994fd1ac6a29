"""Opening a database connection: one deadline over every attempt and the pauses between them
(a Neon compute waking from zero), TCP keepalives on the socket, and one line that says what
failed and the fix when it cannot be opened. Then whether a transaction-mode pooler (Neon's
-pooler endpoints, PgBouncer) is in between, and the statement settings that work behind one."""

from __future__ import annotations

import asyncio
import socket
import ssl
import uuid
from typing import Any

import asyncpg

from quoteapi.database.failures import DatabaseConnectTimeout, DatabaseUnreachable
from quoteapi.database.url import DatabaseTarget
from quoteapi.logs import EventLog

log = EventLog("quoteapi.db")

# Pauses for a Neon compute waking from zero, within DATABASE_CONNECT_TIMEOUT like the attempts.
_CONNECT_BACKOFF_SECONDS = (0.25, 0.5, 1.0)
_RETRYABLE_CONNECT_ERRORS = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
)
# A peer that vanished without a word (a NAT or proxy that forgot the link, a host gone) is
# noticed within about a minute while the connection idles in the pool, which then replaces it
# at checkout instead of failing a request on it.
KEEPALIVE_IDLE_SECONDS = 30
KEEPALIVE_INTERVAL_SECONDS = 10
KEEPALIVE_PROBES = 3
# Failures that retrying cannot fix, and the fix.
_PERMANENT_CONNECT_ERRORS: dict[type[BaseException], str] = {
    ssl.SSLCertVerificationError: "use sslmode=require to encrypt without checking the "
    "certificate, or name the CA that signed it with sslrootcert=/path/to/ca.pem",
    asyncpg.InvalidPasswordError: "correct the user name and password in DATABASE_URL",
    asyncpg.InvalidAuthorizationSpecificationError: "correct the user name in DATABASE_URL",
    asyncpg.InvalidCatalogNameError: "correct the database name in DATABASE_URL, or create it",
}


async def connect(*, timeout: float, **kwargs: Any) -> asyncpg.Connection:  # noqa: ASYNC109
    """A new connection within `timeout` seconds (asyncpg's argument, from connect_args),
    attempts and pauses together."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    where = f"the database at {kwargs.get('host', 'localhost')}:{kwargs.get('port', 5432)}"
    for pause in (*_CONNECT_BACKOFF_SECONDS, None):
        try:
            connection = await asyncpg.connect(**kwargs, timeout=deadline - loop.time())
        except tuple(_PERMANENT_CONNECT_ERRORS) as exc:
            fix = next(f for t, f in _PERMANENT_CONNECT_ERRORS.items() if isinstance(exc, t))
            raise _cannot_connect(where, exc, fix) from exc
        except _RETRYABLE_CONNECT_ERRORS as exc:
            if pause is not None and deadline - loop.time() > pause:
                log.warning("db_connect_retry", error=type(exc).__name__, pause_s=pause)
                await asyncio.sleep(pause)
                continue
            if isinstance(exc, asyncio.TimeoutError):
                raise DatabaseConnectTimeout(
                    f"cannot connect to {where}: no answer within {timeout:g} s. Fix: check the "
                    "host and port in DATABASE_URL and that the server is up "
                    "(DATABASE_CONNECT_TIMEOUT sets the wait)"
                ) from exc
            fix = "check the host and port in DATABASE_URL, and that the server is up"
            raise _cannot_connect(where, exc, fix) from exc
        _keep_alive(connection)
        return connection
    raise AssertionError("unreachable")


def _cannot_connect(where: str, exc: BaseException, fix: str) -> DatabaseUnreachable:
    what = getattr(exc, "verify_message", None) or str(exc) or type(exc).__name__
    if isinstance(exc, ssl.SSLCertVerificationError):
        what = f"its TLS certificate did not verify ({what})"
    return DatabaseUnreachable(f"cannot connect to {where}: {what}. Fix: {fix}")


def _keep_alive(connection: asyncpg.Connection) -> None:
    # asyncpg has no keepalive option, and no public handle on its socket.
    sock = connection._transport.get_extra_info("socket")
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return  # a Unix socket: nothing between us and the server to vanish
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    if hasattr(socket, "TCP_KEEPIDLE"):  # Linux; elsewhere the system's timings apply
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, KEEPALIVE_IDLE_SECONDS)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, KEEPALIVE_INTERVAL_SECONDS)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, KEEPALIVE_PROBES)


# Behind a transaction pooler a prepared statement must not outlive its transaction, and any
# server connection may serve it: statements are never cached, and named never to collide.
POOLER_SAFE_STATEMENTS: dict[str, Any] = {
    "statement_cache_size": 0,
    "prepared_statement_cache_size": 0,
    "prepared_statement_name_func": lambda: f"__quoteapi_{uuid.uuid4().hex}__",
}


def pooler_by_host(target: DatabaseTarget) -> bool | None:
    """What Neon's host names say: `-pooler` endpoints pool, the others (through Neon's proxy)
    do not; None for any other host."""
    host = str(target.connect_kwargs.get("host", ""))
    if "-pooler." in host:
        return True
    return False if host.endswith((".neon.tech", ".neon.build")) else None


async def behind_a_pooler(
    target: DatabaseTarget, connect_timeout: float, statement_timeout: float
) -> bool:
    """True when something between us and PostgreSQL answers for it: as Neon's host names say,
    else when the backend pid of a connection's start-up (the key a cancel request carries) is
    not the backend's own, as every pooler gives its clients keys of its own. A session pooler
    is then treated as a transaction pooler (slower, never wrong; DATABASE_TRANSACTION_POOLER=false
    says otherwise)."""
    if (by_host := pooler_by_host(target)) is not None:
        return by_host
    connection = await connect(timeout=connect_timeout, **target.connect_kwargs)
    try:
        backend = await connection.fetchval("SELECT pg_backend_pid()", timeout=statement_timeout)
        pooler: bool = backend != connection.get_server_pid()
    finally:
        connection.terminate()
    if pooler:
        log.info(
            "transaction_pooler_detected",
            "statements are pooler-safe; set DATABASE_TRANSACTION_POOLER=true to skip this check "
            "at start-up",
        )
    return pooler
