"""Clerk webhook deliveries as Svix signs them, signed here from the spec (not with the library
under test), and the rows the webhook tests arrange and inspect as the owner."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

TEST_SECRET = "whsec_" + base64.b64encode(b"quoteapi-webhook-test-signing-key").decode()
OTHER_SECRET = "whsec_" + base64.b64encode(b"some-other-endpoint-signing-key!").decode()
URL = "/webhooks/clerk"


def signature(body: bytes, msg_id: str, timestamp: int, secret: str = TEST_SECRET) -> str:
    """`v1,<base64 HMAC-SHA256 of id.timestamp.body>` keyed with the secret's base64 part."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    mac = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def signed(
    event: dict[str, Any] | bytes,
    *,
    msg_id: str | None = None,
    timestamp: int | None = None,
    secret: str = TEST_SECRET,
) -> tuple[bytes, dict[str, str]]:
    """A body and the svix-* headers Clerk would send with it."""
    body = event if isinstance(event, bytes) else json.dumps(event).encode()
    msg_id = msg_id or f"msg_{uuid.uuid4().hex}"
    timestamp = int(time.time()) if timestamp is None else timestamp
    return body, {
        "content-type": "application/json",
        "svix-id": msg_id,
        "svix-timestamp": str(timestamp),
        "svix-signature": signature(body, msg_id, timestamp, secret),
    }


def user_deleted(user_id: str) -> dict[str, Any]:
    return {
        "data": {"deleted": True, "id": user_id, "object": "user"},
        "object": "event",
        "type": "user.deleted",
    }


def session_ended(
    user_id: str, session_id: str, event_type: str = "session.revoked"
) -> dict[str, Any]:
    """`session.revoked`, `session.ended` or `session.removed`, shaped like Clerk's."""
    status = event_type.removeprefix("session.")
    return {
        "data": {"id": session_id, "object": "session", "status": status, "user_id": user_id},
        "object": "event",
        "type": event_type,
    }


async def store_quotes(owner_engine: AsyncEngine, *user_ids: str) -> None:
    async with owner_engine.begin() as connection:
        for user_id in user_ids:
            await connection.execute(
                text("INSERT INTO user_messages (user_id, message) VALUES (:u, 'A quote.')"),
                {"u": user_id},
            )


async def stored_users(owner_engine: AsyncEngine) -> set[str]:
    async with owner_engine.connect() as connection:
        return set((await connection.scalars(text("SELECT user_id FROM user_messages"))).all())


async def recorded_deliveries(owner_engine: AsyncEngine) -> set[str]:
    async with owner_engine.connect() as connection:
        return set((await connection.scalars(text("SELECT svix_id FROM webhook_deliveries"))).all())
