"""RFC 9457 problem+json: every error the API returns is one of these problems."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy import exc as sa_exc
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger("quoteapi.errors")

PROBLEM_MEDIA_TYPE = "application/problem+json"
# How long a client should wait before retrying when a dependency (database, Clerk) is down.
RETRY_AFTER_SECONDS = 5


@dataclass(frozen=True)
class Problem:
    """One kind of error: its status, its stable machine `code` and its human title."""

    status: int
    code: str
    title: str

    @property
    def type(self) -> str:
        return f"/problems/{self.code}"


BAD_REQUEST = Problem(400, "bad-request", "Bad request")
NOT_FOUND = Problem(404, "not-found", "Not found")
METHOD_NOT_ALLOWED = Problem(405, "method-not-allowed", "Method not allowed")
VALIDATION_FAILED = Problem(422, "validation-failed", "Request validation failed")
INTERNAL_ERROR = Problem(500, "internal-error", "Internal server error")
DATABASE_UNAVAILABLE = Problem(503, "database-unavailable", "Database unavailable")

_BY_STATUS = {p.status: p for p in (BAD_REQUEST, NOT_FOUND, METHOD_NOT_ALLOWED)}


class ApiError(Exception):
    """Raised anywhere in a request to answer with `problem`."""

    def __init__(
        self,
        problem: Problem,
        detail: str,
        *,
        headers: Mapping[str, str] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(detail)
        self.problem = problem
        self.detail = detail
        self.headers = dict(headers or {})
        self.extra = dict(extra or {})


def problem_response(
    request: Request,
    problem: Problem,
    detail: str,
    *,
    headers: Mapping[str, str] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> JSONResponse:
    """The problem+json response, carrying the request id."""
    body: dict[str, Any] = {
        "type": problem.type,
        "title": problem.title,
        "status": problem.status,
        "detail": detail,
        "code": problem.code,
        "request_id": getattr(request.state, "request_id", None),
        **(extra or {}),
    }
    return JSONResponse(
        body, status_code=problem.status, headers=dict(headers or {}), media_type=PROBLEM_MEDIA_TYPE
    )


def is_database_unavailable(exc: BaseException) -> bool:
    """True for failures that mean "the database cannot be reached now", not a bug."""
    if isinstance(exc, sa_exc.DBAPIError):
        return exc.connection_invalidated or isinstance(
            exc, sa_exc.OperationalError | sa_exc.InterfaceError
        )
    return isinstance(exc, sa_exc.TimeoutError | OSError | TimeoutError)


async def _api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return problem_response(request, exc.problem, exc.detail, headers=exc.headers, extra=exc.extra)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    problem = _BY_STATUS.get(exc.status_code) or Problem(
        exc.status_code, f"http-{exc.status_code}", str(exc.detail)
    )
    detail = {
        404: f"No route matches {request.url.path}.",
        405: f"{request.method} is not allowed on {request.url.path}.",
    }.get(exc.status_code, str(exc.detail))
    return problem_response(request, problem, detail, headers=exc.headers)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [
        {"pointer": "/" + "/".join(str(part) for part in err["loc"][1:]), "detail": err["msg"]}
        for err in exc.errors()
    ]
    first = errors[0] if errors else {"pointer": "", "detail": "invalid request"}
    return problem_response(
        request,
        VALIDATION_FAILED,
        f"{first['pointer'] or 'request'}: {first['detail']}",
        extra={"errors": errors},
    )


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    if is_database_unavailable(exc):
        log.warning("event=database_unavailable error=%s", type(exc).__name__)
        return problem_response(
            request,
            DATABASE_UNAVAILABLE,
            "The database cannot be reached right now; retry shortly.",
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        )
    log.error("event=unhandled_error error=%s", type(exc).__name__, exc_info=exc)
    return problem_response(
        request, INTERNAL_ERROR, "Something went wrong on our side; it has been logged."
    )


def install_error_handlers(app: FastAPI) -> None:
    """Make every error, FastAPI's own included, a problem+json response."""
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _unexpected_error)


# --- Webhooks (POST /webhooks/clerk): one problem per reason a delivery is refused ------------
WEBHOOK_MISSING_HEADER = Problem(400, "webhook-missing-header", "Webhook header missing")
WEBHOOK_MALFORMED_HEADER = Problem(400, "webhook-malformed-header", "Webhook header malformed")
WEBHOOK_STALE = Problem(400, "webhook-stale", "Webhook timestamp too old")
WEBHOOK_FUTURE = Problem(400, "webhook-future", "Webhook timestamp in the future")
WEBHOOK_INVALID_SIGNATURE = Problem(400, "webhook-invalid-signature", "Webhook signature invalid")
WEBHOOK_INVALID_BODY = Problem(400, "webhook-invalid-body", "Webhook body invalid")
WEBHOOK_TOO_LARGE = Problem(413, "webhook-too-large", "Webhook body too large")


# --- quoteapi.auth: session-token problems (one per rejection cause) -------------------------
TOKEN_MISSING = Problem(401, "token-missing", "Authentication required")
TOKEN_MALFORMED = Problem(401, "token-malformed", "Malformed session token")
TOKEN_TOO_LARGE = Problem(401, "token-too-large", "Session token too large")
TOKEN_INVALID_ALGORITHM = Problem(401, "token-invalid-algorithm", "Unsupported token algorithm")
TOKEN_TYPE_NOT_SESSION = Problem(401, "token-type-not-session", "Not a session token")
TOKEN_UNKNOWN_KEY = Problem(401, "token-unknown-key", "Token signed by an unknown key")
TOKEN_INVALID_SIGNATURE = Problem(401, "token-invalid-signature", "Invalid token signature")
TOKEN_MISSING_CLAIM = Problem(401, "token-missing-claim", "Session token lacks a claim")
TOKEN_EXPIRED = Problem(401, "token-expired", "Session token expired")
TOKEN_NOT_ACTIVE_YET = Problem(401, "token-not-active-yet", "Session token not valid yet")
TOKEN_IAT_IN_THE_FUTURE = Problem(401, "token-iat-in-the-future", "Session token issued later")
TOKEN_INVALID_ISSUER = Problem(401, "token-invalid-issuer", "Session token from another issuer")
TOKEN_INVALID_AUTHORIZED_PARTY = Problem(
    401, "token-invalid-authorized-party", "Session token minted for another origin"
)
TOKEN_SESSION_PENDING = Problem(401, "token-session-pending", "Session not active yet")
AUTH_UNAVAILABLE = Problem(503, "auth-unavailable", "Authentication temporarily unavailable")
