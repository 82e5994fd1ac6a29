"""The table: one quote per Clerk user, shaped so the Neon guide's Drizzle table fits it."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Column, DateTime, Sequence, Text, func
from sqlmodel import Field, SQLModel

from quoteapi.database import metadata

# Every write draws a new version from one sequence, so a version (and the ETag made from it)
# is never reused, not even after a delete and a re-create.
version_seq = Sequence("user_messages_version_seq", metadata=metadata)


class UserMessage(SQLModel, table=True):
    """A user's one quote; `user_id` is the Clerk user id (`sub`). The guide's column names
    (`create_ts`) stay in the database; the attributes carry the API's names."""

    __tablename__ = "user_messages"

    user_id: str = Field(sa_column=Column(Text, primary_key=True))
    message: str = Field(sa_column=Column(Text, nullable=False))
    created_at: datetime = Field(
        sa_column=Column(
            "create_ts", DateTime(timezone=True), nullable=False, server_default=func.now()
        )
    )
    updated_at: datetime = Field(
        sa_column=Column(
            "update_ts", DateTime(timezone=True), nullable=False, server_default=func.now()
        )
    )
    version: int = Field(
        sa_column=Column(
            BigInteger, version_seq, nullable=False, server_default=version_seq.next_value()
        )
    )
