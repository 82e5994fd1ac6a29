"""Whole databases, the application role and kept secrets, for the dev server and the tests."""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Callable
from pathlib import Path

import asyncpg
from sqlalchemy import make_url

from quoteapi.database.privileges import NEEDED, quote_role
from quoteapi.database.url import parse_database_url


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _quote_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


async def _execute(url: str, *statements: str) -> None:
    connection = await asyncpg.connect(**parse_database_url(url).connect_kwargs)
    try:
        for statement in statements:
            await connection.execute(statement)
    finally:
        await connection.close()


async def create_database(server_url: str, name: str) -> None:
    """Create database `name` on the server at `server_url` unless it exists."""
    with contextlib.suppress(asyncpg.DuplicateDatabaseError):
        await _execute(server_url, f"CREATE DATABASE {_quote_ident(name)}")


async def drop_database(server_url: str, name: str) -> None:
    """Drop database `name`, disconnecting whoever still uses it."""
    await _execute(server_url, f"DROP DATABASE IF EXISTS {_quote_ident(name)} WITH (FORCE)")


def url_for_database(server_url: str, name: str) -> str:
    return make_url(server_url).set(database=name).render_as_string(hide_password=False)


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


async def ensure_app_role(owner_url: str, role: str, password: str) -> str:
    """Create the application role on the owner's database, or, when it exists already (a
    server that outlives one run, like `quoteapi dev`'s), give it `password` and its grants
    again (a later migration may add a table). Return the URL to connect as the role."""
    database = parse_database_url(owner_url).connect_kwargs["database"]
    create, *grants = app_role_statements(role, password, database)
    with contextlib.suppress(asyncpg.DuplicateObjectError):
        await _execute(owner_url, create)
    await _execute(
        owner_url, f"ALTER ROLE {quote_role(role)} PASSWORD {_quote_literal(password)}", *grants
    )
    url = make_url(owner_url).set(username=role, password=password)
    return url.render_as_string(hide_password=False)


def kept_secret(path: Path, make: Callable[[], bytes]) -> bytes:
    """The secret kept in `path` (mode 0600 from its creation), made the first time."""
    if not path.exists():
        secret = make()
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL  # two commands starting at once: one wins
        with (
            contextlib.suppress(FileExistsError),
            os.fdopen(os.open(path, flags, 0o600), "wb") as f,
        ):
            f.write(secret)
    return path.read_bytes()


def kept_password(path: Path) -> str:
    return kept_secret(path, lambda: secrets.token_urlsafe(24).encode() + b"\n").decode().strip()
