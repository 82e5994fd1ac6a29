"""The `CurrentUser` dependency: the verified caller, or a 401/503 problem."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Request

from quoteapi.auth.keys import KeysUnavailable
from quoteapi.auth.problems import AUTH_UNAVAILABLE, TOKEN_MALFORMED, TOKEN_MISSING, TokenRejected
from quoteapi.auth.verify import TokenVerifier, VerifiedUser
from quoteapi.logs import EventLog
from quoteapi.problems import RETRY_AFTER_SECONDS, ApiError, Problem
from quoteapi.services import services_of

__all__ = ["CurrentUser", "VerifiedUser", "authenticate", "current_user", "rejection"]

log = EventLog("quoteapi.auth")

SESSION_COOKIE = "__session"
_CHALLENGE = 'Bearer realm="quoteapi"'
# How OpenAPI documents the session token: the scheme, and what a route that takes one declares
# (`openapi_extra`). Documentation only: `current_user` reads the header itself.
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
    """`Authorization: Bearer <token>`; only when that header is absent, the `__session` cookie.
    Two of either are refused: which one names the caller would depend on the parser."""
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
            headers={"WWW-Authenticate": _CHALLENGE},
        )
    scheme, _, token = authorizations[0].partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise TokenRejected(TOKEN_MALFORMED, "The Authorization header is not `Bearer <token>`.")
    return token


async def authenticate(request: Request, verifier: TokenVerifier) -> VerifiedUser:
    """The caller named by the request's Clerk session token, verified by `verifier`; a 401
    (or 503 when the signing keys cannot be had) problem otherwise."""
    try:
        return await verifier.verify(_token_from(request))
    except TokenRejected as exc:
        raise rejection(exc.problem, exc.detail) from None
    except KeysUnavailable:
        log.warning("auth_unavailable", code=AUTH_UNAVAILABLE.code)
        raise ApiError(
            AUTH_UNAVAILABLE,
            "The Clerk signing keys cannot be fetched right now; retry shortly.",
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        ) from None


def rejection(problem: Problem, detail: str) -> ApiError:
    """The 401 for a token refused for `problem`, with RFC 6750's challenge, logged by its code
    only: token contents never reach the logs."""
    log.info("token_rejected", code=problem.code)
    # RFC 6750 limits error_description to printable ASCII without `"` and `\`.
    description = "".join(c for c in detail if " " <= c <= "~" and c not in '"\\')
    challenge = f'{_CHALLENGE}, error="invalid_token", error_description="{description}"'
    return ApiError(problem, detail, headers={"WWW-Authenticate": challenge})


async def current_user(request: Request) -> VerifiedUser:
    """The verified caller, by the app's verifier. A test that needs its own verifier overrides
    this with one that calls `authenticate`."""
    return await authenticate(request, services_of(request).verifier)


CurrentUser = Annotated[VerifiedUser, Depends(current_user)]
