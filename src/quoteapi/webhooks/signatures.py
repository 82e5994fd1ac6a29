"""Clerk webhooks as Svix delivers them: the headers' shape and age, then the signature (HMAC by
`standardwebhooks`, the library Svix's own SDK delegates to); one problem per refusal."""

from __future__ import annotations

import base64
import binascii
import json
import re
import time
from collections.abc import Mapping
from typing import Any

from pydantic import SecretStr
from standardwebhooks import Webhook, WebhookVerificationError

from quoteapi.problems import ApiError, Problem
from quoteapi.settings import ConfigError

WEBHOOK_MISSING_HEADER = Problem(400, "webhook-missing-header", "Webhook header missing")
WEBHOOK_MALFORMED_HEADER = Problem(400, "webhook-malformed-header", "Webhook header malformed")
WEBHOOK_STALE = Problem(400, "webhook-stale", "Webhook timestamp too old")
WEBHOOK_FUTURE = Problem(400, "webhook-future", "Webhook timestamp in the future")
WEBHOOK_INVALID_SIGNATURE = Problem(400, "webhook-invalid-signature", "Webhook signature invalid")
WEBHOOK_INVALID_BODY = Problem(400, "webhook-invalid-body", "Webhook body invalid")

ENV_VARIABLE = "CLERK_WEBHOOK_SIGNING_SECRET"
# Svix's own tolerance: a captured delivery cannot be replayed after five minutes.
TOLERANCE_SECONDS = 5 * 60
# Clerk's user payloads are a few KiB; a megabyte leaves room without inviting abuse.
MAX_BODY_BYTES = 1024 * 1024

_TIMESTAMP = re.compile(r"[0-9]{1,12}")
# One `svix-signature` entry: a version, a comma, canonical padded base64 (`v1` is HMAC-SHA256).
_ENTRY = re.compile(
    r"v[0-9a-z]+,(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{4}|[A-Za-z0-9+/]{3}=|[A-Za-z0-9+/]{2}==)"
)


def parse_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """svix-id, svix-timestamp and svix-signature, named as `standardwebhooks` wants them, once
    present, well formed and fresh; the ApiError naming the first thing wrong otherwise."""
    for name in ("svix-id", "svix-timestamp", "svix-signature"):
        if not headers.get(name, "").strip():
            raise ApiError(
                WEBHOOK_MISSING_HEADER,
                f"The {name} header is missing; Clerk (Svix) sends svix-id, svix-timestamp and "
                "svix-signature with every delivery.",
            )
    msg_id = headers["svix-id"].strip()
    if len(msg_id) > 256 or not msg_id.isprintable():
        raise ApiError(WEBHOOK_MALFORMED_HEADER, "svix-id is not a Svix message id.")
    timestamp = headers["svix-timestamp"].strip()
    if not _TIMESTAMP.fullmatch(timestamp):
        raise ApiError(
            WEBHOOK_MALFORMED_HEADER, "svix-timestamp must be whole seconds since the epoch."
        )
    age = time.time() - int(timestamp)
    if age > TOLERANCE_SECONDS:
        raise ApiError(
            WEBHOOK_STALE,
            f"svix-timestamp is more than {TOLERANCE_SECONDS} s old; a captured delivery cannot "
            "be replayed. Check this server's clock, or resend the message from the dashboard.",
        )
    if age < -TOLERANCE_SECONDS:
        raise ApiError(
            WEBHOOK_FUTURE,
            f"svix-timestamp is more than {TOLERANCE_SECONDS} s in the future; check this "
            "server's clock (NTP).",
        )
    entries = headers["svix-signature"].split()
    if not all(_ENTRY.fullmatch(entry) for entry in entries):
        raise ApiError(
            WEBHOOK_MALFORMED_HEADER,
            "svix-signature must be space-separated `v1,<base64 signature>` entries.",
        )
    signature = " ".join(entries)
    return {"webhook-id": msg_id, "webhook-timestamp": timestamp, "webhook-signature": signature}


def verify(webhook: Webhook, body: bytes, headers: dict[str, str]) -> dict[str, Any]:
    """The event, once some entry of svix-signature is the HMAC of id.timestamp.body."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError(WEBHOOK_INVALID_BODY, "The body is not UTF-8 JSON.") from None
    try:
        webhook.verify(text, headers, json_parse=False)
    except WebhookVerificationError:
        raise ApiError(
            WEBHOOK_INVALID_SIGNATURE,
            "No svix-signature entry matches this body; check that "
            f"{ENV_VARIABLE} is this endpoint's signing secret and that nothing between "
            "Clerk and this service rewrites the body.",
        ) from None
    try:
        event = json.loads(text)
    except ValueError:
        event = None
    if not isinstance(event, dict) or not isinstance(event.get("type"), str):
        raise ApiError(WEBHOOK_INVALID_BODY, "The body is not a JSON object with a string `type`.")
    return event


def signing_key(secret: SecretStr) -> bytes:
    """The HMAC key inside `whsec_<base64>`; ConfigError (at start-up) if it is not one."""
    value = secret.get_secret_value().strip()
    encoded = value.removeprefix("whsec_")
    try:
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except binascii.Error:
        key = b""
    if not value.startswith("whsec_") or not key:
        raise ConfigError(
            ENV_VARIABLE,
            "is not a webhook signing secret (`whsec_` followed by base64)",
            "copy the Signing Secret of this endpoint from the Clerk dashboard (Webhooks -> "
            "your endpoint), or unset it to turn the webhook endpoint off",
        )
    return key
