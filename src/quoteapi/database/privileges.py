"""The privileges the running code needs, written once: the application role's recipe grants
them (`quoteapi dev`; compose.yaml and docs/security.md show the same SQL), /readyz checks them,
and a request that meets a missing one names the GRANT to run (migrations grant what they add)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Grant:
    """Privileges on one database object, as a GRANT names them."""

    privileges: tuple[str, ...]
    kind: str  # TABLE, SEQUENCE, FUNCTION or SCHEMA
    name: str  # a function's name carries its argument types

    def sql(self, role: str) -> str:
        target = self.name if self.kind == "TABLE" else f"{self.kind} {self.name}"
        return f"GRANT {', '.join(self.privileges)} ON {target} TO {quote_role(role)}"


def quote_role(role: str) -> str:
    """`role` as SQL names it: quoted unless it is a plain lower-case identifier."""
    if re.fullmatch(r"[a-z_][a-z0-9_$]*", role):
        return role
    return '"' + role.replace('"', '""') + '"'


NEEDED = (
    Grant(("USAGE",), "SCHEMA", "public"),
    # Reads, upserts, conditional replaces and deletes; FOR UPDATE needs UPDATE too.
    Grant(("SELECT", "INSERT", "UPDATE", "DELETE"), "TABLE", "user_messages"),
    Grant(("USAGE",), "SEQUENCE", "user_messages_version_seq"),
    # Recorded deliveries, pruned a batch at a time (FOR UPDATE SKIP LOCKED).
    Grant(("SELECT", "INSERT", "UPDATE", "DELETE"), "TABLE", "webhook_deliveries"),
    # Kept for good and never changed: no UPDATE, no DELETE.
    Grant(("SELECT", "INSERT"), "TABLE", "erased_users"),
    # Kept until they expire, then pruned by the function below, never by the role itself.
    Grant(("SELECT", "INSERT"), "TABLE", "revoked_sessions"),
    Grant(("EXECUTE",), "FUNCTION", "act_as(text, text, boolean)"),
    Grant(("EXECUTE",), "FUNCTION", "bind_user(text)"),
    Grant(("EXECUTE",), "FUNCTION", "lock_user(text, boolean)"),
    Grant(("EXECUTE",), "FUNCTION", "prune_revoked_sessions()"),
    Grant(("SELECT",), "TABLE", "alembic_version"),  # /readyz reads the schema's revision
)


def grant_needed_on(kind: str, name: str, role: str) -> str:
    """The GRANT that gives `role` what the code needs on the object PostgreSQL named when it
    refused a privilege ("permission denied for table revoked_sessions")."""
    wanted = "TABLE" if kind.lower() == "relation" else kind.upper()
    for grant in NEEDED:
        if grant.kind == wanted and grant.name.split("(")[0] == name:
            return grant.sql(role)
    return f"GRANT ... ON {kind.upper()} {name} TO {quote_role(role)} (see docs/security.md)"


# One row per privilege of NEEDED: whether the connected role holds it. An object the schema
# does not have yet gives NULL (its to_reg* is NULL): the schema check, not this one, reports it.
CHECK_SQL = """
SELECT needed.kind, needed.name, needed.privilege,
       CASE needed.kind
           WHEN 'TABLE' THEN has_table_privilege(to_regclass(needed.name), needed.privilege)
           WHEN 'SEQUENCE' THEN has_sequence_privilege(to_regclass(needed.name), needed.privilege)
           WHEN 'FUNCTION' THEN has_function_privilege(to_regprocedure(needed.name),
                                                       needed.privilege)
           WHEN 'SCHEMA' THEN has_schema_privilege(to_regnamespace(needed.name), needed.privilege)
       END AS held
FROM unnest(CAST(:kinds AS text[]), CAST(:names AS text[]), CAST(:privileges AS text[]))
     AS needed(kind, name, privilege)
"""


# CHECK_SQL's parameters: NEEDED, one privilege per row.
_ROWS = [(grant.kind, grant.name, privilege) for grant in NEEDED for privilege in grant.privileges]
CHECK_PARAMETERS = {
    key: [row[i] for row in _ROWS] for i, key in enumerate(("kinds", "names", "privileges"))
}


def missing_grants(rows: Sequence[Sequence[Any]], role: str) -> list[str]:
    """The GRANTs that would give `role` what CHECK_SQL's `rows` say it lacks, one per object."""
    lacking: dict[tuple[str, str], list[str]] = {}
    for kind, name, privilege, held in rows:
        if held is False:
            lacking.setdefault((kind, name), []).append(privilege)
    return [Grant(tuple(p), kind, name).sql(role) for (kind, name), p in lacking.items()]
