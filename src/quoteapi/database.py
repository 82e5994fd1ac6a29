"""The database: DATABASE_URL parsing, the async engine (asyncpg under SQLAlchemy), request
sessions admitted first come, first served, and the problem a request meets when the database
cannot serve it."""

from __future__ import annotations

import asyncio
import collections
import logging
import re
import ssl
import traceback
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import parse_qsl, unquote, urlsplit

import asyncpg
from fastapi import Request
from fastapi.responses import JSONResponse
from sqlalchemy import MetaData, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlmodel import SQLModel
from sqlmodel.ext.asyncio.session import AsyncSession

from quoteapi.problems import (
    INTERNAL_ERROR,
    RETRY_AFTER_SECONDS,
    Problem,
    problem_response,
    unexpected_error,
)

log = logging.getLogger("quoteapi.db")

DATABASE_UNAVAILABLE = Problem(503, "database-unavailable", "Database unavailable")
# Every pool slot stayed busy past DATABASE_POOL_TIMEOUT: overload, not an outage.
SERVER_BUSY = Problem(503, "server-busy", "Server busy")

# Constraint names follow PostgreSQL's own defaults, so a table the guide's app created with
# drizzle-kit and one created by our migrations carry the same names.
SQLModel.metadata.naming_convention = {
    "pk": "%(table_name)s_pkey",
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "%(table_name)s_%(column_0_N_name)s_key",
    "fk": "%(table_name)s_%(column_0_N_name)s_fkey",
    "ck": "%(table_name)s_%(constraint_name)s_check",
}
# Every table of every feature (messages.models, webhooks.models) registers here.
metadata: MetaData = SQLModel.metadata


# --- DATABASE_URL -----------------------------------------------------------------------------

# libpq's sslmode values and what each asks of the TLS handshake.
_SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
# Query parameters we translate; everything else is dropped (never forwarded as a server setting,
# which Neon's pooler rejects) and named once at start-up.
_KNOWN_PARAMS = {
    "sslmode",
    "sslrootcert",
    "channel_binding",
    "connect_timeout",
    "application_name",
    "host",
    "port",
    "user",
    "password",
    "dbname",
}


@dataclass(frozen=True)
class DatabaseTarget:
    """A DATABASE_URL translated into asyncpg.connect() keyword arguments."""

    connect_kwargs: dict[str, Any]
    notes: tuple[str, ...] = field(default=())

    @property
    def redacted(self) -> str:
        """Where the target is, for logs: no password."""
        kw = self.connect_kwargs
        host = kw.get("host", "localhost")
        port = f":{kw['port']}" if "port" in kw else ""
        return f"postgresql://{kw.get('user', '')}@{host}{port}/{kw.get('database', '')}"


def parse_database_url(url: str) -> DatabaseTarget:
    """Accept every form a user pastes (postgres://, postgresql+asyncpg://, Neon's sslmode and
    channel_binding parameters, Unix-socket hosts) and translate it for asyncpg."""
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    if scheme not in ("postgres", "postgresql", "postgresql+asyncpg"):
        raise ValueError(
            f"unsupported scheme {parts.scheme!r} (expected postgresql://, postgres:// or "
            "postgresql+asyncpg://)"
        )
    params = dict(parse_qsl(parts.query, keep_blank_values=True))
    kwargs: dict[str, Any] = {}
    notes: list[str] = []

    url_host, url_port = _split_host_port(parts.netloc.rpartition("@")[2])
    host = url_host or params.get("host", "")
    if host:
        kwargs["host"] = host
    port = params.get("port") or url_port
    if port:
        if not port.isdigit():
            raise ValueError(f"port {port!r} is not a number")
        kwargs["port"] = int(port)
    user = unquote(parts.username) if parts.username else params.get("user")
    if user:
        kwargs["user"] = user
    password = unquote(parts.password) if parts.password else params.get("password")
    if password:
        kwargs["password"] = password
    database = unquote(parts.path.lstrip("/")) or params.get("dbname")
    if database:
        kwargs["database"] = database

    sslmode = params.get("sslmode", "").lower()
    if sslmode:
        if sslmode not in _SSL_MODES:
            raise ValueError(f"sslmode={sslmode!r} is not one of {', '.join(_SSL_MODES)}")
        kwargs["ssl"] = _ssl_for_mode(sslmode, params.get("sslrootcert"))
    if "channel_binding" in params:
        notes.append(
            "DATABASE_URL: channel_binding is not supported by asyncpg and was dropped; "
            "the connection still uses TLS as sslmode asks"
        )
    if "connect_timeout" in params:
        try:
            kwargs["timeout"] = float(params["connect_timeout"])
        except ValueError:
            raise ValueError(
                f"connect_timeout={params['connect_timeout']!r} is not a number"
            ) from None
    if "application_name" in params:
        kwargs["server_settings"] = {"application_name": params["application_name"]}

    ignored = sorted(set(params) - _KNOWN_PARAMS)
    if ignored:
        notes.append(f"DATABASE_URL: ignored unsupported parameters: {', '.join(ignored)}")
    return DatabaseTarget(connect_kwargs=kwargs, notes=tuple(notes))


