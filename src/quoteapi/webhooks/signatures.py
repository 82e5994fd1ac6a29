"""Clerk webhooks as Svix delivers them: header and signature checks (the HMAC itself is
`standardwebhooks`, the library Svix's own SDK delegates to)."""

from __future__ import annotations

import base64
import binascii
import json
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import SecretStr
from standardwebhooks import Webhook, WebhookVerificationError

from quoteapi.problems import ApiError
from quoteapi.settings import ConfigError, Settings
from quoteapi.webhooks.problems import (
    WEBHOOK_FUTURE,
    WEBHOOK_INVALID_BODY,
    WEBHOOK_INVALID_SIGNATURE,
    WEBHOOK_MALFORMED_HEADER,
    WEBHOOK_MISSING_HEADER,
    WEBHOOK_STALE,
)

ENV_VARIABLE = "CLERK_WEBHOOK_SIGNING_SECRET"
KEY_PREFIX = "whsec_"
# Svix's own tolerance: a captured delivery cannot be replayed after five minutes.
TOLERANCE_SECONDS = 5 * 60
# Clerk's user payloads are a few KiB; a megabyte leaves room without inviting abuse.
MAX_BODY_BYTES = 1024 * 1024
HEADERS = ("svix-id", "svix-timestamp", "svix-signature")

_MAX_ID_LENGTH = 256
_TIMESTAMP = re.compile(r"[0-9]{1,12}")
# One `svix-signature` entry: a version, a comma, a base64 signature (`v1` is HMAC-SHA256).
_ENTRY = re.compile(r"(v[0-9a-z]+),([A-Za-z0-9+/]+={0,2})")


@dataclass(frozen=True)
class SignedHeaders:
    """The three Svix headers, checked for shape and freshness (not yet for the signature)."""

    msg_id: str
    timestamp: int
    signature: str  # entries joined by single spaces, each one `version,base64`


def parse_headers(headers: Mapping[str, str]) -> SignedHeaders:
    """Check that svix-id, svix-timestamp and svix-signature are present, well formed and
    fresh; raise the ApiError naming the first thing wrong."""
    for name in HEADERS:
        if not headers.get(name, "").strip():
            raise ApiError(
                WEBHOOK_MISSING_HEADER,
                f"The {name} header is missing; Clerk (Svix) sends svix-id, svix-timestamp and "
                "svix-signature with every delivery.",
            )
    msg_id = headers["svix-id"].strip()
    if len(msg_id) > _MAX_ID_LENGTH or not msg_id.isprintable():
        raise ApiError(WEBHOOK_MALFORMED_HEADER, "svix-id is not a Svix message id.")
    raw_timestamp = headers["svix-timestamp"].strip()
    if not _TIMESTAMP.fullmatch(raw_timestamp):
        raise ApiError(
            WEBHOOK_MALFORMED_HEADER, "svix-timestamp must be whole seconds since the epoch."
        )
    timestamp = int(raw_timestamp)
    age = time.time() - timestamp
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
    if not all(_ENTRY.fullmatch(entry) and _is_base64(entry) for entry in entries):
        raise ApiError(
            WEBHOOK_MALFORMED_HEADER,
            "svix-signature must be space-separated `v1,<base64 signature>` entries.",
        )
    return SignedHeaders(msg_id=msg_id, timestamp=timestamp, signature=" ".join(entries))


def _is_base64(entry: str) -> bool:
    try:
        base64.b64decode(entry.partition(",")[2], validate=True)
    except binascii.Error:
        return False
    return True


class WebhookVerifier:
    """Checks deliveries against one endpoint's signing secret (`whsec_<base64 key>`)."""

    def __init__(self, secret: SecretStr) -> None:
        self._webhook = Webhook(signing_key(secret))

    @classmethod
    def from_settings(cls, settings: Settings) -> WebhookVerifier | None:
        """The verifier for CLERK_WEBHOOK_SIGNING_SECRET; None when it is unset or empty (no
        webhook endpoint then); ConfigError when it is not a signing secret."""
        secret = settings.clerk_webhook_signing_secret
        return cls(secret) if secret else None

    def verify(self, body: bytes, headers: SignedHeaders) -> dict[str, Any]:
        """The event, once some `v1` entry of svix-signature is the HMAC of id.timestamp.body;
        ApiError otherwise."""
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise ApiError(WEBHOOK_INVALID_BODY, "The body is not UTF-8 JSON.") from None
        try:
            self._webhook.verify(
                text,
                {
                    "webhook-id": headers.msg_id,
                    "webhook-timestamp": str(headers.timestamp),
                    "webhook-signature": headers.signature,
                },
                json_parse=False,
            )
        except WebhookVerificationError:
            raise ApiError(
                WEBHOOK_INVALID_SIGNATURE,
                "No svix-signature entry matches this body; check that "
                f"{ENV_VARIABLE} is this endpoint's signing secret and that nothing between "
                "Clerk and this service rewrites the body.",
            ) from None
        except (ValueError, TypeError):
            # parse_headers already refuses what the library cannot split or decode; this keeps
            # a library change from ever turning a bad header into a 500.
            raise ApiError(WEBHOOK_MALFORMED_HEADER, "svix-signature is malformed.") from None
        try:
            event = json.loads(text)
        except ValueError:
            event = None
        if not isinstance(event, dict) or not isinstance(event.get("type"), str):
            raise ApiError(
                WEBHOOK_INVALID_BODY, "The body is not a JSON object with a string `type`."
            )
        return event


def signing_key(secret: SecretStr) -> bytes:
    """The HMAC key inside `whsec_<base64>`; ConfigError (at start-up) if it is not one."""
    value = secret.get_secret_value().strip()
    encoded = value.removeprefix(KEY_PREFIX)
    try:
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except binascii.Error:
        key = b""
    if not value.startswith(KEY_PREFIX) or not key:
        raise ConfigError(
            ENV_VARIABLE,
            "is not a webhook signing secret (`whsec_` followed by base64)",
            "copy the Signing Secret of this endpoint from the Clerk dashboard (Webhooks -> "
            "your endpoint), or unset it to turn the webhook endpoint off",
        )
    return key
