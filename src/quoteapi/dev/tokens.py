"""`POST /dev/token`: a dev-issuer session token for the web page, so that `quoteapi dev` needs
no Clerk account. Mounted only while QUOTEAPI_DEV_ISSUER is on (`quoteapi serve` refuses it).

It plays the part of Clerk's `Clerk.session.getToken()`: the page asks for a short-lived token
before calling the API, for the dev user or one the page names.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Body, Request
from pydantic import BaseModel, Field

from quoteapi.auth.sources import is_loopback_host
from quoteapi.dev import issuer
from quoteapi.problems import ApiError, Problem

DEV_USER = "user_dev"
# Clerk's session tokens live 60 s; the page refreshes shortly before expiry, as Clerk's SDK does.
TOKEN_TTL_SECONDS = 60
TOKEN_PATH = "/dev/token"  # noqa: S105 - a URL path, not a secret
HOST_NOT_LOOPBACK = Problem(403, "host-not-loopback", "Dev tokens are for loopback only")


class DevTokenRequest(BaseModel):
    """Whom to sign in as; any Clerk-looking user id will do."""

    user_id: str = Field(default=DEV_USER, pattern=r"^[A-Za-z0-9_-]{1,64}$")


class DevToken(BaseModel):
    token: str
    user_id: str
    expires_in: int


def build_router(data_dir: Path) -> APIRouter:
    """The token route, signing with the dev issuer's key in `data_dir`."""
    key = issuer.load_or_create_key(data_dir)
    router = APIRouter(tags=["dev"], include_in_schema=False)

    @router.post(TOKEN_PATH)
    async def dev_token(
        request: Request, body: Annotated[DevTokenRequest | None, Body()] = None
    ) -> DevToken:
        # A page on another site can make the browser's name for it resolve to 127.0.0.1 (DNS
        # rebinding); its requests then carry that name in Host. Only loopback names mint.
        if not is_loopback_host(_host_name(request.headers.get("host", ""))):
            raise ApiError(
                HOST_NOT_LOOPBACK,
                "POST /dev/token answers only requests addressed to 127.0.0.1, [::1] or localhost.",
            )
        user_id = (body or DevTokenRequest()).user_id
        # `azp` is the page's origin, as Clerk sets it, so CLERK_AUTHORIZED_PARTIES applies.
        origin = request.headers.get("origin")
        azp = origin if origin and origin != "null" else "http://localhost:5173"
        token = issuer.mint_session_token(key, user_id, ttl=TOKEN_TTL_SECONDS, azp=azp)
        return DevToken(token=token, user_id=user_id, expires_in=TOKEN_TTL_SECONDS)

    return router


def _host_name(host: str) -> str:
    """The name in a Host header, without its port (`[::1]:8000` -> `::1`)."""
    if host.startswith("["):
        return host[1:].partition("]")[0]
    return host.rpartition(":")[0] if host.count(":") == 1 else host
