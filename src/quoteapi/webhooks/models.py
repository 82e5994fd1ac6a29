"""The table of Clerk (Svix) deliveries already processed."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column, DateTime, Text, func
from sqlmodel import Field, SQLModel

import quoteapi.database  # noqa: F401 - its naming convention applies to this table


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
