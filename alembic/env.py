"""Async Alembic environment: connects with the same engine code as the service."""

import asyncio
import logging.config

from sqlalchemy.engine import Connection

from alembic import context
from quoteapi.database import metadata
from quoteapi.database.engine import create_engine
from quoteapi.database.url import DatabaseTarget
from quoteapi.messages import models as _messages_tables  # noqa: F401 - registers the table
from quoteapi.settings import ConfigError, load_settings
from quoteapi.webhooks import models as _webhooks_tables  # noqa: F401 - registers the table

config = context.config
if config.config_file_name is not None:
    logging.config.fileConfig(config.config_file_name, disable_existing_loggers=False)


def _target() -> DatabaseTarget:
    given = config.attributes.get("database_target")
    if given is not None:
        return given  # type: ignore[no-any-return]
    database = load_settings().database
    if database is None:
        raise ConfigError("DATABASE_URL", "is not set", "set it to the database to migrate")
    return database


def _run(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=metadata, compare_type=True)
    with context.begin_transaction():
        context.run_migrations()


async def _run_online() -> None:
    engine = create_engine(_target(), pool_size=1)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run)
    finally:
        await engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline (--sql) mode is not supported: migrations inspect the live schema")
asyncio.run(_run_online())
