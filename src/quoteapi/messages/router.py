"""/me/message: the caller's one quote. The user id comes only from the verified token."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from quoteapi.auth.deps import SESSION_TOKEN_REQUIRED, CurrentUser
from quoteapi.auth.problems import AUTH_UNAVAILABLE, SESSION_REVOKED, TOKEN_EXPIRED, TOKEN_MISSING
from quoteapi.bodies import read_body
from quoteapi.database.failures import DATABASE_PROBLEMS
from quoteapi.messages import repository
from quoteapi.messages.etags import TagList, etag
from quoteapi.messages.repository import USER_DELETED, Deletion, StoredMessage
from quoteapi.messages.schemas import MessageIn, MessageOut
from quoteapi.problems import (
    INTERNAL_ERROR,
    INVALID_JSON,
    PAYLOAD_TOO_LARGE,
    SEND_AS_JSON,
    UNSUPPORTED_MEDIA_TYPE,
    VALIDATION_FAILED,
    ApiError,
    Problem,
    is_json_media_type,
    problem_doc,
)
from quoteapi.services import services_of

MESSAGE_NOT_FOUND = Problem(404, "message-not-found", "No quote stored")
PRECONDITION_FAILED = Problem(412, "precondition-failed", "Precondition failed")
# The PUT body: a quote of at most a few KiB, JSON-escaped.
BODY_LIMIT = 16 * 1024

router = APIRouter(
    prefix="/me",
    tags=["me"],
    # Errors every route here can answer, documented once for all of them.
    responses={
        401: problem_doc(
            "Missing or invalid session token, or its session ended",
            TOKEN_MISSING,
            TOKEN_EXPIRED,
            SESSION_REVOKED,
        ),
        500: problem_doc("Unexpected error (no internals disclosed)", INTERNAL_ERROR),
        503: problem_doc(
            "The database or Clerk's signing keys cannot serve the request now (`code` says "
            "which wait ran out); retry after Retry-After",
            *DATABASE_PROBLEMS,
            AUTH_UNAVAILABLE,
        ),
    },
)


# The handlers read the conditional headers and the body themselves, so their documentation is
# written here as FastAPI would have generated it: solving the headers as parameters cost 13%
# of GET and 18% of PUT throughput (bench/README.md), and FastAPI reads a body declared as a
# parameter before any dependency, before the caller is verified.
def _optional_header(name: str, description: str) -> dict[str, Any]:
    schema = {"description": description, "title": name, "type": "string"}
    return {
        "description": description,
        "in": "header",
        "name": name.lower(),
        "required": False,
        "schema": schema,
    }


def _header(description: str) -> dict[str, Any]:
    return {"description": description, "required": True, "schema": {"type": "string"}}


def body_schemas(max_length: int) -> dict[str, Any]:
    """The schemas, by name, of the bodies read here, for the OpenAPI document."""
    return {"MessageIn": MessageIn.openapi_schema(max_length)}


_CONDITIONAL = {
    **SESSION_TOKEN_REQUIRED,
    "parameters": [
        _optional_header(
            "If-Match",
            "Only act if the stored quote still has one of these ETags (`*`: if one exists); "
            'otherwise 412. Compared strongly: a weak tag (`W/"7"`) never matches. '
            "Protects against lost updates between two open tabs.",
        ),
        _optional_header(
            "If-None-Match",
            "Only act if the stored quote has none of these ETags (`*`: if none is stored); "
            "otherwise GET answers 304, PUT and DELETE 412. `PUT` with `*` creates only, never "
            "replaces.",
        ),
    ],
}
_ETAG = {"ETag": _header("Version of the quote")}
_EXAMPLE = {
    "message": "Stay hungry, stay foolish.",
    "created_at": "2026-11-26T09:30:00.123456Z",
    "updated_at": "2026-11-26T09:30:00.123456Z",
}
_QUOTE = {"headers": _ETAG, "content": {"application/json": {"example": _EXAMPLE}}}


@router.get(
    "/message",
    openapi_extra=_CONDITIONAL,
    summary="Read your quote",
    response_model=MessageOut,
    responses={
        200: _QUOTE,
        304: {"description": "Unchanged since the ETag in If-None-Match", "headers": _ETAG},
        404: problem_doc("No quote stored", MESSAGE_NOT_FOUND),
        412: problem_doc("If-Match did not hold", PRECONDITION_FAILED),
    },
)
async def get_message(request: Request, user: CurrentUser) -> Response:
    async with services_of(request).database.unit() as session:
        stored = await repository.read_quote(session, user)
    if stored is None:
        raise _not_found()
    # RFC 9110, section 13.2.2: If-Match first, then If-None-Match.
    match, none_match = _conditions(request)
    if match is not None and not match.matches(stored.version):
        raise _precondition_failed()
    if none_match is not None and none_match.matches(stored.version):
        return Response(status_code=304, headers=_validators(stored))
    return _quote_response(stored)


@router.put(
    "/message",
    openapi_extra={
        **_CONDITIONAL,
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/MessageIn"}}},
        },
    },
    summary="Save or replace your quote",
    response_model=MessageOut,
    responses={
        200: {"description": "Replaced", **_QUOTE},
        201: {
            "description": "Created",
            "model": MessageOut,
            **_QUOTE,
            "headers": {**_ETAG, "Location": _header("/me/message")},
        },
        400: problem_doc("The body is not JSON", INVALID_JSON),
        403: problem_doc("The user was deleted in Clerk: nothing can be stored", USER_DELETED),
        412: problem_doc("If-Match or If-None-Match did not hold", PRECONDITION_FAILED),
        413: problem_doc("The body is over the size limit", PAYLOAD_TOO_LARGE),
        415: problem_doc("The body is not sent as JSON", UNSUPPORTED_MEDIA_TYPE),
        422: problem_doc("The quote is not acceptable", VALIDATION_FAILED),
    },
)
async def put_message(request: Request, user: CurrentUser) -> Response:
    quote = await _quote_text(request)
    match, none_match = _conditions(request)
    async with services_of(request).database.unit() as session:
        if match is None:
            stored = await repository.save_quote(session, user, quote, if_none_match=none_match)
        else:
            stored = await repository.replace_quote(
                session, user, quote, if_match=match, if_none_match=none_match
            )
    if stored is None:
        raise _precondition_failed()
    return _quote_response(stored, 201 if stored.created else 200)


@router.delete(
    "/message",
    openapi_extra=_CONDITIONAL,
    summary="Delete your quote",
    status_code=204,
    responses={
        204: {"description": "Deleted"},
        404: problem_doc("No quote stored", MESSAGE_NOT_FOUND),
        412: problem_doc("If-Match or If-None-Match did not hold", PRECONDITION_FAILED),
    },
)
async def delete_message(request: Request, user: CurrentUser) -> Response:
    match, none_match = _conditions(request)
    async with services_of(request).database.unit() as session:
        deletion = await repository.delete_quote(
            session, user, if_match=match, if_none_match=none_match
        )
    # With nothing stored the answer is 404 whatever the conditions (RFC 9110, section 13.2.1).
    if deletion is Deletion.NOTHING_STORED:
        raise _not_found()
    if deletion is Deletion.KEPT:
        raise _precondition_failed()
    return Response(status_code=204)


async def _quote_text(request: Request) -> str:
    """The PUT body's quote, trimmed: 415 when it is not sent as JSON, 400 when it is not JSON,
    422 when the quote is wrong (over QUOTEAPI_MESSAGE_MAX_LENGTH, say)."""
    content_type = request.headers.get("content-type")
    if content_type is not None and not is_json_media_type(content_type):
        raise ApiError(UNSUPPORTED_MEDIA_TYPE, SEND_AS_JSON)
    body = await read_body(request, BODY_LIMIT)
    if not body:
        missing = {"type": "missing", "loc": ("body",), "msg": "Field required", "input": None}
        raise RequestValidationError([missing])
    max_length = services_of(request).settings.quoteapi_message_max_length
    try:
        return MessageIn.model_validate_json(body, context={"max_length": max_length}).message
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        raise RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in errors]) from None


def _conditions(request: Request) -> tuple[TagList | None, TagList | None]:
    """If-Match, compared strongly (RFC 9110, section 13.1.1), and If-None-Match, weakly; None
    for a header not sent. A header's field lines are one list (RFC 9110, section 5.3)."""
    if_match = request.headers.getlist("if-match")
    if_none_match = request.headers.getlist("if-none-match")
    return (
        TagList.parse(", ".join(if_match), strong=True) if if_match else None,
        TagList.parse(", ".join(if_none_match)) if if_none_match else None,
    )


def _validators(stored: StoredMessage) -> dict[str, str]:
    """A 304 sends them as the 200 would (RFC 9110, section 15.4.5). Caches keep the quote for
    its user only, and ask first."""
    return {"ETag": etag(stored.version), "Cache-Control": "private, no-cache"}


def _quote_response(stored: StoredMessage, status: int = 200) -> JSONResponse:
    body = MessageOut(
        message=stored.message, created_at=stored.created_at, updated_at=stored.updated_at
    )
    headers = _validators(stored)
    if status == 201:
        headers["Location"] = "/me/message"
    return JSONResponse(body.model_dump(mode="json"), status_code=status, headers=headers)


def _not_found() -> ApiError:
    return ApiError(MESSAGE_NOT_FOUND, "You have no quote stored; PUT /me/message to save one.")


def _precondition_failed() -> ApiError:
    return ApiError(
        PRECONDITION_FAILED,
        "Your quote changed since you read it (or the condition did not hold): "
        "GET /me/message for the current version and its ETag.",
    )
