"""The tables Clerk's webhooks keep: deliveries processed, users deleted, sessions ended."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, Text, func
from sqlmodel import Field, SQLModel

import quoteapi.database  # noqa: F401 - its naming convention applies to these tables

_TIME = DateTime(timezone=True)


def _now() -> dict[str, object]:
    return {"server_default": func.now()}


class WebhookDelivery(SQLModel, table=True):
    """A processed delivery (`svix-id`), kept a few days: a redelivery does not act twice."""

    __tablename__ = "webhook_deliveries"

    svix_id: str = Field(sa_type=Text, primary_key=True)
    event_type: str = Field(sa_type=Text)
    received_at: datetime = Field(sa_type=_TIME, sa_column_kwargs=_now(), index=True)


class ErasedUser(SQLModel, table=True):
    """A user whose `user.deleted` was processed, kept for good (Clerk never reuses a user id):
    no write for them succeeds afterwards."""

    __tablename__ = "erased_users"

    user_id: str = Field(sa_type=Text, primary_key=True)
    erased_at: datetime = Field(sa_type=_TIME, sa_column_kwargs=_now())


class RevokedSession(SQLModel, table=True):
    """A session that ended, kept until no token issued before then can be valid."""

    __tablename__ = "revoked_sessions"

    session_id: str = Field(sa_type=Text, primary_key=True)
    user_id: str = Field(sa_type=Text)
    revoked_at: datetime = Field(sa_type=_TIME, sa_column_kwargs=_now())
    expires_at: datetime = Field(sa_type=_TIME, index=True)
