"""Every statement on user_messages, and the row-level-security binding that goes with each.

The table's policy (migration 0003) admits only the row whose user_id equals the transaction's
`app.user_id` setting, so each method takes the caller's user id and binds it before the table
is touched: reads and upserts in the same statement (one round trip), conditional writes in a
transaction that sets it first. Statements are built once per process and run with parameters:
building SQL per request costs more CPU than running it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Concatenate, ParamSpec, TypeVar

from sqlalchemy import (
    BigInteger,
    Boolean,
    Subquery,
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

from quoteapi.messages.etags import TagList
from quoteapi.messages.models import UserMessage, version_seq

# The row-level-security policy on user_messages admits the row whose user_id equals this
# transaction-local setting (migration 0003).
USER_SETTING = "app.user_id"

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


def _version_in(name: str) -> Any:
    """SQL: the stored version is one the list parameter `name` allows (`name_any`: any)."""
    versions = bindparam(name, type_=ARRAY(BigInteger))
    return or_(bindparam(f"{name}_any", type_=Boolean), _c.version == any_(versions))


def _list_params(name: str, tags: TagList | None, *, absent: bool) -> dict[str, Any]:
    """Parameters for `_version_in(name)`; `absent`: what a missing header means."""
    if tags is None:
        return {f"{name}_any": absent, name: []}
    return {f"{name}_any": tags.any, name: list(tags.versions)}


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """A user's quote as stored; `created` is true when the write that returned it inserted it."""

    message: str
    created_at: datetime
    updated_at: datetime
    version: int
    created: bool = False


def _acting_user(*, rls: bool) -> Subquery:
    """A one-row subquery `acting(user_id)` of the parameter `caller`; with `rls` it also binds
    the running statement's transaction to that user, so a single statement needs no
    set_config round trip. Statements reach user_messages only through it (JOIN LATERAL, or
    INSERT ... SELECT), so PostgreSQL evaluates set_config before it touches the table and the
    policy sees the setting; OFFSET 0 keeps the planner from inlining the call elsewhere."""
    if not rls:
        return select(_CALLER.label("user_id")).subquery("acting")
    bind = func.set_config(USER_SETTING, _CALLER, True)
    return select(bind.label("user_id")).offset(0).subquery("acting")


class MessageStatements:
    """The statements of the repository (`rls`: bind the caller for row-level security; off
    only for a role that bypasses it anyway)."""

    def __init__(self, *, rls: bool) -> None:
        self.rls = rls
        acting = _acting_user(rls=rls)
        mine = select(*_RETURNED).where(_c.user_id == acting.c.user_id).lateral("mine")
        self.read: Any = select(*mine.c).select_from(acting).join(mine, true())
        upsert = insert(_table).from_select(
            ["user_id", "message"], select(acting.c.user_id, bindparam("quote", type_=Text))
        )
        replace = {"message": upsert.excluded.message, **_NEW_VERSION}
        self.save: Any = upsert.on_conflict_do_update(
            index_elements=[_c.user_id], set_=replace
        ).returning(*_RETURNED, _CREATED)
        self.create_only: Any = upsert.on_conflict_do_nothing().returning(*_RETURNED, _CREATED)
        # Create, or replace unless the stored version is one If-None-Match names.
        self.save_unless: Any = upsert.on_conflict_do_update(
            index_elements=[_c.user_id], set_=replace, where=~_version_in("none_match")
        ).returning(*_RETURNED, _CREATED)
        # Conditional writes run in a transaction bound to the caller first (`begin_for_user`).
        self.replace: Any = (
            update(_table)
            .where(_c.user_id == _CALLER, _version_in("match"), ~_version_in("none_match"))
            .values(message=bindparam("quote"), **_NEW_VERSION)
            .returning(*_RETURNED, false().label("created"))
        )
        self.delete: Any = (
            delete(_table).where(_c.user_id == _CALLER, _version_in("match")).returning(_c.version)
        )


