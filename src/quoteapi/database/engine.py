"""The engine (asyncpg under SQLAlchemy), connected with retries, and the units of work on it,
admitted to the pool first come, first served."""

from __future__ import annotations

import asyncio
import collections
import logging
import socket
import ssl
from collections.abc import Awaitable, Callable
from typing import Any, Concatenate, ParamSpec, TypeVar

import asyncpg
from sqlalchemy import Text, bindparam, event, func, select, text, true
from sqlalchemy import exc as sa_exc
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlmodel.ext.asyncio.session import AsyncSession

from quoteapi.database.failures import (
    DatabaseConnectTimeout,
    DatabaseUnreachable,
    failure_of,
)
from quoteapi.database.pooler import POOLER_SAFE_STATEMENTS, PoolerSwitch
from quoteapi.database.url import DatabaseTarget

log = logging.getLogger("quoteapi.db")

# A Neon compute that scaled to zero takes a moment to wake; these pauses cover it, within the
# connect timeout (DATABASE_CONNECT_TIMEOUT bounds the attempts and the pauses together).
_CONNECT_BACKOFF_SECONDS = (0.25, 0.5, 1.0)
_RETRYABLE_CONNECT_ERRORS = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
)
# TCP keepalives on database connections: a peer that vanished without a word (a NAT or proxy
# that forgot the link, a host gone) is noticed within about a minute while the connection sits
# idle in the pool, which then replaces it at checkout instead of failing a request on it.
KEEPALIVE_IDLE_SECONDS = 30
KEEPALIVE_INTERVAL_SECONDS = 10
KEEPALIVE_PROBES = 3


# Failures that retrying cannot fix: what to change, by the failure.
_PERMANENT_CONNECT_ERRORS: dict[type[BaseException], str] = {
    ssl.SSLCertVerificationError: "use sslmode=require to encrypt without checking the "
    "certificate, or name the CA that signed it with sslrootcert=/path/to/ca.pem",
    asyncpg.InvalidPasswordError: "correct the user name and password in DATABASE_URL",
    asyncpg.InvalidAuthorizationSpecificationError: "correct the user name in DATABASE_URL",
    asyncpg.InvalidCatalogNameError: "correct the database name in DATABASE_URL, or create it",
}


def _cannot_connect(kwargs: dict[str, Any], exc: BaseException, fix: str) -> DatabaseUnreachable:
    what = getattr(exc, "verify_message", None) or str(exc) or type(exc).__name__
    if isinstance(exc, ssl.SSLCertVerificationError):
        what = f"its TLS certificate did not verify ({what})"
    return DatabaseUnreachable(
        f"cannot connect to the database at {_where(kwargs)}: {what}. Fix: {fix}"
    )


def _where(kwargs: dict[str, Any]) -> str:
    return f"{kwargs.get('host', 'localhost')}:{kwargs.get('port', 5432)}"


