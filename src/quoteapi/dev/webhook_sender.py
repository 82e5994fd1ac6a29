"""`quoteapi webhook-send`: a `user.deleted` event signed as Clerk (Svix) would sign it, for
trying the webhook endpoint locally."""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime

import httpx
from pydantic import SecretStr
from standardwebhooks import Webhook

from quoteapi.settings import ConfigError
from quoteapi.webhooks.signatures import ENV_VARIABLE, signing_key


def send_sample_user_deleted(
    secret: SecretStr | None, url: str, user_id: str, *, msg_id: str | None = None
) -> httpx.Response:
    """POST a `user.deleted` event for `user_id` to `url`, signed as Clerk (Svix) would."""
    if not secret:
        raise ConfigError(
            ENV_VARIABLE,
            "is not set (`quoteapi webhook-send` signs with it)",
            "set it to the same signing secret the receiving service uses",
        )
    webhook = Webhook(signing_key(secret))
    event = {  # shaped like Clerk's
        "data": {"deleted": True, "id": user_id, "object": "user"},
        "instance_id": "ins_quoteapi_sample",
        "object": "event",
        "timestamp": int(time.time() * 1000),
        "type": "user.deleted",
    }
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
