"""The tables Clerk's webhooks keep: deliveries processed, users deleted, sessions ended."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column, DateTime, Text, func
from sqlmodel import Field, SQLModel

import quoteapi.database  # noqa: F401 - its naming convention applies to these tables


class WebhookDelivery(SQLModel, table=True):
    """A processed Clerk webhook message (`svix-id`), kept a few days so that a redelivery of
    the same message is acknowledged without acting twice."""

    __tablename__ = "webhook_deliveries"

    svix_id: str = Field(sa_column=Column(Text, primary_key=True))
    event_type: str = Field(sa_column=Column(Text, nullable=False))
    received_at: datetime = Field(
        sa_column=Column(
            DateTime(timezone=True), nullable=False, server_default=func.now(), index=True
        )
    )


class ErasedUser(SQLModel, table=True):
    """A Clerk user whose `user.deleted` was processed: kept for good (Clerk never reuses a
    user id), so that no write for them succeeds afterwards."""

    __tablename__ = "erased_users"

    user_id: str = Field(sa_column=Column(Text, primary_key=True))
    erased_at: datetime = Field(
        sa_column=Column(DateTime(timezone=True), nullable=False, server_default=func.now())
    )


class RevokedSession(SQLModel, table=True):
    """A Clerk session that ended (revoked, ended or removed), kept until no token issued before
    then can still be valid (`expires_at`)."""

    __tablename__ = "revoked_sessions"

    session_id: str = Field(sa_column=Column(Text, primary_key=True))
    user_id: str = Field(sa_column=Column(Text, nullable=False))
    revoked_at: datetime = Field(
        sa_column=Column(DateTime(timezone=True), nullable=False, server_default=func.now())
    )
    expires_at: datetime = Field(
        sa_column=Column(DateTime(timezone=True), nullable=False, index=True)
    )
