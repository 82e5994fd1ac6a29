"""Every statement on user_messages, and the binding of the caller that goes with each.

Each statement reads the caller through `act_as` (migration 0004), which binds the transaction
to the caller for row-level security (the table's policy admits only the row whose user_id is
the transaction's `app.user_id` setting), refuses a session that ended and, for a statement
that stores a quote, a user whose deletion was processed: reads and upserts in the same
statement (one round trip), conditional writes in a transaction that binds first. Each runs
inside a unit of work (`Database.run`), which commits. Statements are built once, at import,
and run with parameters: building SQL per request costs more CPU than running it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Text,
    any_,
    bindparam,
    delete,
    false,
    func,
    literal_column,
    or_,
    select,
    true,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY, insert
from sqlalchemy.exc import DBAPIError
from sqlmodel.ext.asyncio.session import AsyncSession

from quoteapi.auth.verify import VerifiedUser
from quoteapi.database.engine import SERVER_WAITS, server_waits, transaction
from quoteapi.messages.etags import TagList
from quoteapi.messages.models import UserMessage, version_seq

_table = UserMessage.__table__  # type: ignore[attr-defined]
_c = _table.c
_RETURNED = (
    _c.message,
    _c.create_ts.label("created_at"),
    _c.update_ts.label("updated_at"),
    _c.version,
)
_NEW_VERSION = {"update_ts": literal_column("now()"), "version": version_seq.next_value()}
# xmax is 0 on a row version the statement inserted, not on one it updated.
_CREATED: Any = literal_column("xmax = 0").label("created")
_CALLER = bindparam("caller", type_=Text)
_SESSION = bindparam("caller_session", type_=Text)


def _version_in(name: str) -> Any:
    """SQL: the stored version is one the list parameter `name` allows (`name_any`: any)."""
    versions = bindparam(name, type_=ARRAY(BigInteger))
    return or_(bindparam(f"{name}_any", type_=Boolean), _c.version == any_(versions))


def _list_params(name: str, tags: TagList | None, *, absent: bool) -> dict[str, Any]:
    """Parameters for `_version_in(name)`; `absent`: what a missing header means."""
    if tags is None:
        return {f"{name}_any": absent, name: []}
    return {f"{name}_any": tags.any, name: list(tags.versions)}


def _condition_params(if_match: TagList | None, if_none_match: TagList | None) -> dict[str, Any]:
    """Parameters for `_version_in("match")` and `~_version_in("none_match")`: an absent
    If-Match allows any version, an absent If-None-Match excludes none."""
    return {
        **_list_params("match", if_match, absent=True),
        **_list_params("none_match", if_none_match, absent=False),
    }


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """A user's quote as stored; `created` is true when the write that returned it inserted it."""

    message: str
    created_at: datetime
    updated_at: datetime
    version: int
    created: bool = False


# The caller as a one-row subquery `acting(user_id)`, whose `act_as` call binds the running
# statement's transaction to the caller and checks them (the module's docstring), so a single
# statement needs no round trip of its own for either. Statements reach user_messages only
# through it (JOIN LATERAL, or INSERT ... SELECT), so PostgreSQL evaluates it before it touches
# the table; OFFSET 0 keeps the planner from inlining the call elsewhere. A statement that may
# wait for a lock reads the server's bounds on lock waits first (`waits`: SERVER_WAITS, in its
# FROM); a read takes none they could end (its table's lock is taken while it is planned, under
# the statement's own bound), so it reads the caller alone.
def _acting(*, writes: bool, waits: bool = True) -> Any:
    acting = select(func.act_as(_CALLER, _SESSION, true() if writes else false()).label("user_id"))
    return (acting.select_from(SERVER_WAITS) if waits else acting).offset(0)


