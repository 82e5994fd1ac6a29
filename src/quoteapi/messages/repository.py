"""Every statement on user_messages, each reading the caller through `act_as` (migrations 0004,
0006): it binds the transaction to the caller for row-level security, refuses an ended session
and, for a write, takes the user's lock shared and refuses a deleted user. Reads and upserts
reach the table only through a one-row subquery `acting` that calls it (OFFSET 0: evaluated
first, never inlined): one round trip. Conditional writes run in a transaction that calls it
first (`_BIND`). A unit's first statement that may wait for a lock reads SERVER_WAITS too."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from sqlalchemy import BigInteger, Boolean, DateTime, Executable, Result, Text, column, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.util.typing import TupleAny
from sqlmodel.ext.asyncio.session import AsyncSession

from quoteapi.auth.problems import SESSION_REVOKED, TokenRejected
from quoteapi.auth.verify import VerifiedUser
from quoteapi.database.engine import SERVER_WAITS, server_waits, transaction
from quoteapi.messages.etags import TagList
from quoteapi.problems import ApiError, Problem

USER_DELETED = Problem(403, "user-deleted", "User deleted")


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """A user's quote as stored; `created` is true when the write that returned it inserted it."""

    message: str
    created_at: datetime
    updated_at: datetime
    version: int
    created: bool = False


# What a statement returns, in order: its rows then need no reading of their description.
_QUOTE = (
    column("message", Text),
    column("create_ts", DateTime(timezone=True)),
    column("update_ts", DateTime(timezone=True)),
    column("version", BigInteger),
)
_WRITTEN = (*_QUOTE, column("created", Boolean))
# `created`: xmax is 0 on a row version the statement inserted, not on one ON CONFLICT updated.
# If-Match (`match`) and If-None-Match (`none_match`) are version lists; `*_any` stands for `*`.
_READ: Final = text("""
SELECT mine.message, mine.create_ts, mine.update_ts, mine.version
FROM (SELECT act_as(:caller, :caller_session, false) AS user_id OFFSET 0) AS acting
JOIN LATERAL (
    SELECT message, create_ts, update_ts, version FROM user_messages
    WHERE user_id = acting.user_id
) AS mine ON true
""").columns(*_QUOTE)
# Create, or replace unless the stored version is one If-None-Match names (`*`: create only).
_SAVE: Final = text(f"""
INSERT INTO user_messages (user_id, message)
SELECT acting.user_id, CAST(:quote AS text)
FROM (SELECT act_as(:caller, :caller_session, true) AS user_id FROM {SERVER_WAITS} OFFSET 0)
    AS acting
ON CONFLICT (user_id) DO UPDATE
    SET message = excluded.message, update_ts = now(),
        version = nextval('user_messages_version_seq')
    WHERE NOT (:none_match_any OR user_messages.version = ANY(:none_match))
RETURNING message, create_ts, update_ts, version, xmax = 0 AS created
""").columns(*_WRITTEN)
# The conditional writes run in a transaction bound to the caller first (`_BIND`).
_BIND: Final = text(
    f"SELECT act_as(:caller, :caller_session, :writes) AS user_id FROM {SERVER_WAITS}"
).columns(column("user_id", Text))
_REPLACE: Final = text("""
UPDATE user_messages
SET message = :quote, update_ts = now(), version = nextval('user_messages_version_seq')
WHERE user_id = :caller
    AND (:match_any OR version = ANY(:match))
    AND NOT (:none_match_any OR version = ANY(:none_match))
RETURNING message, create_ts, update_ts, version, false AS created
""").columns(*_WRITTEN)
# Deletes the quote if both conditions hold, and says whether a condition kept it or there was
# none. Both parts wait for a PUT or DELETE in flight and judge its outcome: the DELETE re-checks
# the conditions on the row as committed, and the version is read FOR UPDATE (a plain read would
# see the statement's snapshot, and a quote another request deleted meanwhile would look kept by
# a condition: 412 for a DELETE without any).
_DELETE: Final = text("""
WITH stored AS (SELECT version FROM user_messages WHERE user_id = :caller FOR UPDATE),
gone AS (
    DELETE FROM user_messages
    WHERE user_id = :caller
        AND (:match_any OR version = ANY(:match))
        AND NOT (:none_match_any OR version = ANY(:none_match))
    RETURNING version
)
SELECT (SELECT version FROM stored) AS stored, (SELECT version FROM gone) AS deleted
""").columns(column("stored", BigInteger), column("deleted", BigInteger))