# Built once, at import, for either DATABASE_ROW_LEVEL_SECURITY: a request only picks one.
_STATEMENTS = {rls: MessageStatements(rls=rls) for rls in (False, True)}


P = ParamSpec("P")
R = TypeVar("R")


def _unit_of_work(
    method: Callable[Concatenate[Messages, P], Coroutine[Any, Any, R]],
) -> Callable[Concatenate[Messages, P], Coroutine[Any, Any, R]]:
    """A repository method is one unit of work: if a transaction pooler breaks one of its
    statements, it runs once more in pooler-safe mode (`database.engine.Database.retrying`,
    inlined: the first try costs no extra coroutine)."""

    @functools.wraps(method)
    async def run(self: Messages, /, *args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await method(self, *args, **kwargs)
        except DBAPIError as exc:
            database = self._session.info.get("database")
            if database is None:
                raise
            await database.prepare_retry(exc, self._session)
        return await method(self, *args, **kwargs)

    return run


class Messages:
    """The quotes, as one request's session sees them; every method acts for `user_id` only
    (`rls`: DATABASE_ROW_LEVEL_SECURITY, bind it for row-level security)."""

    def __init__(self, session: AsyncSession, *, rls: bool) -> None:
        self._session = session
        self._statements = _STATEMENTS[rls]

    @_unit_of_work
    async def read(self, user_id: str) -> StoredMessage | None:
        row = (await self._session.exec(self._statements.read, params={"caller": user_id})).first()
        return None if row is None else StoredMessage(*row)

    @_unit_of_work
    async def save(
        self, user_id: str, quote: str, *, if_none_match: TagList | None = None
    ) -> StoredMessage | None:
        """Create the quote, or replace it unless `if_none_match` names its version (`*`:
        create only); None when the condition kept the stored quote."""
        params = {"caller": user_id, "quote": quote}
        if if_none_match is None:
            return await self._write(self._statements.save, params)
        if if_none_match.any:
            return await self._write(self._statements.create_only, params)
        params |= _list_params("none_match", if_none_match, absent=False)
        return await self._write(self._statements.save_unless, params)

    @_unit_of_work
    async def replace(
        self, user_id: str, quote: str, *, if_match: TagList, if_none_match: TagList | None
    ) -> StoredMessage | None:
        """Replace the stored quote only if its version satisfies both conditions (lost-update
        protection); None when there is no such quote."""
        params = {
            "caller": user_id,
            "quote": quote,
            **_list_params("match", if_match, absent=True),
            **_list_params("none_match", if_none_match, absent=False),
        }
        await self._begin_for(user_id)
        return await self._write(self._statements.replace, params)

    @_unit_of_work
    async def delete(self, user_id: str, *, if_match: TagList | None = None) -> bool:
        """Delete the quote (only at a version `if_match` allows); False when nothing was."""
        params = {"caller": user_id, **_list_params("match", if_match, absent=True)}
        await self._begin_for(user_id)
        row = (await self._session.exec(self._statements.delete, params=params)).first()
        await self._session.commit()
        return row is not None

    async def _write(self, statement: Any, params: dict[str, Any]) -> StoredMessage | None:
        row = (await self._session.exec(statement, params=params)).first()
        await self._session.commit()
        return None if row is None else StoredMessage(*row)

    async def _begin_for(self, user_id: str) -> None:
        await begin_for_user(self._session, user_id, rls=self._statements.rls)


_BIND_CALLER: Any = select(func.set_config(USER_SETTING, _CALLER, True))


async def begin_for_user(session: AsyncSession, user_id: str, *, rls: bool) -> None:
    """Open a real transaction on `session` (even an autocommit one) bound to `user_id` (with
    `rls`), for statements that cannot carry the binding themselves; the webhook's erasure
    uses it too."""
    await session.connection(execution_options={"isolation_level": "READ COMMITTED"})
    if rls:
        await session.exec(_BIND_CALLER, params={"caller": user_id})
