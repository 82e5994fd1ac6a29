"""The database, one module per job (each says which). Here: the metadata every table of every
feature (messages.models, webhooks.models) registers with."""

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
metadata: MetaData = SQLModel.metadata
