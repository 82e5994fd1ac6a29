"""Row-level security on user_messages: a transaction sees and changes only its user's row.

The application binds each transaction to the caller with
`set_config('app.user_id', <user id>, true)` (transaction-local: it cannot leak to the next
client of a pooled connection). Without that setting, no row is visible. FORCE applies the
policy to the table's owner too; superusers and BYPASSRLS roles still bypass it, which is why
the application should connect as a least-privilege role (docs/security.md: "Row-level security").

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_OWN_ROW = "user_id = current_setting('app.user_id', true)"


def upgrade() -> None:
    op.execute("ALTER TABLE user_messages ENABLE ROW LEVEL SECURITY")
    op.execute("ALTER TABLE user_messages FORCE ROW LEVEL SECURITY")
    op.execute(
        f"CREATE POLICY user_messages_own_row ON user_messages"
        f" USING ({_OWN_ROW}) WITH CHECK ({_OWN_ROW})"
    )


def downgrade() -> None:
    op.execute("DROP POLICY user_messages_own_row ON user_messages")
    op.execute("ALTER TABLE user_messages NO FORCE ROW LEVEL SECURITY")
    op.execute("ALTER TABLE user_messages DISABLE ROW LEVEL SECURITY")
