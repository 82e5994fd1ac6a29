"""The `CurrentUser` dependency: the verified caller, or a 401/503 problem."""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import Depends, Request, Response
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from quoteapi.auth.keys import KeysUnavailable
from quoteapi.auth.problems import AUTH_UNAVAILABLE, TOKEN_MALFORMED, TOKEN_MISSING
from quoteapi.auth.verify import TokenRejected, TokenVerifier, VerifiedUser
from quoteapi.problems import RETRY_AFTER_SECONDS, ApiError
from quoteapi.services import ServicesDep, get_services

__all__ = [
    "CurrentUser",
    "VerifiedCallerFirst",
    "VerifiedUser",
    "current_user",
    "get_verifier",
]

log = logging.getLogger("quoteapi.auth")

REALM = "quoteapi"
SESSION_COOKIE = "__session"
_CHALLENGE = f'Bearer realm="{REALM}"'
# Parses `Authorization: Bearer <token>` and documents the scheme in OpenAPI; our own code
# answers every case it passes over (no header, another scheme, an empty token).
_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="ClerkSession",
    description="A Clerk session token (`getToken()`); browsers may send the `__session` "
    "cookie instead.",
)


def _one_credential(request: Request) -> None:
    """Two `Authorization` headers, or (when the cookie is used) two `__session` cookies, are
    ambiguous: which one names the caller would depend on the parser. Refuse both."""
    authorizations = request.headers.getlist("authorization")
    if len(authorizations) > 1:
        raise TokenRejected(
            TOKEN_MALFORMED, "The request has two Authorization headers; send exactly one."
        )
    if not authorizations and _session_cookie_count(request) > 1:
        raise TokenRejected(
            TOKEN_MALFORMED,
            "The request has two __session cookies (another app on this domain?); "
            "send the token as `Authorization: Bearer <token>` instead.",
        )


def _session_cookie_count(request: Request) -> int:
    # Starlette's `request.cookies` keeps the last of repeated names: count the raw pairs.
    return sum(
        pair.split("=", 1)[0].strip() == SESSION_COOKIE
        for cookie in request.headers.getlist("cookie")
        for pair in cookie.split(";")
    )


def _token_from(request: Request) -> str:
    """`Authorization: Bearer <token>`; only when that header is absent, the `__session` cookie."""
    authorization = request.headers.get("authorization")
    if authorization is None:
        cookie = request.cookies.get(SESSION_COOKIE)
        if cookie:
            return cookie
        raise ApiError(
            TOKEN_MISSING,
            "Send the Clerk session token as `Authorization: Bearer <token>`.",
            headers={"WWW-Authenticate": _CHALLENGE},
        )
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise TokenRejected(TOKEN_MALFORMED, "The Authorization header is not `Bearer <token>`.")
    return token


def _error_description(detail: str) -> str:
    # RFC 6750 limits error_description to printable ASCII without `"` and `\`.
    return "".join(c for c in detail if " " <= c <= "~" and c not in '"\\')


def get_verifier(services: ServicesDep) -> TokenVerifier:
    """The app's token verifier (a test may override this dependency with its own)."""
    return services.verifier


async def current_user(
    request: Request,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    verifier: Annotated[TokenVerifier, Depends(get_verifier)],
) -> VerifiedUser:
    """The caller named by a verified Clerk session token."""
    verified: VerifiedUser | None = request.scope.get(_VERIFIED_BEFORE_BODY)
    if verified is not None:
        return verified
    try:
        _one_credential(request)
        return await verifier.verify(bearer.credentials if bearer else _token_from(request))
    except TokenRejected as exc:
        # The code only: token contents never reach the logs.
        log.info("event=token_rejected code=%s", exc.problem.code)
        challenge = (
            f'{_CHALLENGE}, error="invalid_token", '
            f'error_description="{_error_description(exc.detail)}"'
        )
        raise ApiError(exc.problem, exc.detail, headers={"WWW-Authenticate": challenge}) from None
    except KeysUnavailable:
        log.warning("event=auth_unavailable code=%s", AUTH_UNAVAILABLE.code)
        raise ApiError(
            AUTH_UNAVAILABLE,
            "The Clerk signing keys cannot be fetched right now; retry shortly.",
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        ) from None


CurrentUser = Annotated[VerifiedUser, Depends(current_user)]

# Where VerifiedCallerFirst leaves the caller for `current_user` (an ASGI scope key).
_VERIFIED_BEFORE_BODY = "quoteapi.verified_user"


class VerifiedCallerFirst(APIRoute):
    """A route that verifies the caller before FastAPI reads and parses its body.

    FastAPI decodes a JSON body before it solves any dependency, `CurrentUser` included, so
    an anonymous client with a broken body would get 400 invalid-json and learn how bodies
    are validated. For a route that takes a body, this runs the same check first (no or bad
    token: 401, whatever the body) and hands the caller to `CurrentUser`. Routes without a body
    are left as they are: their dependencies run first anyway."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        if self.body_field is None:
            return handler

        async def verified_first(request: Request) -> Response:
            override = request.app.dependency_overrides.get(get_verifier)
            verifier = override() if override else get_verifier(get_services(request))
            user = await current_user(request, await _bearer(request), verifier)
            request.scope[_VERIFIED_BEFORE_BODY] = user
            return await handler(request)

        return verified_first