# Run alone, too, for statements that cannot carry the binding (`_bind`).
_BIND_READER: Any = _acting(writes=False)
_BIND_WRITER: Any = _acting(writes=True)
_ACTING = _acting(writes=False, waits=False).subquery("acting")
_WRITER = _BIND_WRITER.subquery("acting")
_mine = select(*_RETURNED).where(_c.user_id == _ACTING.c.user_id).lateral("mine")
_READ: Any = select(*_mine.c).select_from(_ACTING).join(_mine, true())
_upsert = insert(_table).from_select(
    ["user_id", "message"], select(_WRITER.c.user_id, bindparam("quote", type_=Text))
)
_replacement = {"message": _upsert.excluded.message, **_NEW_VERSION}
_SAVE: Any = _upsert.on_conflict_do_update(
    index_elements=[_c.user_id], set_=_replacement
).returning(*_RETURNED, _CREATED)
_CREATE_ONLY: Any = _upsert.on_conflict_do_nothing().returning(*_RETURNED, _CREATED)
# Create, or replace unless the stored version is one If-None-Match names.
_SAVE_UNLESS: Any = _upsert.on_conflict_do_update(
    index_elements=[_c.user_id], set_=_replacement, where=~_version_in("none_match")
).returning(*_RETURNED, _CREATED)
# Conditional writes run in a transaction bound to the caller first (`_bind`).
_REPLACE: Any = (
    update(_table)
    .where(_c.user_id == _CALLER, _version_in("match"), ~_version_in("none_match"))
    .values(message=bindparam("quote"), **_NEW_VERSION)
    .returning(*_RETURNED, false().label("created"))
)
# Deletes the quote if both conditions hold, and says whether a condition kept it or there
# was none. Both parts wait for a PUT or DELETE in flight and judge its outcome: the DELETE
# re-checks the conditions on the row as committed, and the version is read FOR UPDATE (a
# plain read would see the statement's snapshot, and a quote another request deleted meanwhile
# would look kept by a condition: 412 for a DELETE without any).
_stored = select(_c.version).where(_c.user_id == _CALLER).with_for_update().cte("stored")
_gone = (
    delete(_table)
    .where(_c.user_id == _CALLER, _version_in("match"), ~_version_in("none_match"))
    .returning(_c.version)
    .cte("gone")
)
_DELETE: Any = select(
    select(_stored.c.version).scalar_subquery().label("stored"),
    select(_gone.c.version).scalar_subquery().label("deleted"),
)


class SessionRevoked(Exception):
    """The caller's session ended in Clerk (revoked, signed out or removed): its tokens, however
    fresh, no longer act."""


class UserDeleted(Exception):
    """The caller's Clerk user was deleted, and their data erased: nothing can be stored."""


# What `act_as` raises (SQLSTATE, migration 0004), as the exception each means here.
_REFUSALS: dict[str, type[Exception]] = {"QA401": SessionRevoked, "QA403": UserDeleted}


async def _exec(session: AsyncSession, statement: Any, params: dict[str, Any]) -> Any:
    """`session.exec`, with `act_as`'s refusals raised as SessionRevoked or UserDeleted."""
    try:
        return await session.exec(statement, params=params)
    except DBAPIError as exc:
        refusal = _REFUSALS.get(getattr(exc.orig, "sqlstate", None) or "")
        if refusal is None:
            raise
        raise refusal() from None


def _caller(caller: VerifiedUser) -> dict[str, Any]:
    return {"caller": caller.user_id, "caller_session": caller.session_id}


def _bounded_caller(session: AsyncSession, caller: VerifiedUser) -> dict[str, Any]:
    """The parameters of `_acting` with the server's bounds on lock waits."""
    return {**_caller(caller), **server_waits(session)}


async def read_quote(session: AsyncSession, caller: VerifiedUser) -> StoredMessage | None:
    row = (await _exec(session, _READ, _caller(caller))).first()
    return None if row is None else StoredMessage(*row)


async def save_quote(
    session: AsyncSession,
    caller: VerifiedUser,
    quote: str,
    *,
    if_none_match: TagList | None = None,
) -> StoredMessage | None:
    """Create the quote, or replace it unless `if_none_match` names its version (`*`: create
    only); None when the condition kept the stored quote."""
    params = {**_bounded_caller(session, caller), "quote": quote}
    statement = _SAVE
    if if_none_match is not None and if_none_match.any:
        statement = _CREATE_ONLY
    elif if_none_match is not None:
        statement = _SAVE_UNLESS
        params |= _list_params("none_match", if_none_match, absent=False)
    row = (await _exec(session, statement, params)).first()
    return None if row is None else StoredMessage(*row)


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
    params = {"caller": caller.user_id, "quote": quote}
    params |= _condition_params(if_match, if_none_match)
    row = (await session.exec(_REPLACE, params=params)).first()
    return None if row is None else StoredMessage(*row)


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
    params = {"caller": caller.user_id, **_condition_params(if_match, if_none_match)}
    stored, deleted = (await session.exec(_DELETE, params=params)).one()
    if deleted is not None:
        return Deletion.DELETED
    return Deletion.NOTHING_STORED if stored is None else Deletion.KEPT


async def _bind(session: AsyncSession, caller: VerifiedUser, *, writes: bool) -> None:
    """Make the rest of the unit of work one transaction bound to the caller, for statements
    that cannot carry the binding themselves. A writer holds the user's lock until it commits."""
    await transaction(session)
    statement = _BIND_WRITER if writes else _BIND_READER
    await _exec(session, statement, _bounded_caller(session, caller))