class SessionRevoked(TokenRejected):
    """The caller's session ended in Clerk: its tokens, however fresh, no longer act."""

    def __init__(self) -> None:
        detail = "This session ended in Clerk (signed out, revoked or removed); sign in again."
        super().__init__(SESSION_REVOKED, detail)


class UserDeleted(ApiError):
    """The caller's Clerk user was deleted, and their data erased: nothing can be stored."""

    def __init__(self) -> None:
        detail = "This user was deleted in Clerk and their data erased; nothing is stored."
        super().__init__(USER_DELETED, detail)


# What `act_as` raises (SQLSTATE, migration 0004), as the exception each means here.
_REFUSALS: dict[str, type[SessionRevoked | UserDeleted]] = {
    "QA401": SessionRevoked,
    "QA403": UserDeleted,
}

_Params = dict[str, str | bool | list[int]]


async def _execute(
    session: AsyncSession, statement: Executable, params: _Params
) -> Result[*TupleAny]:
    connection = await session.connection()
    try:
        return await connection.execute(statement, params)
    except DBAPIError as exc:
        refusal = _REFUSALS.get(getattr(exc.orig, "sqlstate", None) or "")
        if refusal is None:
            raise
        raise refusal() from None


async def _stored(
    session: AsyncSession, statement: Executable, params: _Params
) -> StoredMessage | None:
    row = (await _execute(session, statement, params)).first()
    return None if row is None else StoredMessage(*row)


def _caller(caller: VerifiedUser) -> _Params:
    return {"caller": caller.user_id, "caller_session": caller.session_id}


def _conditions(if_match: TagList | None, if_none_match: TagList | None) -> _Params:
    """An absent If-Match allows any version, an absent If-None-Match excludes none."""
    match = if_match or TagList(any=True, versions=())
    none_match = if_none_match or TagList(any=False, versions=())
    return {
        "match_any": match.any,
        "match": list(match.versions),
        "none_match_any": none_match.any,
        "none_match": list(none_match.versions),
    }


async def read_quote(session: AsyncSession, caller: VerifiedUser) -> StoredMessage | None:
    return await _stored(session, _READ, _caller(caller))


async def save_quote(
    session: AsyncSession,
    caller: VerifiedUser,
    quote: str,
    *,
    if_none_match: TagList | None = None,
) -> StoredMessage | None:
    """Create the quote, or replace it unless `if_none_match` names its version (`*`: create
    only); None when the condition kept the stored quote."""
    params = {**_caller(caller), **server_waits(session), **_conditions(None, if_none_match)}
    return await _stored(session, _SAVE, {**params, "quote": quote})


async def replace_quote(
    session: AsyncSession,
    caller: VerifiedUser,
    quote: str,
    *,
    if_match: TagList,
    if_none_match: TagList | None,
) -> StoredMessage | None:
    """Replace the stored quote only if its version satisfies both conditions (lost-update
    protection); None when there is no such quote."""
    await _bind(session, caller, writes=True)
    params = {"caller": caller.user_id, "quote": quote, **_conditions(if_match, if_none_match)}
    return await _stored(session, _REPLACE, params)


class Deletion(enum.Enum):
    DELETED = "deleted"
    KEPT = "kept"  # a condition did not hold
    NOTHING_STORED = "nothing stored"


async def delete_quote(
    session: AsyncSession,
    caller: VerifiedUser,
    *,
    if_match: TagList | None = None,
    if_none_match: TagList | None = None,
) -> Deletion:
    """Delete the quote only if its version satisfies both conditions."""
    await _bind(session, caller, writes=False)
    params = {"caller": caller.user_id, **_conditions(if_match, if_none_match)}
    stored, deleted = (await _execute(session, _DELETE, params)).one()
    if deleted is not None:
        return Deletion.DELETED
    return Deletion.NOTHING_STORED if stored is None else Deletion.KEPT


async def _bind(session: AsyncSession, caller: VerifiedUser, *, writes: bool) -> None:
    """Make the rest of the unit of work one transaction bound to the caller, for statements
    that cannot carry the binding themselves. A writer holds the user's lock until it commits."""
    await transaction(session)
    await _execute(session, _BIND, {**_caller(caller), **server_waits(session), "writes": writes})