def _split_host_port(hostport: str) -> tuple[str, str]:
    """Split `host:port`, keeping the host's case (socket paths are case-sensitive)."""
    if hostport.startswith("["):  # IPv6 literal
        host, _, rest = hostport[1:].partition("]")
        return host, rest.removeprefix(":")
    host, _, port = hostport.partition(":")
    return unquote(host), port


def _ssl_for_mode(mode: str, root_cert: str | None) -> ssl.SSLContext | bool | str:
    if mode == "disable":
        return False
    if mode in ("allow", "prefer"):
        return mode  # asyncpg implements libpq's opportunistic modes itself
    context = ssl.create_default_context(cafile=root_cert)
    if mode == "verify-full":
        return context
    context.check_hostname = False
    if mode == "require":
        # libpq's `require` encrypts without checking the certificate; verify-full checks it.
        context.verify_mode = ssl.CERT_NONE
    return context


# --- the engine -------------------------------------------------------------------------------

# A Neon compute that scaled to zero takes a moment to wake; these pauses cover it without
# holding a request much longer than the connect timeout itself.
_CONNECT_BACKOFF_SECONDS = (0.25, 0.5, 1.0)
_RETRYABLE_CONNECT_ERRORS = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
)


# Failures that retrying cannot fix: what to change, by the failure.
_PERMANENT_CONNECT_ERRORS: dict[type[BaseException], str] = {
    ssl.SSLCertVerificationError: "use sslmode=require to encrypt without checking the "
    "certificate, or name the CA that signed it with sslrootcert=/path/to/ca.pem",
    asyncpg.InvalidPasswordError: "correct the user name and password in DATABASE_URL",
    asyncpg.InvalidAuthorizationSpecificationError: "correct the user name in DATABASE_URL",
    asyncpg.InvalidCatalogNameError: "correct the database name in DATABASE_URL, or create it",
}


class DatabaseUnreachable(ConnectionError):
    """No connection could be opened, retries included: the database is down or unreachable,
    or refuses us. The message is one line: where, what failed, and the fix."""


def _cannot_connect(kwargs: dict[str, Any], exc: BaseException, fix: str) -> DatabaseUnreachable:
    where = f"{kwargs.get('host', 'localhost')}:{kwargs.get('port', 5432)}"
    what = getattr(exc, "verify_message", None) or str(exc) or type(exc).__name__
    if isinstance(exc, ssl.SSLCertVerificationError):
        what = f"its TLS certificate did not verify ({what})"
    return DatabaseUnreachable(f"cannot connect to the database at {where}: {what}. Fix: {fix}")


def _unique_statement_name() -> str:
    # Transaction-mode poolers (Neon's -pooler endpoints, PgBouncer) hand each transaction any
    # server connection: names must never collide with another client's statements there.
    return f"__quoteapi_{uuid.uuid4().hex}__"


async def _connect_with_retry(**kwargs: Any) -> asyncpg.Connection:
    for pause in (*_CONNECT_BACKOFF_SECONDS, None):
        try:
            return await asyncpg.connect(**kwargs)
        except tuple(_PERMANENT_CONNECT_ERRORS) as exc:
            fix = next(f for t, f in _PERMANENT_CONNECT_ERRORS.items() if isinstance(exc, t))
            raise _cannot_connect(kwargs, exc, fix) from exc
        except _RETRYABLE_CONNECT_ERRORS as exc:
            if pause is None:
                fix = "check the host and port in DATABASE_URL, and that the server is up"
                raise _cannot_connect(kwargs, exc, fix) from exc
            log.warning("event=db_connect_retry error=%s pause_s=%s", type(exc).__name__, pause)
            await asyncio.sleep(pause)
    raise AssertionError("unreachable")


