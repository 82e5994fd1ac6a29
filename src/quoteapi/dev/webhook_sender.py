"""`quoteapi webhook-send`: a Clerk event signed as Clerk (Svix) would sign it, for trying the
webhook endpoint locally."""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
from pydantic import SecretStr
from standardwebhooks import Webhook

from quoteapi.settings import ConfigError, load_settings
from quoteapi.webhooks import USER_DELETED_EVENT
from quoteapi.webhooks.signatures import ENV_VARIABLE, signing_key


def main(
    url: str, event_type: str, user_id: str, session_id: str | None, msg_id: str | None
) -> None:
    if event_type != USER_DELETED_EVENT and not session_id:
        raise SystemExit(f"quoteapi: --session is required for {event_type}")
    event = sample_event(event_type, user_id, session_id)
    try:
        response = send_sample_event(
            load_settings().clerk_webhook_signing_secret, url, event, msg_id=msg_id
        )
    except httpx.HTTPError as exc:
        raise SystemExit(f"quoteapi: cannot send to {url}: {type(exc).__name__}") from None
    print(f"{response.status_code} {response.text}")
    if not response.is_success:
        raise SystemExit(1)


def sample_event(event_type: str, user_id: str, session_id: str | None = None) -> dict[str, Any]:
    """A Clerk event shaped like Clerk's (the fields that matter here, and a few around them)."""
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
    if not secret:
        raise ConfigError(
            ENV_VARIABLE,
            "is not set (`quoteapi webhook-send` signs with it)",
            "set it to the same signing secret the receiving service uses",
        )
    body = json.dumps(event, separators=(",", ":"))
    msg_id = msg_id or f"msg_{uuid.uuid4().hex}"
    now = datetime.now(UTC).replace(microsecond=0)
    headers = {
        "content-type": "application/json",
        "svix-id": msg_id,
        "svix-timestamp": str(int(now.timestamp())),
        "svix-signature": Webhook(signing_key(secret)).sign(msg_id, now, body),
    }
    return httpx.post(url, content=body.encode(), headers=headers, timeout=10.0)