async def _connect_with_retry(*, timeout: float, **kwargs: Any) -> asyncpg.Connection:  # noqa: ASYNC109
    """A new connection within `timeout` seconds (asyncpg's argument, from connect_args),
    attempts and pauses together."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    for pause in (*_CONNECT_BACKOFF_SECONDS, None):
        try:
            connection = await asyncpg.connect(**kwargs, timeout=deadline - loop.time())
        except tuple(_PERMANENT_CONNECT_ERRORS) as exc:
            fix = next(f for t, f in _PERMANENT_CONNECT_ERRORS.items() if isinstance(exc, t))
            raise _cannot_connect(kwargs, exc, fix) from exc
        except _RETRYABLE_CONNECT_ERRORS as exc:
            if pause is None or deadline - loop.time() <= pause:
                if isinstance(exc, asyncio.TimeoutError):
                    raise DatabaseConnectTimeout(
                        f"cannot connect to the database at {_where(kwargs)}: no answer within "
                        f"{timeout:g} s. Fix: check the host and port in DATABASE_URL and that "
                        "the server is up (DATABASE_CONNECT_TIMEOUT sets the wait)"
                    ) from exc
                fix = "check the host and port in DATABASE_URL, and that the server is up"
                raise _cannot_connect(kwargs, exc, fix) from exc
            log.warning("event=db_connect_retry error=%s pause_s=%s", type(exc).__name__, pause)
            await asyncio.sleep(pause)
        else:
            _keep_alive(connection)
            return connection
    raise AssertionError("unreachable")


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


def create_engine(
    target: DatabaseTarget,
    *,
    pooler: bool = True,
    pool_size: int = 10,
    pool_timeout: float = 5.0,
    connect_timeout: float = 5.0,
    statement_timeout: float | None = None,
) -> AsyncEngine:
    """Build the engine for one database target; nothing connects until first use.

    `pooler`: the database is behind a transaction-mode pooler, where a prepared statement must
    not outlive its transaction: statements are prepared under unique names and never cached.
    Otherwise each connection keeps its prepared statements, saving a round trip per query.
    `statement_timeout`: asyncpg's command_timeout, each statement's bound in the client; past it
    asyncpg cancels the statement on the server and the connection is discarded. None (as for
    migrations, whose statements may rightly take long): no bound.
    """
    statements: dict[str, Any] = POOLER_SAFE_STATEMENTS if pooler else {}
    connect_args: dict[str, Any] = {
        "timeout": connect_timeout,
        "command_timeout": statement_timeout,
        **target.connect_kwargs,
        **statements,
        "async_creator_fn": _connect_with_retry,
    }
    engine = create_async_engine(
        "postgresql+asyncpg://",
        connect_args=connect_args,
        pool_size=pool_size,
        max_overflow=0,
        pool_timeout=pool_timeout,
        # Errors carry the statement, never its parameters: they hold quote text and user ids,
        # and errors are logged.
        hide_parameters=True,
        # Each statement commits on its own unless a unit asks for a transaction (see Database).
        # Set once per connection: as an option of each checkout it costs CPU every request.
        isolation_level="READ COMMITTED" if pooler else "AUTOCOMMIT",
    )
    event.listen(engine.sync_engine, "checkout", _replace_if_closed)
    return engine


def _replace_if_closed(dbapi_connection: Any, record: Any, proxy: Any) -> None:
    """A connection the server closed while it sat in the pool is replaced before use: Neon
    closes every connection of a compute it suspends after 5 idle minutes, or restarts. The
    check is local (the driver saw the socket close), so a busy pool pays no round trip; the
    pool opens a new connection in its place."""
    if proxy.driver_connection.is_closed():
        raise sa_exc.DisconnectionError("closed by the server while idle in the pool")


T = TypeVar("T")
P = ParamSpec("P")


class FifoSlots:
    """A semaphore that admits strictly first come, first served, and gives up on a waiter after
    `wait` seconds (PoolTimeout). A free slot costs no timer: one is armed only for a request
    that has to queue. A released slot passes straight to the longest waiter, so no newcomer
    can overtake the queue."""

    def __init__(self, size: int, wait: float) -> None:
        self._free = size
        self._wait = wait
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    async def acquire(self) -> None:
        if self._free:  # a slot is free only while nobody queues (release hands it over)
            self._free -= 1
            return
        loop = asyncio.get_running_loop()
        turn: asyncio.Future[None] = loop.create_future()
        self._waiters.append(turn)
        timer = loop.call_later(self._wait, _give_up, turn, self._wait)
        try:
            await turn
        except BaseException:
            # A waiter that gave up or was cancelled stays queued, done: `release` skips it.
            if turn.done() and not turn.cancelled() and turn.exception() is None:
                self.release()  # handed a slot just as it was cancelled: pass the slot on
            raise
        finally:
            timer.cancel()

    def release(self) -> None:
        while self._waiters:
            turn = self._waiters.popleft()
            if not turn.done():
                turn.set_result(None)
                return
        self._free += 1


def _give_up(turn: asyncio.Future[None], wait: float) -> None:
    if not turn.done():
        turn.set_exception(PoolTimeout(f"no database connection free within {wait} s"))


class Database:
    """The engine, and units of work on it admitted to the pool first come, first served.

    SQLAlchemy's async pool hands a returned connection to whichever task asks next, so under
    load a waiting request can be overtaken again and again until it times out (a p99 of
    seconds). A FIFO semaphore sized like the pool queues requests fairly in front of it.

    The unit-of-work rule, written here once: a unit runs on a fresh session that is closed
    before the response is sent. Each statement commits on its own (autocommit: a request of
    one statement costs no BEGIN and COMMIT round trips), unless the work calls `transaction`
    first, which makes the rest of the unit one transaction, committed when the work returns.
    Behind a transaction pooler every unit is one transaction, as it must be there. A database
    whose pooler was neither set nor recognised switches to that mode when the pooler first
    breaks a statement (`pooler.PoolerSwitch`), and the unit runs once more, whole, on a fresh
    session: nothing of it ran.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        pool_size: int,
        wait: float,
        pooler: bool,
        role: str,
        lock_timeout: float,
        idle_timeout: float,
        pooler_safe_engine: Callable[[], AsyncEngine] | None = None,
    ) -> None:
        self._waits = {
            _LOCK_TIMEOUT.key: f"{round(lock_timeout * 1000)}ms",
            _IDLE_TIMEOUT.key: f"{round(idle_timeout * 1000)}ms",
        }
        self._use(engine, pooler=pooler)
        self._pooler = PoolerSwitch(None if pooler else pooler_safe_engine)
        self._slots = FifoSlots(pool_size, wait)
        self.role = role  # the connected role, for the GRANT a missing privilege names
        self._noted: set[str] = set()  # missing grants and objects, each logged once

    def _use(self, engine: AsyncEngine, *, pooler: bool) -> None:
        self.engine = engine
        self._transactional = pooler
        # Loaded values stay usable after commit: responses are built after it.
        self._factory = async_sessionmaker(
            engine, class_=AsyncSession, expire_on_commit=False, info={_WAITS: self._waits}
        )

    async def run(
        self,
        work: Callable[Concatenate[AsyncSession, P], Awaitable[T]],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        """`work(session, *args, **kwargs)` as one unit of work (see the class): its result. A
        failure of the database is raised as one of `database.failures`."""
        await self._slots.acquire()
        try:
            try:
                return await self._run_once(work, *args, **kwargs)
            except sa_exc.DBAPIError as exc:
                engine = self._pooler.engine_after(exc, self.engine)
                if engine is None:
                    raise
                if engine is not self.engine:
                    self._use(engine, pooler=True)
            return await self._run_once(work, *args, **kwargs)
        except (sa_exc.DBAPIError, TimeoutError) as exc:
            failure = failure_of(exc, self.role, self._noted)
            if failure is None:
                raise
            raise failure from exc
        finally:
            self._slots.release()

    async def _run_once(
        self,
        work: Callable[Concatenate[AsyncSession, P], Awaitable[T]],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        # Not `async with`: it shields every close in a task of its own, CPU on every request
        # (bench/README.md, the levers); only a close that rolls back has a round trip to protect.
        session = self._factory()
        try:
            result = await work(session, *args, **kwargs)
            if self._transactional or session.info.get(_TRANSACTION):
                await session.commit()
        except BaseException:
            await asyncio.shield(session.close())
            raise
        # Committed (or autocommit, where each statement was): closing sends nothing.
        await session.close()
        return result

    async def dispose(self) -> None:
        for engine in (*self._pooler.retired, self.engine):
            await engine.dispose()


# Set in a session's `info` by `transaction`: the unit of work commits it.
_TRANSACTION = "quoteapi.transaction"
# In every session's `info`: the parameters of SERVER_WAITS.
_WAITS = "quoteapi.server_waits"

# The waits the server bounds itself, for the transaction of the statement that reads this
# subquery: each lock wait (DATABASE_LOCK_TIMEOUT), and a transaction left idle by a client
# that vanished (then ended, its locks released). A unit's first statement reads it in its FROM,
# evaluated before anything else the statement does (a volatile subquery is never merged into
# its statement); transaction-local, so that it holds behind a transaction pooler too, and no
# round trip of its own. Locks taken while that first statement is planned (a table lock held
# by a migration) wait under the statement's own bound instead.
_LOCK_TIMEOUT = bindparam("lock_timeout", type_=Text)
_IDLE_TIMEOUT = bindparam("idle_timeout", type_=Text)
SERVER_WAITS = select(
    func.set_config("lock_timeout", _LOCK_TIMEOUT, true()),
    func.set_config("idle_in_transaction_session_timeout", _IDLE_TIMEOUT, true()),
).subquery("server_waits")


def server_waits(session: AsyncSession) -> dict[str, str]:
    """SERVER_WAITS's parameters for a unit of work on `session`."""
    waits: dict[str, str] = session.info[_WAITS]
    return waits


async def transaction(session: AsyncSession) -> None:
    """Make the rest of this unit of work one transaction, READ COMMITTED, committed when the
    work returns (an autocommit session would run each statement alone)."""
    session.info[_TRANSACTION] = True
    await session.connection(execution_options={"isolation_level": "READ COMMITTED"})


async def warn_if_rls_bypassed(engine: AsyncEngine) -> None:
    """Log a warning when the connected role is exempt from row-level security (a superuser,
    or BYPASSRLS like Neon's default owner role): the policy is then no second wall at all."""
    query = text(
        "SELECT current_user, rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user"
    )
    try:
        async with engine.connect() as connection:
            role, superuser, bypass = (await connection.execute(query)).one()
    except Exception as exc:  # the database may be down at start-up; requests will say so
        log.info("event=rls_role_check_skipped error=%s", type(exc).__name__)
        return
    if superuser or bypass:
        log.warning(
            "event=rls_bypassed role=%s reason=%s: row-level security does not apply to this "
            "role; connect as a least-privilege role (docs/security.md: Row-level security)",
            role,
            "superuser" if superuser else "bypassrls",
        )
    else:
        log.info("event=rls_role_ok role=%s", role)
