"""The `CurrentUser` dependency: the verified caller, or a 401/503 problem."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Request

from quoteapi.auth.problems import CHALLENGE, TOKEN_MALFORMED, TOKEN_MISSING, TokenRejected
from quoteapi.auth.verify import TokenVerifier, VerifiedUser
from quoteapi.problems import ApiError
from quoteapi.services import services_of

__all__ = ["CurrentUser", "VerifiedUser", "authenticate", "current_user"]

SESSION_COOKIE = "__session"
# How OpenAPI documents the session token (documentation only: `current_user` reads it itself).
SECURITY_SCHEMES = {
    "ClerkSession": {
        "type": "http",
        "scheme": "bearer",
        "description": "A Clerk session token (`getToken()`); browsers may send the "
        "`__session` cookie instead.",
    }
}
SESSION_TOKEN_REQUIRED: dict[str, Any] = {"security": [{"ClerkSession": []}]}


def _token_from(request: Request) -> str:
    """`Authorization: Bearer <token>`, else the `__session` cookie; two of either are refused:
    which one names the caller would depend on the parser."""
    authorizations = request.headers.getlist("authorization")
    if len(authorizations) > 1:
        raise TokenRejected(
            TOKEN_MALFORMED, "The request has two Authorization headers; send exactly one."
        )
    if not authorizations:
        # Starlette's `request.cookies` keeps the last of repeated names: count the raw pairs.
        cookies = sum(
            pair.split("=", 1)[0].strip() == SESSION_COOKIE
            for header in request.headers.getlist("cookie")
            for pair in header.split(";")
        )
        if cookies > 1:
            raise TokenRejected(
                TOKEN_MALFORMED,
                "The request has two __session cookies (another app on this domain?); "
                "send the token as `Authorization: Bearer <token>` instead.",
            )
        if cookie := request.cookies.get(SESSION_COOKIE):
            return cookie
        raise ApiError(
            TOKEN_MISSING,
            "Send the Clerk session token as `Authorization: Bearer <token>`.",
            headers={"WWW-Authenticate": CHALLENGE},
        )
    scheme, _, token = authorizations[0].partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise TokenRejected(TOKEN_MALFORMED, "The Authorization header is not `Bearer <token>`.")
    return token


async def authenticate(request: Request, verifier: TokenVerifier) -> VerifiedUser:
    """The caller the request's session token names, by `verifier`; else a 401 problem (a 503
    when the signing keys cannot be had)."""
    return await verifier.verify(_token_from(request))


async def current_user(request: Request) -> VerifiedUser:
    """The verified caller, by the app's verifier (a test overrides this to use its own)."""
    return await authenticate(request, services_of(request).verifier)


CurrentUser = Annotated[VerifiedUser, Depends(current_user)]
