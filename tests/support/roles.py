"""Removing the application role a test database was given (`quoteapi.dev.databases` makes it,
as `quoteapi dev` does)."""

from __future__ import annotations

import asyncpg

from quoteapi.database.url import parse_database_url


async def drop_app_role(owner_url: str, role: str) -> None:
    """Remove the role and every privilege it holds in the owner's database."""
    name = '"' + role.replace('"', '""') + '"'
    connection = await asyncpg.connect(**parse_database_url(owner_url).connect_kwargs)
    try:
        await connection.execute(f"DROP OWNED BY {name}")
        await connection.execute(f"DROP ROLE {name}")
    finally:
        await connection.close()
