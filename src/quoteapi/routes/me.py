"""/me/message: the caller's one quote. The user id comes only from the verified token."""

from typing import Annotated, Any

from fastapi import APIRouter, Body, Header, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import Row, Text, bindparam, delete, false, literal_column, select, true, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.sql.elements import ColumnElement

from quoteapi.auth.deps import CurrentUser
from quoteapi.db import StatementSessionDep, acting_user, begin_for_user
from quoteapi.errors import (
    INVALID_JSON,
    MESSAGE_NOT_FOUND,
    PAYLOAD_TOO_LARGE,
    PRECONDITION_FAILED,
    UNSUPPORTED_MEDIA_TYPE,
    VALIDATION_FAILED,
    ApiError,
    problem_doc,
)
from quoteapi.models import MessageOut, UserMessage, message_input_model, version_seq
from quoteapi.settings import Settings

_table = UserMessage.__table__  # type: ignore[attr-defined]
_c = _table.c
_RETURNED = (_c.message, _c.create_ts, _c.update_ts, _c.version)

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


def _etag(version: int) -> str:
    return f'"{version}"'


# Versions are PostgreSQL bigints: a tag naming a larger number (or non-ASCII digits, which
# str.isdigit accepts and int() may not) names no stored version.
_MAX_VERSION = 2**63 - 1


def _versions(header: str) -> list[int]:
    """The versions named by an If-Match / If-None-Match list (weak tags compare equal)."""
    versions = []
    for tag in header.split(","):
        tag = tag.strip().removeprefix("W/")
        digits = tag[1:-1] if len(tag) >= 2 and tag[0] == tag[-1] == '"' else ""
        in_range = digits.isascii() and digits.isdigit() and len(digits) <= 19
        if in_range and int(digits) <= _MAX_VERSION:
            versions.append(int(digits))
    return versions


def _version_in(header: str) -> ColumnElement[bool]:
    """SQL condition: the stored version matches the header (`*` matches any stored quote)."""
    if header.strip() == "*":
        return true()
    versions = _versions(header)
    return _c.version.in_(versions) if versions else false()


def _message_response(row: Row[Any], status: int = 200) -> JSONResponse:
    body = MessageOut(message=row.message, created_at=row.create_ts, updated_at=row.update_ts)
    headers = {"ETag": _etag(row.version), "Cache-Control": "private, no-cache"}
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


_MESSAGE_EXAMPLE = {
    "message": "Stay hungry, stay foolish.",
    "created_at": "2026-11-26T09:30:00.123456Z",
    "updated_at": "2026-11-26T09:30:00.123456Z",
}
_ETAG_HEADER = {"ETag": {"description": "Version of the quote", "schema": {"type": "string"}}}


# Statements are built once per app and run with parameters: building SQLAlchemy constructs
# per request costs more CPU than running them. Only the rare conditional variants are built
# per request.
_NEW_VERSION = {"update_ts": literal_column("now()"), "version": version_seq.next_value()}
# xmax is 0 on a row version the statement inserted, not on one it updated.
_CREATED: Any = literal_column("xmax = 0").label("created")


def _read_statement(rls: bool) -> Any:
    acting = acting_user(rls=rls)
    mine = select(*_RETURNED).where(_c.user_id == acting.c.user_id).lateral("mine")
    return select(*mine.c).select_from(acting).join(mine, true())


def _upsert_statement(rls: bool, *, if_none_match: str | None = None) -> Any:
    """Create, or replace unless If-None-Match holds (`*`: create only)."""
    acting = acting_user(rls=rls)
    message = bindparam("quote", type_=Text)
    upsert = insert(_table).from_select(["user_id", "message"], select(acting.c.user_id, message))
    if if_none_match is not None and if_none_match.strip() == "*":
        statement = upsert.on_conflict_do_nothing()
    else:
        statement = upsert.on_conflict_do_update(
            index_elements=[_c.user_id],
            set_={"message": upsert.excluded.message, **_NEW_VERSION},
            where=~_version_in(if_none_match) if if_none_match is not None else None,
        )
    return statement.returning(*_RETURNED, _CREATED)


