"""Application roles as each release's recipe made them, and removing the one a test database
was given (`quoteapi.dev.databases` makes it, as `quoteapi dev` does)."""

from __future__ import annotations

import asyncpg

from quoteapi.database.url import parse_database_url

# The recipe (docs/security.md) of earlier releases, by the revision they shipped with: the
# statements an operator ran once, as the owner, after `quoteapi migrate`.
_RECIPE_0003 = (
    "CREATE ROLE {role} LOGIN NOSUPERUSER NOBYPASSRLS PASSWORD '{password}'",
    "GRANT CONNECT ON DATABASE {database} TO {role}",
    "GRANT USAGE ON SCHEMA public TO {role}",
    "GRANT SELECT, INSERT, UPDATE, DELETE ON user_messages, webhook_deliveries TO {role}",
    "GRANT USAGE ON SEQUENCE user_messages_version_seq TO {role}",
    "GRANT SELECT ON alembic_version TO {role}",
)
_RECIPE_0004 = (
    *_RECIPE_0003,
    "GRANT SELECT, INSERT ON erased_users TO {role}",
    "GRANT SELECT, INSERT, DELETE ON revoked_sessions TO {role}",
    "GRANT EXECUTE ON FUNCTION act_as(text, text, boolean) TO {role}",
)
_RECIPE_0005 = (
    *_RECIPE_0003,
    "GRANT SELECT, INSERT ON erased_users TO {role}",
    "GRANT SELECT, INSERT ON revoked_sessions TO {role}",
    "GRANT EXECUTE ON FUNCTION act_as(text, text, boolean) TO {role}",
    "GRANT EXECUTE ON FUNCTION prune_revoked_sessions() TO {role}",
)
EARLIER_RECIPES = {"0003": _RECIPE_0003, "0004": _RECIPE_0004, "0005": _RECIPE_0005}


async def create_role(owner_url: str, role: str, password: str, recipe: tuple[str, ...]) -> str:
    """Run `recipe` for `role` on the owner's database; the URL to connect as the role."""
    target = parse_database_url(owner_url).connect_kwargs
    connection = await asyncpg.connect(**target)
    try:
        for statement in recipe:
            names = {"role": role, "password": password, "database": target["database"]}
            await connection.execute(statement.format(**names))
    finally:
        await connection.close()
    host = f"{target['host']}:{target['port']}"
    return f"postgresql://{role}:{password}@{host}/{target['database']}"


async def drop_app_role(owner_url: str, role: str) -> None:
    """Remove the role and every privilege it holds in the owner's database."""
    name = '"' + role.replace('"', '""') + '"'
    connection = await asyncpg.connect(**parse_database_url(owner_url).connect_kwargs)
    try:
        await connection.execute(f"DROP OWNED BY {name}")
        await connection.execute(f"DROP ROLE {name}")
    finally:
        await connection.close()


async def backends_of(owner: asyncpg.Connection, role: str) -> list[int]:
    """The process ids of the server's backends connected as `role` to this database."""
    await owner.execute("SELECT pg_stat_clear_snapshot()")
    rows = await owner.fetch(
        "SELECT pid FROM pg_stat_activity WHERE usename = $1 AND datname = current_database()",
        role,
    )
    return [row["pid"] for row in rows]
