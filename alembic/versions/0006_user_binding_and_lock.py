"""The caller's binding and the per-user lock, each written once for requests and webhooks.

- `bind_user(user_id)` binds the transaction to the user for row-level security (the policies
  read `app.user_id`), transaction-local, so that it never outlives the transaction (nor
  leaks to the next client of a pooled connection).
- `lock_user(user_id, exclusive)` takes the user's lock until the transaction ends: shared by
  `act_as` for a write, exclusive by the `user.deleted` webhook's erasure, so that a write and
  an erasure of one user never overlap. Its key is the one 0004 took (class 1903521652, "quot";
  object hashtext(user id)): code of the previous release keeps working on this schema.
- `act_as` calls both. Both pin their search_path; EXECUTE is taken from PUBLIC and given to
  the application roles, as 0005 does.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-08
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_FUNCTIONS = ("bind_user(text)", "lock_user(text, boolean)")
# SCHEMA is this schema.
_BIND_USER = """
CREATE FUNCTION bind_user(user_id text) RETURNS text
LANGUAGE sql VOLATILE SET search_path = SCHEMA, pg_temp AS $$
    SELECT set_config('app.user_id', user_id, true)
$$
"""
_LOCK_USER = """
CREATE FUNCTION lock_user(user_id text, exclusive boolean) RETURNS void
LANGUAGE plpgsql VOLATILE SET search_path = SCHEMA, pg_temp AS $$
BEGIN
    IF exclusive THEN
        PERFORM pg_advisory_xact_lock(1903521652, hashtext(user_id));
    ELSE
        PERFORM pg_advisory_xact_lock_shared(1903521652, hashtext(user_id));
    END IF;
END
$$
"""
_ACT_AS = """
CREATE OR REPLACE FUNCTION act_as(caller text, caller_session text, writes boolean) RETURNS text
LANGUAGE plpgsql VOLATILE SET search_path = SCHEMA, pg_temp AS $$
BEGIN
    PERFORM bind_user(caller);
    IF EXISTS (SELECT FROM revoked_sessions WHERE session_id = caller_session) THEN
        RAISE EXCEPTION 'session ended' USING ERRCODE = 'QA401';
    END IF;
    IF writes THEN
        PERFORM lock_user(caller, exclusive => false);
        IF EXISTS (SELECT FROM erased_users WHERE user_id = caller) THEN
            RAISE EXCEPTION 'user deleted' USING ERRCODE = 'QA403';
        END IF;
    END IF;
    RETURN caller;
END
$$
"""
# act_as as 0004 wrote it (and 0005 pinned its search_path), for the downgrade.
_ACT_AS_0005 = """
CREATE OR REPLACE FUNCTION act_as(caller text, caller_session text, writes boolean) RETURNS text
LANGUAGE plpgsql VOLATILE SET search_path = SCHEMA, pg_temp AS $$
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
# The roles that hold the application's privileges (as in 0005).
_APP_ROLES = """
SELECT DISTINCT acl.grantee::regrole::text
FROM pg_class AS c, aclexplode(c.relacl) AS acl
WHERE c.oid = 'user_messages'::regclass
  AND acl.privilege_type = 'INSERT'
  AND acl.grantee NOT IN (0, c.relowner)
"""


def _schema() -> str:
    return str(op.get_bind().execute(sa.text("SELECT quote_ident(current_schema())")).scalar_one())


def upgrade() -> None:
    schema = _schema()
    for function in (_BIND_USER, _LOCK_USER, _ACT_AS):
        op.execute(function.replace("SCHEMA", schema))
    for function in _FUNCTIONS:
        op.execute(f"REVOKE EXECUTE ON FUNCTION {function} FROM PUBLIC")
    for role in op.get_bind().execute(sa.text(_APP_ROLES)).scalars():
        for function in _FUNCTIONS:
            op.execute(f"GRANT EXECUTE ON FUNCTION {function} TO {role}")


def downgrade() -> None:
    op.execute(_ACT_AS_0005.replace("SCHEMA", _schema()))
    for function in _FUNCTIONS:
        op.execute(f"DROP FUNCTION {function}")
