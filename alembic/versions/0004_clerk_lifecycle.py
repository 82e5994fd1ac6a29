"""Clerk's lifecycle: users whose deletion was processed, sessions that ended, and `act_as`, the
function every request's statement reads the caller through.

`act_as(caller, caller_session, writes)` binds the transaction to the caller for row-level security
(as `set_config('app.user_id', ...)` alone did before), refuses a session that ended (SQLSTATE
QA401), and, for a write, refuses a deleted user (QA403) after taking the user's lock shared.
The `user.deleted` webhook takes that lock exclusively before it records the user and deletes
the quote, so a write and an erasure of one user never overlap: the write either commits first
(and the erasure deletes what it wrote) or waits and then sees the user erased. The check runs
in a VOLATILE function because each of its queries takes a new snapshot: a check in the
statement itself would see the snapshot taken when the statement began, before the wait, and
miss an erasure committed meanwhile (READ COMMITTED).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_OWN_ROW = "user_id = current_setting('app.user_id', true)"
# 1903521652 (0x71756F74, "quot") is the advisory-lock class of the per-user lock, whose object
# is hashtext(user id); the webhook's erasure takes the same key exclusively (since 0006, both
# through lock_user).
_ACT_AS = """
CREATE FUNCTION act_as(caller text, caller_session text, writes boolean) RETURNS text
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM set_config('app.user_id', caller, true);
    IF EXISTS (SELECT FROM revoked_sessions WHERE session_id = caller_session) THEN
        RAISE EXCEPTION 'session ended' USING ERRCODE = 'QA401';
    END IF;
    IF writes THEN
        PERFORM pg_advisory_xact_lock_shared(1903521652, hashtext(caller));
        IF EXISTS (SELECT FROM erased_users WHERE user_id = caller) THEN
            RAISE EXCEPTION 'user deleted' USING ERRCODE = 'QA403';
        END IF;
    END IF;
    RETURN caller;
END
$$
"""


def upgrade() -> None:
    op.create_table(
        "erased_users",
        sa.Column("user_id", sa.Text(), nullable=False),
        sa.Column(
            "erased_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.PrimaryKeyConstraint("user_id", name="erased_users_pkey"),
    )
    op.create_table(
        "revoked_sessions",
        sa.Column("session_id", sa.Text(), nullable=False),
        sa.Column("user_id", sa.Text(), nullable=False),
        sa.Column(
            "revoked_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("session_id", name="revoked_sessions_pkey"),
    )
    # Pruning deletes the expired rows; the index keeps that a range scan.
    op.create_index(
        "ix_revoked_sessions_expires_at", "revoked_sessions", ["expires_at"], unique=False
    )
    for table in ("erased_users", "revoked_sessions"):
        op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
        op.execute(f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY")
        op.execute(
            f"CREATE POLICY {table}_own_row ON {table} USING ({_OWN_ROW}) WITH CHECK ({_OWN_ROW})"
        )
    # Any webhook prunes every user's expired revocations (a DELETE reads what it deletes,
    # so reading them is allowed too); an unexpired one stays visible only to its user.
    for command in ("SELECT", "DELETE"):
        op.execute(
            f"CREATE POLICY revoked_sessions_expired_{command.lower()} ON revoked_sessions"
            f" FOR {command} USING (expires_at <= now())"
        )
    op.execute(_ACT_AS)


def downgrade() -> None:
    op.execute("DROP FUNCTION act_as(text, text, boolean)")
    op.drop_table("revoked_sessions")
    op.drop_table("erased_users")
