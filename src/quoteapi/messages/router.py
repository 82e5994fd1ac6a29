"""/me/message: the caller's one quote. The user id comes only from the verified token."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Header, Request, Response
from fastapi.responses import JSONResponse

from quoteapi.auth.deps import SESSION_TOKEN_REQUIRED, CurrentUser, VerifiedCallerFirst
from quoteapi.auth.problems import AUTH_UNAVAILABLE, TOKEN_EXPIRED, TOKEN_MISSING
from quoteapi.database.problems import DATABASE_UNAVAILABLE
from quoteapi.messages.etags import TagList, etag
from quoteapi.messages.repository import Messages, StoredMessage
from quoteapi.messages.schemas import MessageIn, MessageOut
from quoteapi.problems import (
    INTERNAL_ERROR,
    INVALID_JSON,
    PAYLOAD_TOO_LARGE,
    UNSUPPORTED_MEDIA_TYPE,
    VALIDATION_FAILED,
    ApiError,
    Problem,
    problem_doc,
)
from quoteapi.services import ServicesDep, services_of

MESSAGE_NOT_FOUND = Problem(404, "message-not-found", "No quote stored")
PRECONDITION_FAILED = Problem(412, "precondition-failed", "Precondition failed")

# Errors every route here can answer, documented once for all of them.
_AUTHENTICATED_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: problem_doc("Missing or invalid session token", TOKEN_MISSING, TOKEN_EXPIRED),
    500: problem_doc("Unexpected error (no internals disclosed)", INTERNAL_ERROR),
    503: problem_doc(
        "The database or Clerk's signing keys cannot be reached; see Retry-After",
        DATABASE_UNAVAILABLE,
        AUTH_UNAVAILABLE,
        headers={"Retry-After": {"schema": {"type": "integer"}}},
    ),
}

router = APIRouter(
    prefix="/me",
    tags=["me"],
    responses=_AUTHENTICATED_RESPONSES,
    route_class=VerifiedCallerFirst,
)


async def user_messages(request: Request, user: CurrentUser) -> AsyncIterator[Messages]:
    """The quotes repository on a database session for this request. It depends on the
    verified caller, so no database slot is taken before the token is checked."""
    services = services_of(request)
    async with services.database.session() as session:
        yield Messages(session, rls=services.settings.database_row_level_security)


async def quote_text(body: Annotated[MessageIn, Body()], services: ServicesDep) -> str:
    """The PUT body's quote, trimmed and within QUOTEAPI_MESSAGE_MAX_LENGTH (else a 422)."""
    return body.within(services.settings.quoteapi_message_max_length)


UserMessages = Annotated[Messages, Depends(user_messages)]
Quote = Annotated[str, Depends(quote_text)]
IfMatch = Annotated[
    str | None,
    Header(
        description="Only act if the stored quote still has this ETag (`*`: if one exists). "
        "Protects against lost updates between two open tabs."
    ),
]
IfNoneMatch = Annotated[
    str | None,
    Header(
        description="GET: answer 304 if the quote still has this ETag. "
        "PUT with `*`: create only, never replace."
    ),
]

_MESSAGE_EXAMPLE = {
    "message": "Stay hungry, stay foolish.",
    "created_at": "2026-11-26T09:30:00.123456Z",
    "updated_at": "2026-11-26T09:30:00.123456Z",
}
_ETAG_HEADER = {
    "ETag": {"description": "Version of the quote", "required": True, "schema": {"type": "string"}}
}
_QUOTE_RESPONSE = {
    "headers": _ETAG_HEADER,
    "content": {"application/json": {"example": _MESSAGE_EXAMPLE}},
}


@router.get(
    "/message",
    openapi_extra=SESSION_TOKEN_REQUIRED,
    summary="Read your quote",
    response_model=MessageOut,
    responses={
        200: _QUOTE_RESPONSE,
        304: {"description": "Unchanged since the ETag in If-None-Match", "headers": _ETAG_HEADER},
        404: problem_doc("No quote stored", MESSAGE_NOT_FOUND),
    },
)
async def get_message(
    user: CurrentUser, messages: UserMessages, if_none_match: IfNoneMatch = None
) -> Response:
    stored = await messages.read(user.user_id)
    if stored is None:
        raise _not_found()
    if if_none_match is not None and TagList.parse(if_none_match).matches(stored.version):
        return Response(status_code=304, headers={"ETag": etag(stored.version)})
    return _quote_response(stored)


@router.put(
    "/message",
    openapi_extra=SESSION_TOKEN_REQUIRED,
    summary="Save or replace your quote",
    response_model=MessageOut,
    status_code=200,
    responses={
        200: {"description": "Replaced", **_QUOTE_RESPONSE},
        201: {
            "description": "Created",
            "model": MessageOut,
            **_QUOTE_RESPONSE,
            "headers": {
                **_ETAG_HEADER,
                "Location": {
                    "description": "/me/message",
                    "required": True,
                    "schema": {"type": "string"},
                },
            },
        },
        400: problem_doc("The body is not JSON", INVALID_JSON),
        412: problem_doc("If-Match or If-None-Match did not hold", PRECONDITION_FAILED),
        413: problem_doc("The body is over the size limit", PAYLOAD_TOO_LARGE),
        415: problem_doc("The body is not sent as JSON", UNSUPPORTED_MEDIA_TYPE),
        422: problem_doc("The quote is not acceptable", VALIDATION_FAILED),
    },
)
async def put_message(
    user: CurrentUser,
    quote: Quote,
    messages: UserMessages,
    if_match: IfMatch = None,
    if_none_match: IfNoneMatch = None,
) -> Response:
    none_match = None if if_none_match is None else TagList.parse(if_none_match)
    if if_match is None:
        stored = await messages.save(user.user_id, quote, if_none_match=none_match)
    else:
        stored = await messages.replace(
            user.user_id, quote, if_match=TagList.parse(if_match), if_none_match=none_match
        )
    if stored is None:
        raise _precondition_failed()
    return _quote_response(stored, 201 if stored.created else 200)


@router.delete(
    "/message",
    openapi_extra=SESSION_TOKEN_REQUIRED,
    summary="Delete your quote",
    status_code=204,
    responses={
        204: {"description": "Deleted"},
        404: problem_doc("No quote stored", MESSAGE_NOT_FOUND),
        412: problem_doc("If-Match did not hold", PRECONDITION_FAILED),
    },
)
async def delete_message(
    user: CurrentUser, messages: UserMessages, if_match: IfMatch = None
) -> Response:
    match = None if if_match is None else TagList.parse(if_match)
    if not await messages.delete(user.user_id, if_match=match):
        raise _precondition_failed() if match is not None else _not_found()
    return Response(status_code=204)


def _quote_response(stored: StoredMessage, status: int = 200) -> JSONResponse:
    body = MessageOut(
        message=stored.message, created_at=stored.created_at, updated_at=stored.updated_at
    )
    headers = {"ETag": etag(stored.version), "Cache-Control": "private, no-cache"}
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
