"""Transaction-mode poolers (Neon's -pooler endpoints, PgBouncer): the statement settings that
work behind one, and how the service knows one is there when nobody said."""

from __future__ import annotations

import uuid
from typing import Any

from quoteapi.database.connect import connect
from quoteapi.database.url import DatabaseTarget
from quoteapi.logs import EventLog

log = EventLog("quoteapi.db")


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
    """True when something between us and PostgreSQL answers for it: the backend pid of the
    connection's start-up (the key a cancel request carries) is not the backend's own, as every
    pooler gives its clients keys of its own. A session pooler is then treated as a transaction
    pooler (slower, never wrong; DATABASE_TRANSACTION_POOLER=false says otherwise)."""
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
