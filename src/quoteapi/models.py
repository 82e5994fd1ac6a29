"""The table: one quote per Clerk user, shaped so the Neon guide's Drizzle table fits it."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, create_model
from pydantic import Field as PydanticField
from sqlalchemy import BigInteger, Column, DateTime, MetaData, Sequence, Text, func
from sqlmodel import Field, SQLModel

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

# Every write draws a new version from one sequence, so a version (and the ETag made from it)
# is never reused, not even after a delete and a re-create.
version_seq = Sequence("user_messages_version_seq", metadata=metadata)


class UserMessage(SQLModel, table=True):
    """A user's one quote; `user_id` is the Clerk user id (`sub`)."""

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


# --- The API's request and response schemas for /me/message --------------------------------

# C0 and C1 control characters and DEL, except tab and line breaks (normalised to LF before).
_CONTROL_CHARACTERS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
# JSON's \ud800-style escapes can carry half a surrogate pair, which no UTF-8 text (and so no
# PostgreSQL text) can hold.
_LONE_SURROGATES = re.compile(r"[\ud800-\udfff]")


def message_input_model(max_length: int) -> type[BaseModel]:
    """The PUT body schema; the length limit is a setting, so the model is built per app."""

    def normalise(value: object) -> object:
        if not isinstance(value, str):
            return value  # the str type check below rejects it
        text = value.replace("\r\n", "\n").replace("\r", "\n")
        # Before trimming: str.strip() also removes the separators U+001C to U+001F, controls
        # that must be refused, not silently dropped.
        if _CONTROL_CHARACTERS.search(text):
            raise ValueError("must not contain control characters (tab and line breaks are fine)")
        text = text.strip()
        if not text:
            raise ValueError("must not be empty or only white space")
        if _LONE_SURROGATES.search(text):
            raise ValueError("must be valid Unicode text (it contains an unpaired surrogate)")
        if len(text) > max_length:
            raise ValueError(f"must be at most {max_length} characters after trimming")
        return text

    message_field = Annotated[
        str,
        BeforeValidator(normalise),
        # No maxLength in the schema: the limit applies after trimming, so a longer raw string
        # with surrounding white space is acceptable, and the schema must not say otherwise.
        PydanticField(
            min_length=1,
            description=f"The quote: 1 to {max_length} characters once surrounding white space "
            "is trimmed; tab and line breaks allowed, other control characters not.",
            examples=["The best way to predict the future is to invent it."],
        ),
    ]
    return create_model(
        "MessageIn",
        __config__=ConfigDict(extra="forbid", json_schema_extra={"additionalProperties": False}),
        message=(message_field, ...),
    )


class MessageOut(SQLModel):
    """The caller's stored quote."""

    message: str = Field(schema_extra={"examples": ["Stay hungry, stay foolish."]})
    created_at: datetime = Field(description="When the quote was first saved (RFC 3339)")
    updated_at: datetime = Field(description="When it was last replaced (RFC 3339)")


# --- Webhooks: Clerk (Svix) deliveries already processed -------------------------------------


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


class WebhookAck(SQLModel):
    """The answer to a verified webhook delivery (Svix shows it in the Clerk dashboard)."""

    outcome: str = Field(
        description="`deleted` (the user's data is erased), `duplicate` (this svix-id was "
        "already processed), or `ignored` (an event this service does not act on)",
        schema_extra={"examples": ["deleted"]},
    )
