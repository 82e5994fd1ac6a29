"""Create and drop whole databases on a server (the dev database, the test databases)."""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import asyncpg

from quoteapi.database.privileges import NEEDED, quote_role
from quoteapi.database.url import parse_database_url


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


def app_role_statements(role: str, password: str, database: str) -> list[str]:
    """SQL that creates the least-privilege role the service connects as: it can read and
    write rows (row-level security decides which) but owns nothing, cannot change the schema,
    make temporary tables or bypass RLS. Run as the database owner; docs/security.md shows the
    same SQL."""
    name = quote_role(role)
    return [
        f"CREATE ROLE {name} LOGIN NOSUPERUSER NOBYPASSRLS PASSWORD {_quote_literal(password)}",
        # What every role has by default and this one must not: temporary tables (behind a
        # pooler one outlives its client) and, before PostgreSQL 15, objects in `public`.
        f"REVOKE TEMPORARY ON DATABASE {_quote_ident(database)} FROM PUBLIC",
        "REVOKE CREATE ON SCHEMA public FROM PUBLIC",
        f"GRANT CONNECT ON DATABASE {_quote_ident(database)} TO {name}",
        *(grant.sql(role) for grant in NEEDED),
    ]


def _quote_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _url_as(owner_url: str, role: str, password: str) -> str:
    parts = urlsplit(owner_url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(
        parts._replace(netloc=f"{quote(role, safe='')}:{quote(password, safe='')}@{host}")
    )


def kept_password(path: Path) -> str:
    """The password kept in `path` (mode 0600 from its creation), generated the first time."""
    if not path.exists():
        with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as file:
            file.write(secrets.token_urlsafe(24) + "\n")
    return path.read_text().strip()


async def ensure_app_role(owner_url: str, role: str, password: str) -> str:
    """Create the application role on the owner's database, or, when it exists already (a
    server that outlives one run, like `quoteapi dev`'s), give it `password` and its grants
    again (a later migration may add a table). Return the URL to connect as the role."""
    target = parse_database_url(owner_url).connect_kwargs
    statements = app_role_statements(role, password, target["database"])
    connection = await asyncpg.connect(**target)
    try:
        if await connection.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", role):
            # The first statement creates the role; the others grant, and granting is idempotent.
            statements[0] = f"ALTER ROLE {_quote_ident(role)} PASSWORD {_quote_literal(password)}"
        for statement in statements:
            await connection.execute(statement)
    finally:
        await connection.close()
    return _url_as(owner_url, role, password)
