"""A database of a test's own on the test PostgreSQL, and the least-privilege role the service
connects as in production, each removed on the way out."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from quoteapi.dev.databases import create_database, drop_database, ensure_app_role, url_for_database
from tests.support.roles import drop_app_role


@asynccontextmanager
async def new_database(server_url: str, prefix: str = "quoteapi_test") -> AsyncIterator[str]:
    """A new, empty database on the server `server_url` reaches (as a superuser); its URL."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    await create_database(server_url, name)
    try:
        yield url_for_database(server_url, name)
    finally:
        await drop_database(server_url, name)


@asynccontextmanager
async def app_role(owner_url: str) -> AsyncIterator[str]:
    """A new least-privilege role on the owner's (migrated) database; the URL to connect as it."""
    role = f"quoteapi_app_{uuid.uuid4().hex[:8]}"
    try:
        yield await ensure_app_role(owner_url, role, "app-role-secret")
    finally:
        await drop_app_role(owner_url, role)