def create_engine(
    target: DatabaseTarget,
    *,
    pooler: bool = True,
    pool_size: int = 10,
    pool_timeout: float = 5.0,
    connect_timeout: float = 10.0,
) -> AsyncEngine:
    """Build the engine for one database target; nothing connects until first use.

    `pooler`: the database is behind a transaction-mode pooler, where a prepared statement must
    not outlive its transaction: statements are prepared under unique names and never cached.
    Otherwise each connection keeps its prepared statements, saving a round trip per query.
    """
    statements: dict[str, Any] = (
        {
            "statement_cache_size": 0,
            "prepared_statement_cache_size": 0,
            "prepared_statement_name_func": _unique_statement_name,
        }
        if pooler
        else {"prepared_statement_cache_size": 256}
    )
    connect_args: dict[str, Any] = {
        "timeout": connect_timeout,
        **target.connect_kwargs,
        **statements,
        "async_creator_fn": _connect_with_retry,
    }
    return create_async_engine(
        "postgresql+asyncpg://",
        connect_args=connect_args,
        pool_size=pool_size,
        max_overflow=0,
        pool_timeout=pool_timeout,
        # Errors carry the statement, never its parameters: they hold quote text and user ids,
        # and errors are logged.
        hide_parameters=True,
    )


T = TypeVar("T")

# What a transaction-mode pooler answers when a statement prepared on one server connection is
# used on another (26000), or a name another client prepared is reused (42P05). The SQLSTATE is
# lost by some poolers, hence the message as well.
_POOLER_STATEMENT_ERRORS = (
    asyncpg.InvalidSQLStatementNameError,
    asyncpg.DuplicatePreparedStatementError,
)
_POOLER_STATEMENT_MESSAGE = re.compile(r"prepared statement \S+ (does not|already) exists?")


def is_pooler_statement_error(exc: BaseException) -> bool:
    """True when `exc` says a transaction pooler moved a prepared statement's connection. The
    statement did not run (the error comes at prepare or bind), so it is safe to run again."""
    if not isinstance(exc, sa_exc.DBAPIError):
        return False
    cause = exc.orig.__cause__ if exc.orig is not None else None
    if isinstance(cause, _POOLER_STATEMENT_ERRORS):
        return True
    return _POOLER_STATEMENT_MESSAGE.search(str(cause or exc.orig)) is not None


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
    """The engine and the request sessions on it, admitted to the pool first come, first served.

    SQLAlchemy's async pool hands a returned connection to whichever task asks next, so under
    load a waiting request can be overtaken again and again until it times out (a p99 of
    seconds). A FIFO semaphore sized like the pool queues requests fairly in front of it.

    Sessions run each statement in autocommit unless `pooler`: a request made of one statement
    then costs no BEGIN/COMMIT round trips. Work that needs a transaction opens one explicitly
    (`messages.repository`); behind a transaction pooler every session is transactional, as it
    must be there.

    `pooler_safe_engine` builds the engine for a transaction pooler; given (the pooler was
    neither set nor recognised), the first statement a pooler breaks switches the database to
    that engine and to transactional sessions for good, and `retrying` runs the work once more.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        pool_size: int,
        wait: float,
        pooler: bool,
        pooler_safe_engine: Callable[[], AsyncEngine] | None = None,
    ) -> None:
        self._use(engine, pooler=pooler)
        self._pooler_safe_engine = None if pooler else pooler_safe_engine
        self._retired: list[AsyncEngine] = []
        self._slots = FifoSlots(pool_size, wait)

    def _use(self, engine: AsyncEngine, *, pooler: bool) -> None:
        self.engine = engine
        bind = engine if pooler else engine.execution_options(isolation_level="AUTOCOMMIT")
        # Loaded values stay usable after commit: responses are built after it.
        self._factory = async_sessionmaker(
            bind, class_=AsyncSession, expire_on_commit=False, info={"database": self}
        )

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        """A session holding one of the pool's slots until the block ends."""
        await self._slots.acquire()
        try:
            async with self._factory() as session:
                yield session
        finally:
            self._slots.release()

    async def retrying(self, work: Callable[[], Awaitable[T]]) -> T:
        """Run `work`, which opens its own session; when a transaction pooler broke one of its
        statements, switch to pooler-safe mode and run it once more (on a new session). Nothing
        ran: the statement failed at prepare or bind. A repository on a session it was given
        calls `prepare_retry` itself."""
        try:
            return await work()
        except sa_exc.DBAPIError as exc:
            await self.prepare_retry(exc, None)
        return await work()

    async def prepare_retry(self, exc: sa_exc.DBAPIError, session: AsyncSession | None) -> None:
        """After `exc` failed a unit of work: re-raise it unless a transaction pooler broke the
        statement; else switch to pooler-safe mode and ready `session` to run the work again."""
        if not (is_pooler_statement_error(exc) and self._switch_to_pooler_safe()):
            raise exc
        if session is not None:
            await session.rollback()
            session.sync_session.bind = self._factory.kw["bind"].sync_engine

    def _switch_to_pooler_safe(self) -> bool:
        """Use the pooler-safe engine from now on (once; no await, so no other task interleaves);
        False when this database never switches."""
        if self._retired:
            return True  # switched already; `work` met the old engine's connection
        if self._pooler_safe_engine is None:
            return False
        self._retired.append(self.engine)
        self._use(self._pooler_safe_engine(), pooler=True)
        log.warning(
            "event=transaction_pooler_detected: prepared statements do not survive this "
            "database's pooler; switched to pooler-safe statements and transactional sessions. "
            "Set DATABASE_TRANSACTION_POOLER=true to start in this mode"
        )
        return True

    async def dispose(self) -> None:
        for engine in (*self._retired, self.engine):
            await engine.dispose()


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
            "role; connect as a least-privilege role (README: Row-level security)",
            role,
            "superuser" if superuser else "bypassrls",
        )
    else:
        log.info("event=rls_role_ok role=%s", role)


