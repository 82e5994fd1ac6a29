"""Create and drop whole databases on a server (the dev database, the test databases)."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

import asyncpg

from quoteapi.settings import parse_database_url


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


async def create_database(server_url: str, name: str) -> None:
    """Create database `name` on the server at `server_url` unless it exists."""
    connection = await asyncpg.connect(**parse_database_url(server_url).connect_kwargs)
    try:
        if not await connection.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            await connection.execute(f"CREATE DATABASE {_quote_ident(name)}")
    finally:
        await connection.close()


async def drop_database(server_url: str, name: str) -> None:
    """Drop database `name`, disconnecting whoever still uses it."""
    connection = await asyncpg.connect(**parse_database_url(server_url).connect_kwargs)
    try:
        await connection.execute(f"DROP DATABASE IF EXISTS {_quote_ident(name)} WITH (FORCE)")
    finally:
        await connection.close()


def url_for_database(server_url: str, name: str) -> str:
    """The same server URL, naming database `name` instead."""
    parts = urlsplit(server_url)
    return urlunsplit(parts._replace(path=f"/{name}"))
