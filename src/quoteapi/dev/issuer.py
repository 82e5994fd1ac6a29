"""A local stand-in for Clerk, mounted only while QUOTEAPI_DEV_ISSUER is on (`quoteapi serve`
refuses it): one RSA key kept in the data directory, its JWKS, fetched by the verifier over HTTP
exactly as Clerk's is, and Clerk-shaped session tokens signed with it (`quoteapi token`, and
`POST /dev/token` for the web page, as Clerk's `Clerk.session.getToken()`). Also Clerk's events,
signed as Svix signs them, for trying the webhook endpoint locally (`quoteapi webhook-send`)."""

from __future__ import annotations

import json
import secrets
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import httpx
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi import APIRouter, Body, Request
from jwt.algorithms import RSAAlgorithm
from pydantic import SecretStr
from standardwebhooks import Webhook

from quoteapi.auth.sources import has_key_source, is_loopback_host
from quoteapi.auth.verify import SESSION_TOKEN_CATEGORY
from quoteapi.dev.databases import kept_secret
from quoteapi.problems import ApiError, Problem
from quoteapi.settings import ConfigError, load_settings
from quoteapi.webhooks import USER_DELETED_EVENT
from quoteapi.webhooks.signatures import ENV_VARIABLE, signing_key

# Fixed, so tokens do not depend on the port the dev server listens on.
DEV_ISSUER = "https://dev-issuer.quoteapi.localhost"
DEV_KID = "ins_quoteapi_dev"
JWKS_PATH = "/dev/.well-known/jwks.json"
KEY_FILE = "dev-issuer-key.pem"
# Clerk's session tokens live 60 s; the page refreshes shortly before expiry, as Clerk's SDK does.
PAGE_TOKEN_TTL_SECONDS = 60
HOST_NOT_LOOPBACK = Problem(403, "host-not-loopback", "Dev tokens are for loopback only")


def dev_auth_settings(port: int) -> dict[str, Any]:
    """The settings `quoteapi dev` uses when no Clerk key source is configured."""
    return {
        "quoteapi_dev_issuer": True,
        "clerk_jwks_url": f"http://127.0.0.1:{port}{JWKS_PATH}",
        "clerk_issuer": DEV_ISSUER,
    }


def load_or_create_key(data_dir: Path) -> rsa.RSAPrivateKey:
    """The dev issuer's private key, created on first use."""
    data_dir.mkdir(parents=True, exist_ok=True)
    pem = kept_secret(data_dir / KEY_FILE, _new_key_pem)
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError(f"{data_dir / KEY_FILE} holds no RSA private key; delete it for a new one")
    return key


def _new_key_pem() -> bytes:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def mint_session_token(
    key: rsa.RSAPrivateKey,
    user_id: str,
    *,
    ttl: int = 3600,
    azp: str = "http://localhost:5173",
    session_id: str | None = None,
    now: float | None = None,
) -> str:
    """A Clerk-shaped session token for `user_id` of session `session_id` (default: a new one)."""
    issued_at = int(time.time() if now is None else now)
    claims = {
        "sub": user_id,
        "sid": session_id or f"sess_dev_{secrets.token_hex(12)}",
        "iat": issued_at,
        "nbf": issued_at - 5,  # as Clerk does: a little slack for clock skew
        "exp": issued_at + ttl,
        "iss": DEV_ISSUER,
        "azp": azp,
        "v": 2,
        "sts": "active",
    }
    headers = {"kid": DEV_KID, "typ": "JWT", "cat": SESSION_TOKEN_CATEGORY}
    return jwt.encode(claims, key, algorithm="RS256", headers=headers)


def print_token(user_id: str, *, ttl: int, azp: str, session_id: str | None) -> None:
    """`quoteapi token`."""
    settings = load_settings()
    if has_key_source(settings):
        print(
            "quoteapi: note: a Clerk key source is configured, so `quoteapi dev` verifies against "
            "Clerk and will reject this token",
            file=sys.stderr,
        )
    key = load_or_create_key(settings.quoteapi_data_dir)
    print(mint_session_token(key, user_id, ttl=ttl, azp=azp, session_id=session_id), flush=True)


def build_router(data_dir: Path) -> APIRouter:
    """`GET /dev/.well-known/jwks.json` and `POST /dev/token`, with the key in `data_dir`."""
    key = load_or_create_key(data_dir)
    jwk: dict[str, Any] = RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
    jwks = {"keys": [{**jwk, "kid": DEV_KID, "use": "sig", "alg": "RS256"}]}
    router = APIRouter(tags=["dev"], include_in_schema=False)

    @router.get(JWKS_PATH)
    async def dev_jwks() -> dict[str, Any]:
        return jwks

    @router.post("/dev/token")
    async def dev_token(
        request: Request,
        user_id: Annotated[str, Body(embed=True, pattern=r"^[A-Za-z0-9_-]{1,64}$")] = "user_dev",
    ) -> dict[str, str | int]:
        # A page on another site can make the browser's name for it resolve to 127.0.0.1 (DNS
        # rebinding); its requests then carry that name in Host. Only loopback names mint.
        if not is_loopback_host(_host_name(request.headers.get("host", ""))):
            raise ApiError(
                HOST_NOT_LOOPBACK,
                "POST /dev/token answers only requests addressed to 127.0.0.1, [::1] or localhost.",
            )
        # `azp` is the page's origin, as Clerk sets it, so CLERK_AUTHORIZED_PARTIES applies.
        origin = request.headers.get("origin")
        azp = origin if origin and origin != "null" else "http://localhost:5173"
        token = mint_session_token(key, user_id, ttl=PAGE_TOKEN_TTL_SECONDS, azp=azp)
        return {"token": token, "user_id": user_id, "expires_in": PAGE_TOKEN_TTL_SECONDS}

    return router


def _host_name(host: str) -> str:
    """The name in a Host header, without its port (`[::1]:8000` -> `::1`)."""
    if host.startswith("["):
        return host[1:].partition("]")[0]
    return host.rpartition(":")[0] if host.count(":") == 1 else host


def send_webhook(
    url: str, event_type: str, user_id: str, session_id: str | None, msg_id: str | None
) -> None:
    """`quoteapi webhook-send`."""
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
