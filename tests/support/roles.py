"""The least-privilege role the service connects as in production, made for a test database:
the tests (and the bench) run the app as it, so row-level security applies.

The statements come from `quoteapi.dev.databases.app_role_statements`, the SQL the README and
compose.yaml show; creating and dropping the role is only for tests and the bench."""

from __future__ import annotations

from urllib.parse import quote, urlsplit, urlunsplit

import asyncpg

from quoteapi.dev.databases import app_role_statements
from quoteapi.settings import parse_database_url


async def create_app_role(owner_url: str, role: str, password: str) -> str:
    """Create the application role on the owner's database; return the URL to connect as it."""
    target = parse_database_url(owner_url).connect_kwargs
    connection = await asyncpg.connect(**target)
    try:
        for statement in app_role_statements(role, password, target["database"]):
            await connection.execute(statement)
    finally:
        await connection.close()
    parts = urlsplit(owner_url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(
        parts._replace(netloc=f"{quote(role, safe='')}:{quote(password, safe='')}@{host}")
    )


async def drop_app_role(owner_url: str, role: str) -> None:
    """Remove the role and every privilege it holds in the owner's database."""
    connection = await asyncpg.connect(**parse_database_url(owner_url).connect_kwargs)
    try:
        await connection.execute(f'DROP OWNED BY "{_ident(role)}"')
        await connection.execute(f'DROP ROLE "{_ident(role)}"')
    finally:
        await connection.close()


def _ident(name: str) -> str:
    return name.replace('"', '""')
