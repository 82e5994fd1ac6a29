"""`quoteapi webhook-send`: a Clerk event (`user.deleted`, or a session that ended) signed as
Clerk (Svix) would sign it, for trying the webhook endpoint locally."""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
from pydantic import SecretStr
from standardwebhooks import Webhook

from quoteapi.settings import ConfigError
from quoteapi.webhooks import USER_DELETED_EVENT
from quoteapi.webhooks.signatures import ENV_VARIABLE, signing_key


def sample_event(event_type: str, user_id: str, session_id: str | None = None) -> dict[str, Any]:
    """A Clerk event of `event_type` for `user_id` (and `session_id`, for a session event),
    shaped like Clerk's (only the fields that matter here, and a few around them)."""
    now_ms = int(time.time() * 1000)
    if event_type == USER_DELETED_EVENT:
        data: dict[str, Any] = {"deleted": True, "id": user_id, "object": "user"}
    else:
        data = {
            "id": session_id,
            "object": "session",
            "user_id": user_id,
            "status": event_type.removeprefix("session."),
            "client_id": "client_quoteapi_sample",
            "last_active_at": now_ms,
            "updated_at": now_ms,
        }
    return {
        "data": data,
        "instance_id": "ins_quoteapi_sample",
        "object": "event",
        "timestamp": now_ms,
        "type": event_type,
    }


def send_sample_event(
    secret: SecretStr | None, url: str, event: dict[str, Any], *, msg_id: str | None = None
) -> httpx.Response:
    """POST `event` to `url`, signed with `secret` as Clerk (Svix) would."""
    if not secret:
        raise ConfigError(
            ENV_VARIABLE,
            "is not set (`quoteapi webhook-send` signs with it)",
            "set it to the same signing secret the receiving service uses",
        )
    webhook = Webhook(signing_key(secret))
    body = json.dumps(event, separators=(",", ":")).encode()
    msg_id = msg_id or f"msg_{uuid.uuid4().hex}"
    timestamp = int(time.time())
    headers = {
        "content-type": "application/json",
        "svix-id": msg_id,
        "svix-timestamp": str(timestamp),
        "svix-signature": webhook.sign(
            msg_id, datetime.fromtimestamp(timestamp, UTC), body.decode()
        ),
    }
    return httpx.post(url, content=body, headers=headers, timeout=10.0)
