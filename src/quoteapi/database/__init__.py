"""The database, one module per job: `url` (DATABASE_URL), `engine` (the engine, connect
retries, sessions admitted first come, first served), `pooler` (transaction-pooler detection
and the switch to pooler-safe statements), `problems` (what a request answers when the database
fails it). Here: the metadata every table registers with."""

from sqlalchemy import MetaData
from sqlmodel import SQLModel

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
