"""user_messages: create it, or adopt the table the Neon guide's app made with drizzle-kit.

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(sa.schema.CreateSequence(sa.Sequence("user_messages_version_seq")))
    if sa.inspect(op.get_bind()).has_table("user_messages"):
        _adopt_guide_table()
    else:
        _create_table()


def _create_table() -> None:
    op.create_table(
        "user_messages",
        sa.Column("user_id", sa.Text(), primary_key=True),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column(
            "create_ts", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column(
            "update_ts", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column(
            "version",
            sa.BigInteger(),
            server_default=sa.text("nextval('user_messages_version_seq')"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("user_id", name="user_messages_pkey"),
    )


def _adopt_guide_table() -> None:
    # The guide declares `create_ts timestamp default now()`: wall-clock time in the session's
    # zone, which is UTC on Neon. Read it as UTC; every row is kept.
    op.execute(
        "ALTER TABLE user_messages"
        " ALTER COLUMN create_ts TYPE timestamptz USING create_ts AT TIME ZONE 'UTC',"
        " ALTER COLUMN create_ts SET DEFAULT now()"
    )
    op.add_column(
        "user_messages",
        sa.Column(
            "update_ts", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
    )
    op.execute("UPDATE user_messages SET update_ts = create_ts")
    # A volatile default gives every existing row its own version.
    op.add_column(
        "user_messages",
        sa.Column(
            "version",
            sa.BigInteger(),
            server_default=sa.text("nextval('user_messages_version_seq')"),
            nullable=False,
        ),
    )


def downgrade() -> None:
    op.drop_table("user_messages")
    op.execute(sa.schema.DropSequence(sa.Sequence("user_messages_version_seq")))
