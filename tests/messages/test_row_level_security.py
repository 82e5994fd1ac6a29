"""Row-level security, the second wall: as the application's role, a query with no user filter
sees and changes only the caller's row, and nothing without the transaction-local setting; the
same holds for the users deleted and sessions ended in Clerk."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from quoteapi.database.url import parse_database_url
from tests.support.app import EMPTY_USER_TABLES, make_settings, running_app
from tests.support.polling import until


@pytest.fixture
async def as_app_role(
    database_url: str, owner_engine: AsyncEngine
) -> AsyncIterator[asyncpg.Connection]:
    """A connection as the application's least-privilege role; alice and bob have quotes,
    were deleted and each have an ended session; bob has one ended too long ago to matter."""
    async with owner_engine.begin() as owner:
        await owner.execute(text(EMPTY_USER_TABLES))
        await owner.execute(
            text(
                "INSERT INTO user_messages (user_id, message)"
                " VALUES ('user_alice', 'Alice''s.'), ('user_bob', 'Bob''s.')"
            )
        )
        await owner.execute(
            text("INSERT INTO erased_users (user_id) VALUES ('user_alice'), ('user_bob')")
        )
        await owner.execute(
            text(
                "INSERT INTO revoked_sessions (session_id, user_id, expires_at) VALUES"
                " ('sess_alice', 'user_alice', now() + interval '1 hour'),"
                " ('sess_bob', 'user_bob', now() + interval '1 hour'),"
                " ('sess_bob_old', 'user_bob', now() - interval '1 second')"
            )
        )
    connection = await asyncpg.connect(**parse_database_url(database_url).connect_kwargs)
    yield connection
    await connection.close()


async def _act_as(connection: asyncpg.Connection, user_id: str) -> None:
    await connection.execute("SELECT set_config('app.user_id', $1, true)", user_id)


async def test_unfiltered_select_sees_only_the_callers_row(as_app_role: asyncpg.Connection) -> None:
    async with as_app_role.transaction():
        await _act_as(as_app_role, "user_alice")
        rows = await as_app_role.fetch("SELECT user_id, message FROM user_messages")
    assert [tuple(r) for r in rows] == [("user_alice", "Alice's.")]


async def test_unfiltered_update_and_delete_change_only_the_callers_row(
    as_app_role: asyncpg.Connection, owner_engine: AsyncEngine
) -> None:
    async with as_app_role.transaction():
        await _act_as(as_app_role, "user_alice")
        assert await as_app_role.execute("UPDATE user_messages SET message = 'Mine.'") == "UPDATE 1"
        assert await as_app_role.execute("DELETE FROM user_messages") == "DELETE 1"
    async with owner_engine.connect() as owner:
        rows = (await owner.execute(text("SELECT user_id, message FROM user_messages"))).all()
    assert [tuple(r) for r in rows] == [("user_bob", "Bob's.")]


async def test_writing_another_users_row_is_refused(as_app_role: asyncpg.Connection) -> None:
    async with as_app_role.transaction():
        await _act_as(as_app_role, "user_alice")
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="row-level security"):
            await as_app_role.execute(
                "INSERT INTO user_messages (user_id, message) VALUES ('user_carol', 'x')"
            )


async def test_without_the_setting_nothing_is_visible_or_writable(
    as_app_role: asyncpg.Connection,
) -> None:
    assert await as_app_role.fetch("SELECT * FROM user_messages") == []
    assert await as_app_role.execute("UPDATE user_messages SET message = 'x'") == "UPDATE 0"
    assert await as_app_role.execute("DELETE FROM user_messages") == "DELETE 0"
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await as_app_role.execute("INSERT INTO user_messages (user_id, message) VALUES ('u', 'x')")


async def test_the_setting_ends_with_its_transaction(as_app_role: asyncpg.Connection) -> None:
    # A pooled connection goes to the next client after the transaction: nothing carries over.
    async with as_app_role.transaction():
        await _act_as(as_app_role, "user_alice")
        assert len(await as_app_role.fetch("SELECT * FROM user_messages")) == 1
    assert await as_app_role.fetch("SELECT * FROM user_messages") == []


async def test_of_the_lifecycle_tables_the_caller_sees_only_its_own_rows_expired_or_not(
    as_app_role: asyncpg.Connection,
) -> None:
    async with as_app_role.transaction():
        await _act_as(as_app_role, "user_bob")
        erased = await as_app_role.fetch("SELECT user_id FROM erased_users")
        ended = await as_app_role.fetch("SELECT session_id FROM revoked_sessions ORDER BY 1")
        await _act_as(as_app_role, "user_alice")
        ended_of_alice = await as_app_role.fetch("SELECT session_id FROM revoked_sessions")
    assert [r["user_id"] for r in erased] == ["user_bob"]
    assert [r["session_id"] for r in ended] == ["sess_bob", "sess_bob_old"]
    assert [r["session_id"] for r in ended_of_alice] == ["sess_alice"]


async def test_a_deleted_user_cannot_be_undeleted_nor_another_marked_by_the_role(
    as_app_role: asyncpg.Connection,
) -> None:
    async with as_app_role.transaction():
        await _act_as(as_app_role, "user_alice")
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="permission denied"):
            await as_app_role.execute("DELETE FROM erased_users")
    async with as_app_role.transaction():
        await _act_as(as_app_role, "user_alice")
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="row-level security"):
            await as_app_role.execute("INSERT INTO erased_users (user_id) VALUES ('user_carol')")


@pytest.mark.parametrize(
    "statement",
    [
        "DELETE FROM revoked_sessions WHERE session_id = 'sess_alice'",
        "UPDATE revoked_sessions SET expires_at = now() - interval '1 day'",
    ],
)
async def test_the_role_cannot_un_revoke_a_session_of_the_user_it_is_bound_to(
    as_app_role: asyncpg.Connection, statement: str
) -> None:
    async with as_app_role.transaction():
        await _act_as(as_app_role, "user_alice")
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="permission denied"):
            await as_app_role.execute(statement)


@pytest.mark.parametrize(
    ("table", "statement", "done"),
    [
        ("revoked_sessions", "DELETE FROM revoked_sessions", "DELETE 0"),
        ("revoked_sessions", "UPDATE revoked_sessions SET expires_at = now()", "UPDATE 0"),
        ("erased_users", "DELETE FROM erased_users", "DELETE 0"),
    ],
)
async def test_even_granted_by_mistake_no_policy_lets_the_role_undo_a_lifecycle_row(
    as_app_role: asyncpg.Connection,
    owner_engine: AsyncEngine,
    table: str,
    statement: str,
    done: str,
) -> None:
    role = await as_app_role.fetchval("SELECT current_user")
    async with owner_engine.begin() as owner:
        await owner.execute(text(f'GRANT UPDATE, DELETE ON {table} TO "{role}"'))
    try:
        async with as_app_role.transaction():
            await _act_as(as_app_role, "user_alice")
            assert await as_app_role.execute(statement) == done
    finally:
        async with owner_engine.begin() as owner:
            await owner.execute(text(f'REVOKE UPDATE, DELETE ON {table} FROM "{role}"'))


async def test_pruning_deletes_every_users_expired_sessions_and_no_current_one(
    as_app_role: asyncpg.Connection, owner_engine: AsyncEngine
) -> None:
    async with as_app_role.transaction():
        await _act_as(as_app_role, "user_alice")
        assert await as_app_role.fetchval("SELECT prune_revoked_sessions()") == 1
    async with owner_engine.connect() as owner:
        kept = await owner.scalars(text("SELECT session_id FROM revoked_sessions ORDER BY 1"))
    assert kept.all() == ["sess_alice", "sess_bob"]


async def test_the_role_cannot_make_a_temporary_table(as_app_role: asyncpg.Connection) -> None:
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="temporary"):
        await as_app_role.execute("CREATE TEMPORARY TABLE erased_users (user_id text)")


async def test_a_temporary_table_cannot_stand_in_for_the_deleted_users(
    as_app_role: asyncpg.Connection, database_url: str, owner_engine: AsyncEngine
) -> None:
    # As if the role had kept the TEMPORARY privilege every role has by default.
    role = await as_app_role.fetchval("SELECT current_user")
    database = parse_database_url(database_url).connect_kwargs["database"]
    async with owner_engine.begin() as owner:
        await owner.execute(text(f'GRANT TEMPORARY ON DATABASE "{database}" TO "{role}"'))
    try:
        await as_app_role.execute("CREATE TEMPORARY TABLE erased_users (user_id text)")
        await as_app_role.execute("CREATE TEMPORARY TABLE revoked_sessions (session_id text)")
        async with as_app_role.transaction():
            with pytest.raises(asyncpg.PostgresError, match="user deleted"):
                await as_app_role.fetchval("SELECT act_as('user_alice', 'sess_new', true)")
        async with as_app_role.transaction():
            with pytest.raises(asyncpg.PostgresError, match="session ended"):
                await as_app_role.fetchval("SELECT act_as('user_alice', 'sess_alice', false)")
    finally:
        await as_app_role.execute("DISCARD TEMP")
        async with owner_engine.begin() as owner:
            await owner.execute(text(f'REVOKE TEMPORARY ON DATABASE "{database}" FROM "{role}"'))


async def test_the_application_role_cannot_switch_rls_off(as_app_role: asyncpg.Connection) -> None:
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await as_app_role.execute("ALTER TABLE user_messages DISABLE ROW LEVEL SECURITY")


async def _startup_verdict(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> list[logging.LogRecord]:
    """The start-up role check's records (`rls_bypassed` or `rls_role_ok`)."""
    caplog.set_level(logging.INFO, logger="quoteapi.db")

    def verdict() -> list[logging.LogRecord]:
        verdicts = ("rls_bypassed", "rls_role_ok")
        return [r for r in caplog.records if getattr(r, "fields", {}).get("event") in verdicts]

    async with running_app(make_settings(database_url)):
        # The role check runs in the background: poll for its verdict.
        await until(lambda: bool(verdict()), within=10, what="the start-up role check")
    return verdict()


async def test_startup_warns_when_the_role_bypasses_rls(
    owner_database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    (record,) = await _startup_verdict(owner_database_url, caplog)
    assert record.levelno == logging.WARNING
    assert record.fields["event"] == "rls_bypassed"  # type: ignore[attr-defined]
    assert record.fields["reason"] == "superuser"  # type: ignore[attr-defined]
    assert "least-privilege role" in record.getMessage()  # what to do about it


async def test_startup_is_quiet_for_the_least_privilege_role(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    (record,) = await _startup_verdict(database_url, caplog)
    assert record.levelno == logging.INFO
    assert record.fields["event"] == "rls_role_ok"  # type: ignore[attr-defined]
