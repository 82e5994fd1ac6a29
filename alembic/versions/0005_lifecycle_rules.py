"""Lifecycle rules the application role cannot undo, and its grants carried to earlier roles.

- revoked_sessions: a transaction bound to a user sees and records only that user's ended
  sessions; no policy lets the application role change or delete one, live or expired.
  `prune_revoked_sessions()` (SECURITY DEFINER, run with the table owner's rights, which the
  table no longer forces under the policy) deletes expired ones, a batch at a time, skipping
  rows another transaction is pruning, so that no webhook waits long on it.
- erased_users: likewise seen and recorded only; a deleted user stays deleted even for a role
  an operator granted UPDATE or DELETE by mistake.
- act_as and prune_revoked_sessions pin their search_path (this schema, then pg_temp): a
  temporary table cannot stand in for a table they read.
- EXECUTE on both is taken from PUBLIC and given to the application roles.
- Grants: every role an earlier recipe made (it holds INSERT on user_messages, as every recipe
  since 0001 grants) receives what revisions 0004 and 0005 added, so that an upgrade needs no
  hand-made GRANT. The privileges stay least: nothing lets it update or delete erased_users.

Code of the previous release keeps working on this schema (its own pruning now deletes
nothing); this release's code prunes.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_OWN_ROW = "user_id = current_setting('app.user_id', true)"
_ACT_AS = "act_as(text, text, boolean)"
_PRUNE = "prune_revoked_sessions()"
# Deletes at most 500 expired revocations a call (with the index on expires_at, a few
# milliseconds), skipping rows another transaction is pruning. SCHEMA is this schema.
_PRUNE_FUNCTION = """
CREATE FUNCTION prune_revoked_sessions() RETURNS integer
LANGUAGE sql SECURITY DEFINER SET search_path = SCHEMA, pg_temp AS $$
    WITH batch AS (
        SELECT session_id FROM revoked_sessions
        WHERE expires_at <= now()
        ORDER BY expires_at
        LIMIT 500
        FOR UPDATE SKIP LOCKED
    ), pruned AS (
        DELETE FROM revoked_sessions
        WHERE session_id IN (SELECT session_id FROM batch)
        RETURNING 1
    )
    SELECT count(*)::integer FROM pruned
$$
"""
# The roles that hold the application's privileges: whoever may insert quotes, other than the
# table's owner.
_APP_ROLES = """
SELECT DISTINCT acl.grantee::regrole::text
FROM pg_class AS c, aclexplode(c.relacl) AS acl
WHERE c.oid = 'user_messages'::regclass
  AND acl.privilege_type = 'INSERT'
  AND acl.grantee NOT IN (0, c.relowner)
"""
_GRANTS = (
    "GRANT SELECT, INSERT ON erased_users TO {role}",
    "GRANT SELECT, INSERT ON revoked_sessions TO {role}",
    f"GRANT EXECUTE ON FUNCTION {_ACT_AS} TO {{role}}",
    f"GRANT EXECUTE ON FUNCTION {_PRUNE} TO {{role}}",
)


def upgrade() -> None:
    bind = op.get_bind()
    schema = bind.execute(sa.text("SELECT quote_ident(current_schema())")).scalar_one()
    for table in ("erased_users", "revoked_sessions"):
        for name in _old_policies(table):
            op.execute(f"DROP POLICY {name} ON {table}")
        op.execute(f"CREATE POLICY {table}_own_select ON {table} FOR SELECT USING ({_OWN_ROW})")
        op.execute(
            f"CREATE POLICY {table}_own_insert ON {table} FOR INSERT WITH CHECK ({_OWN_ROW})"
        )
    op.execute("ALTER TABLE revoked_sessions NO FORCE ROW LEVEL SECURITY")
    op.execute(_PRUNE_FUNCTION.replace("SCHEMA", schema))
    op.execute(f"ALTER FUNCTION {_ACT_AS} SET search_path = {schema}, pg_temp")
    for function in (_ACT_AS, _PRUNE):
        op.execute(f"REVOKE EXECUTE ON FUNCTION {function} FROM PUBLIC")
    for role in bind.execute(sa.text(_APP_ROLES)).scalars():
        for grant in _GRANTS:
            op.execute(grant.format(role=role))


def _old_policies(table: str) -> list[str]:
    if table == "erased_users":
        return ["erased_users_own_row"]
    return [
        "revoked_sessions_own_row",
        "revoked_sessions_expired_select",
        "revoked_sessions_expired_delete",
    ]


def downgrade() -> None:
    op.execute(f"GRANT EXECUTE ON FUNCTION {_ACT_AS} TO PUBLIC")
    op.execute(f"ALTER FUNCTION {_ACT_AS} RESET search_path")
    op.execute(f"DROP FUNCTION {_PRUNE}")
    op.execute("ALTER TABLE revoked_sessions FORCE ROW LEVEL SECURITY")
    for table in ("erased_users", "revoked_sessions"):
        op.execute(f"DROP POLICY {table}_own_select ON {table}")
        op.execute(f"DROP POLICY {table}_own_insert ON {table}")
        op.execute(
            f"CREATE POLICY {table}_own_row ON {table} USING ({_OWN_ROW}) WITH CHECK ({_OWN_ROW})"
        )
    for command in ("SELECT", "DELETE"):
        op.execute(
            f"CREATE POLICY revoked_sessions_expired_{command.lower()} ON revoked_sessions"
            f" FOR {command} USING (expires_at <= now())"
        )
