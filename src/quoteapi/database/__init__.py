"""The database, one module per job: `url` (DATABASE_URL), `connect` (a connection within one
deadline, with keepalives), `admission` (first come, first served, bounded), `engine` (the
engine and the unit of work), `pooler` (transaction-pooler detection and the switch),
`failures` (one exception per failure), `privileges` (what the code needs), `problems` (the
answer to each failure). Here: the metadata every table registers with."""

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
