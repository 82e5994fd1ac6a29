"""The bench database: a migrated database on the embedded server, seeded in one statement.

Users are numbered 0..U-1 (`tokens.user_id`): the first half have a quote (GET hits, PUT
replaces), the second half have none (GET misses). PUTs only ever write to the first half, so
the halves stay as seeded whatever order the scenarios run in.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

import asyncpg

from quoteapi.database.url import parse_database_url
from quoteapi.dev import databases
from quoteapi.dev.databases import create_database, url_for_database
from quoteapi.migrations import upgrade_async

APP_ROLE = "quoteapi_app"

# One INSERT ... SELECT: 500,000 rows take a few seconds. The ids match tokens.user_id.
_SEED = """
INSERT INTO user_messages (user_id, message)
SELECT 'user_' || lpad(n::text, 27, '0'),
       'Quote ' || n || ': the best way to predict the future is to invent it.'
FROM generate_series(0, $1::bigint - 1) AS n
"""


@dataclass(frozen=True)
class Users:
    """The seeded user numbers: `hit` have a quote, `miss` have none."""

    hit: range
    miss: range

    @classmethod
    def split(cls, count: int) -> Users:
        if count < 2:
            raise ValueError("at least 2 users are needed (one with a quote, one without)")
        return cls(hit=range(count // 2), miss=range(count // 2, count))


async def prepare(server_url: str, name: str, users: Users) -> str:
    """Create database `name`, migrate it to head, seed `users`; return its URL."""
    await create_database(server_url, name)
    url = url_for_database(server_url, name)
    await upgrade_async(parse_database_url(url))
    connection = await _connect(url)
    try:
        await connection.execute("TRUNCATE user_messages")
        await connection.execute(_SEED, len(users.hit))
        await connection.execute("VACUUM ANALYZE user_messages")
    finally:
        await connection.close()
    return url


async def create_app_role(url: str) -> str:
    """The service's least-privilege login role (what row-level security needs: a superuser
    or the table owner bypasses it), made as the README and the tests make it; return the URL
    that connects as it."""
    return await databases.ensure_app_role(url, APP_ROLE, secrets.token_hex(16))


async def facts(url: str) -> dict[str, Any]:
    """The server version, the table's size and its row-level-security flags."""
    connection = await _connect(url)
    try:
        row = await connection.fetchrow(
            "SELECT current_setting('server_version') AS version,"
            " pg_total_relation_size('user_messages') AS table_bytes,"
            " (SELECT count(*) FROM user_messages) AS rows,"
            " relrowsecurity AS rls_enabled, relforcerowsecurity AS rls_forced"
            " FROM pg_class WHERE oid = 'user_messages'::regclass"
        )
    finally:
        await connection.close()
    assert row is not None
    return dict(row)


async def _connect(url: str) -> asyncpg.Connection:
    return await asyncpg.connect(**parse_database_url(url).connect_kwargs)