def build_router(settings: Settings) -> APIRouter:
    """The /me routes; the quote's length limit is a setting, so the body schema is built here."""
    message_in: type[BaseModel] = message_input_model(settings.quoteapi_message_max_length)
    rls = settings.database_row_level_security
    read = _read_statement(rls)
    upsert = _upsert_statement(rls)
    create_only = _upsert_statement(rls, if_none_match="*")
    router = APIRouter(prefix="/me", tags=["me"])

    @router.get(
        "/message",
        summary="Read your quote",
        response_model=MessageOut,
        responses={
            200: {
                "headers": _ETAG_HEADER,
                "content": {"application/json": {"example": _MESSAGE_EXAMPLE}},
            },
            304: {"description": "Unchanged since the ETag in If-None-Match"},
            404: problem_doc("No quote stored", MESSAGE_NOT_FOUND),
        },
    )
    async def get_message(
        user: CurrentUser, session: StatementSessionDep, if_none_match: IfNoneMatch = None
    ) -> Response:
        row = (await session.exec(read, params={"caller": user.user_id})).first()
        if row is None:
            raise _not_found()
        if if_none_match is not None and (
            if_none_match.strip() == "*" or row.version in _versions(if_none_match)
        ):
            return Response(status_code=304, headers={"ETag": _etag(row.version)})
        return _message_response(row)

    @router.put(
        "/message",
        summary="Save or replace your quote",
        response_model=MessageOut,
        status_code=200,
        responses={
            200: {
                "description": "Replaced",
                "headers": _ETAG_HEADER,
                "content": {"application/json": {"example": _MESSAGE_EXAMPLE}},
            },
            201: {
                "description": "Created",
                "model": MessageOut,
                "headers": {
                    **_ETAG_HEADER,
                    "Location": {"description": "/me/message", "schema": {"type": "string"}},
                },
                "content": {"application/json": {"example": _MESSAGE_EXAMPLE}},
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
        session: StatementSessionDep,
        body: Annotated[message_in, Body()],  # type: ignore[valid-type]
        if_match: IfMatch = None,
        if_none_match: IfNoneMatch = None,
    ) -> Response:
        params = {"caller": user.user_id, "quote": body.message}  # type: ignore[attr-defined]
        statement: Any
        if if_match is not None:
            # Replace only what the client last saw: one UPDATE guarded by the version.
            condition = _version_in(if_match)
            if if_none_match is not None:
                condition = condition & ~_version_in(if_none_match)
            await begin_for_user(session, user.user_id, rls=rls)
            statement = (
                update(_table)
                .where(_c.user_id == bindparam("caller"), condition)
                .values(message=bindparam("quote"), **_NEW_VERSION)
                .returning(*_RETURNED, false().label("created"))
            )
        elif if_none_match is None:
            statement = upsert
        elif if_none_match.strip() == "*":
            statement = create_only
        else:
            statement = _upsert_statement(rls, if_none_match=if_none_match)
        row = (await session.exec(statement, params=params)).first()
        await session.commit()
        if row is None:
            raise _precondition_failed()
        return _message_response(row, 201 if row.created else 200)

    @router.delete(
        "/message",
        summary="Delete your quote",
        status_code=204,
        responses={
            204: {"description": "Deleted"},
            404: problem_doc("No quote stored", MESSAGE_NOT_FOUND),
            412: problem_doc("If-Match did not hold", PRECONDITION_FAILED),
        },
    )
    async def delete_message(
        user: CurrentUser, session: StatementSessionDep, if_match: IfMatch = None
    ) -> Response:
        statement = delete(_table).where(_c.user_id == user.user_id)
        if if_match is not None:
            statement = statement.where(_version_in(if_match))
        await begin_for_user(session, user.user_id, rls=rls)
        row = (await session.exec(statement.returning(_c.version))).first()
        await session.commit()
        if row is None:
            raise _precondition_failed() if if_match is not None else _not_found()
        return Response(status_code=204)

    return router