# --- the problem a request meets when the database cannot serve it ----------------------------

# What a request may raise when the database fails it; create_app maps each to a problem.
DATABASE_FAILURES: tuple[type[Exception], ...] = (
    sa_exc.DBAPIError,
    sa_exc.TimeoutError,
    DatabaseUnreachable,
)


def is_database_unavailable(exc: BaseException) -> bool:
    """True for failures that mean "the database cannot be reached now", not a bug."""
    if isinstance(exc, sa_exc.DBAPIError):
        return exc.connection_invalidated or isinstance(
            exc, sa_exc.OperationalError | sa_exc.InterfaceError
        )
    return isinstance(exc, DatabaseUnreachable | sa_exc.TimeoutError)


def storable_text(text: str) -> bool:
    """Text PostgreSQL can store: no NUL, and valid UTF-8 (JSON can carry a lone surrogate)."""
    if "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


async def database_error(request: Request, exc: Exception) -> JSONResponse:
    """503 server-busy when no pool slot came free in time, 503 database-unavailable for an
    outage; anything else is a bug (500)."""
    if isinstance(exc, PoolTimeout):
        return _retry_later(request, exc, SERVER_BUSY, "Every database connection is busy")
    if is_database_unavailable(exc):
        return _retry_later(
            request, exc, DATABASE_UNAVAILABLE, "The database cannot be reached right now"
        )
    if isinstance(exc, sa_exc.DBAPIError):
        # The driver's message quotes the offending parameter value (asyncpg: "invalid input
        # for query argument $1: '...'"), whatever hide_parameters says: log the error class,
        # the SQLSTATE and where it happened, never the message.
        log.error(
            "event=database_error error=%s sqlstate=%s\n%s",
            type(exc.orig).__name__,
            getattr(exc.orig, "sqlstate", None) or "-",
            "".join(traceback.format_tb(exc.__traceback__)).rstrip(),
        )
        return problem_response(
            request, INTERNAL_ERROR, "Something went wrong on our side; it has been logged."
        )
    return await unexpected_error(request, exc)


def _retry_later(request: Request, exc: Exception, problem: Problem, why: str) -> JSONResponse:
    log.warning("event=%s error=%s", problem.code.replace("-", "_"), type(exc).__name__)
    return problem_response(
        request,
        problem,
        f"{why}; retry shortly.",
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )
