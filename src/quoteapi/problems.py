"""RFC 9457 problem+json: the Problem type and the HTTP mapping of every exception a request
can raise. A feature defines its problems next to the code that raises them; these are HTTP's."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from quoteapi.logs import EventLog

log = EventLog("quoteapi.errors")

PROBLEM_MEDIA_TYPE = "application/problem+json"
# How long a client should wait before retrying when a dependency (database, Clerk) is down.
RETRY_AFTER_SECONDS = 5


@dataclass(frozen=True)
class Problem:
    status: int
    code: str  # stable, for machines
    title: str


BAD_REQUEST = Problem(400, "bad-request", "Bad request")
INVALID_JSON = Problem(400, "invalid-json", "Body is not valid JSON")
NOT_FOUND = Problem(404, "not-found", "Not found")
METHOD_NOT_ALLOWED = Problem(405, "method-not-allowed", "Method not allowed")
PAYLOAD_TOO_LARGE = Problem(413, "payload-too-large", "Request body too large")
UNSUPPORTED_MEDIA_TYPE = Problem(415, "unsupported-media-type", "Unsupported media type")
VALIDATION_FAILED = Problem(422, "validation-failed", "Request validation failed")
INTERNAL_ERROR = Problem(500, "internal-error", "Internal server error")

_BY_STATUS = {p.status: p for p in (BAD_REQUEST, NOT_FOUND, METHOD_NOT_ALLOWED)}
_NOT_JSON = "The request body could not be parsed as JSON."
SEND_AS_JSON = "Send the body as JSON with `Content-Type: application/json`."  # the 415's detail


class FieldError(BaseModel):
    """Where a 422 points in the request body (RFC 6901 JSON pointer) and what is wrong there."""

    pointer: str = Field(examples=["/message"])
    detail: str = Field(examples=["Value error, must not be empty or only white space"])


class ProblemDetails(BaseModel):
    """RFC 9457 problem details, as every error response of this API carries them."""

    type: str = Field(examples=["/problems/message-not-found"])
    title: str = Field(examples=["No quote stored"])
    status: int = Field(examples=[404])
    detail: str = Field(examples=["You have no quote stored; PUT /me/message to save one."])
    code: str = Field(description="Stable machine-readable reason", examples=["message-not-found"])
    request_id: str | None = Field(description="The X-Request-ID of the request")
    errors: list[FieldError] | None = Field(default=None, description="422 only: every field")


class ApiError(Exception):
    def __init__(
        self, problem: Problem, detail: str, *, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(detail)
        self.problem = problem
        self.detail = detail
        self.headers = dict(headers or {})


def problem_response(
    request: Request,
    problem: Problem,
    detail: str,
    *,
    headers: Mapping[str, str] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> JSONResponse:
    request_id = getattr(request.state, "request_id", None)
    request.state.problem_code = problem.code  # quoteapi.metrics counts 401s by it
    body = problem_body(problem, detail, request_id, extra)
    # Set here too: a 500 is sent from outside the request-id middleware.
    all_headers = {**(headers or {}), **({"X-Request-ID": request_id} if request_id else {})}
    return JSONResponse(
        body, status_code=problem.status, headers=all_headers, media_type=PROBLEM_MEDIA_TYPE
    )


def problem_body(
    problem: Problem, detail: str, request_id: str | None, extra: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    return {
        "type": f"/problems/{problem.code}",
        "title": problem.title,
        "status": problem.status,
        "detail": detail,
        "code": problem.code,
        "request_id": request_id,
        **(extra or {}),
    }


async def _api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return problem_response(request, exc.problem, exc.detail, headers=exc.headers)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 400 and _is_json(request):  # FastAPI's: not even UTF-8, say
        return problem_response(request, INVALID_JSON, _NOT_JSON)
    problem = _BY_STATUS.get(exc.status_code) or Problem(
        exc.status_code, f"http-{exc.status_code}", str(exc.detail)
    )
    headers = dict(exc.headers or {})
    if exc.status_code == 405 and (allowed := _allowed_methods(request, headers.get("Allow"))):
        headers["Allow"] = ", ".join(allowed)
    detail = {
        404: f"No route matches {request.url.path}.",
        405: f"{request.method} is not allowed on {request.url.path}.",
    }.get(exc.status_code, str(exc.detail))
    return problem_response(request, problem, detail, headers=headers)


def _allowed_methods(request: Request, route_allows: str | None) -> list[str]:
    # Starlette lists only the first matching route's methods (`route_allows`); a path served by
    # several routes (GET, PUT, DELETE) must list them all. The OpenAPI paths are the public map
    # of them; routes outside it (/docs) keep Starlette's list. HEAD is served wherever GET is
    # (RequestContextMiddleware), though FastAPI's routes do not list it.
    methods = {method.strip() for method in (route_allows or "").split(",") if method.strip()}
    for template, operations in request.app.openapi()["paths"].items():
        pattern = re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(template))
        if re.fullmatch(pattern, request.url.path):
            methods |= {method.upper() for method in operations}
    if "GET" in methods:
        methods.add("HEAD")
    return sorted(methods)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    if any(err["type"] == "json_invalid" for err in exc.errors()):
        return problem_response(request, INVALID_JSON, _NOT_JSON)
    if request.method in ("PUT", "POST", "PATCH") and not _is_json(request):
        return problem_response(request, UNSUPPORTED_MEDIA_TYPE, SEND_AS_JSON)
    errors = [
        {"pointer": _json_pointer(err["loc"][1:]), "detail": err["msg"]} for err in exc.errors()
    ]
    first = errors[0] if errors else {"pointer": "", "detail": "invalid request"}
    return problem_response(
        request,
        VALIDATION_FAILED,
        f"{first['pointer'] or 'request'}: {first['detail']}",
        extra={"errors": errors},
    )


def _json_pointer(path: Sequence[object]) -> str:
    """RFC 6901: "" is the whole body, "/message" a field; `~` and `/` escaped in names."""
    return "".join("/" + str(part).replace("~", "~0").replace("/", "~1") for part in path)


def _is_json(request: Request) -> bool:
    return is_json_media_type(request.headers.get("content-type", ""))


def is_json_media_type(content_type: str) -> bool:
    """application/json or application/*+json, parameters aside."""
    media_type = content_type.split(";")[0].strip().lower()
    return media_type == "application/json" or (
        media_type.startswith("application/") and media_type.endswith("+json")
    )


async def unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    log.error("unhandled_error", exc=exc, error=type(exc).__name__)
    return problem_response(
        request, INTERNAL_ERROR, "Something went wrong on our side; it has been logged."
    )


def problem_doc(description: str, *problems: Problem) -> dict[str, Any]:
    """An OpenAPI response entry: the problem schema and one example per `code`; a 503's says
    that it carries Retry-After."""
    retry_after = {"Retry-After": {"schema": {"type": "integer"}}}
    return {
        "description": description,
        "model": ProblemDetails,
        **({"headers": retry_after} if problems[0].status == 503 else {}),
        "content": {
            PROBLEM_MEDIA_TYPE: {
                "examples": {
                    p.code: {"value": problem_body(p, f"({p.title})", "3f2a9c1e")} for p in problems
                }
            }
        },
    }


# Every error, FastAPI's own included, as problem+json; a feature adds its exceptions' handlers.
PROBLEM_HANDLERS: dict[Any, Callable[[Request, Exception], Awaitable[JSONResponse]]] = {
    ApiError: _api_error,
    StarletteHTTPException: _http_error,
    RequestValidationError: _validation_error,
    Exception: unexpected_error,
}
