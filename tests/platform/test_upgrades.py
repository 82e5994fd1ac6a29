"""Upgrades that keep running. After `quoteapi migrate`, an application role made by an earlier
release's recipe can do everything this release needs, with no hand-made GRANT. A privilege an
operator took away is never a 500: the request gets 503 with its own code, the log names the
GRANT once, /readyz names it too. Code rolled out before its migration is not ready and never
answers 500; a schema the next release migrated keeps this code ready and serving."""

from __future__ import annotations

import asyncio
import logging
import shutil
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from alembic import command
from quoteapi.database.url import parse_database_url
from quoteapi.dev.databases import ensure_app_role
from quoteapi.migrations import alembic_config, known_revisions, scripts_dir, upgrade_async
from tests.support.app import make_settings, running_app
from tests.support.logs import events
from tests.support.problems import assert_retry_later
from tests.support.roles import EARLIER_RECIPES, create_role, drop_app_role
from tests.support.tokens import MintToken, bearer
from tests.support.webhooks import TEST_SECRET, URL, session_ended, signed, user_deleted

HEAD, PREVIOUS = known_revisions()[:2]
# What the next release's migration might add: a column this release's code never names.
NEXT_REVISION = '''
"""A column the next release reads.

Revision ID: next
Revises: {head}
"""

from alembic import op

revision = "next"
down_revision = "{head}"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE user_messages ADD COLUMN source text")


def downgrade() -> None:
    op.execute("ALTER TABLE user_messages DROP COLUMN source")
'''


@pytest.fixture
async def role(empty_database_url: str) -> AsyncIterator[str]:
    """A name for the application role of this test's database, dropped at the end."""
    name = f"quoteapi_old_{uuid.uuid4().hex[:8]}"
    yield name
    await drop_app_role(empty_database_url, name)


async def migrate(database_url: str, revision: str = "head") -> None:
    await upgrade_async(parse_database_url(database_url), revision)


async def webhook(http: httpx.AsyncClient, event: dict[str, object]) -> httpx.Response:
    body, headers = signed(event)
    return await http.post(URL, content=body, headers=headers)


async def assert_everything_works(http: httpx.AsyncClient, mint_token: MintToken) -> None:
    """The quote's whole life, conditional writes, and both lifecycle webhooks."""
    token = mint_token("user_upgraded", sid="sess_upgraded")
    headers = bearer(token)
    assert (await http.get("/readyz")).status_code == 200
    created = await http.put("/me/message", json={"message": "Before."}, headers=headers)
    assert created.status_code == 201, created.text
    replaced = await http.put(
        "/me/message",
        json={"message": "After."},
        headers={**headers, "If-Match": created.headers["etag"]},
    )
    assert replaced.status_code == 200, replaced.text
    assert (await http.get("/me/message", headers=headers)).json()["message"] == "After."
    assert (await http.delete("/me/message", headers=headers)).status_code == 204
    ended = await webhook(http, session_ended("user_upgraded", "sess_upgraded"))
    assert ended.json() == {"outcome": "revoked"}, ended.text
    assert (await http.get("/me/message", headers=headers)).status_code == 401
    deleted = await webhook(http, user_deleted("user_upgraded"))
    assert deleted.json() == {"outcome": "deleted"}, deleted.text
    again = await http.put(
        "/me/message", json={"message": "Gone."}, headers=bearer(mint_token("user_upgraded"))
    )
    assert again.status_code == 403, again.text


@pytest.mark.parametrize("recipe", sorted(EARLIER_RECIPES))
async def test_a_role_made_by_an_earlier_recipe_does_everything_after_migrating(
    empty_database_url: str, role: str, recipe: str, mint_token: MintToken
) -> None:
    await migrate(empty_database_url, recipe)
    app_url = await create_role(empty_database_url, role, "old-recipe", EARLIER_RECIPES[recipe])
    await migrate(empty_database_url)
    settings = make_settings(app_url, clerk_webhook_signing_secret=TEST_SECRET)
    async with running_app(settings) as api:
        await assert_everything_works(api.http, mint_token)


async def test_a_missing_privilege_is_503_naming_its_grant_once_and_not_ready(
    database_url: str,
    owner_engine: AsyncEngine,
    mint_token: MintToken,
    caplog: pytest.LogCaptureFixture,
) -> None:
    role = parse_database_url(database_url).connect_kwargs["user"]
    revoke = f'REVOKE SELECT ON revoked_sessions FROM "{role}"'  # noqa: S608 - the test's role
    async with owner_engine.begin() as owner:
        await owner.execute(text(revoke))
    caplog.set_level(logging.INFO, logger="quoteapi.db")
    try:
        async with running_app(make_settings(database_url)) as api:
            headers = bearer(mint_token("user_without_grant"))
            answers = [await api.http.get("/me/message", headers=headers) for _ in range(3)]
            ready = await api.http.get("/readyz")
    finally:
        async with owner_engine.begin() as owner:
            await owner.execute(text(f'GRANT SELECT ON revoked_sessions TO "{role}"'))
    for answer in answers:
        assert_retry_later(answer, "database-privilege-missing")
    assert ready.status_code == 503
    assert ready.json()["missing"] == [f"GRANT SELECT ON revoked_sessions TO {role}"]
    (logged,) = events(caplog.records, "database_privilege_missing")
    assert logged["grant"] == f"GRANT SELECT, INSERT ON revoked_sessions TO {role}"
    assert logged["grant"] in str(logged["message"])  # the fix, in the line an operator reads


async def test_code_ahead_of_its_schema_is_not_ready_and_never_answers_500(
    empty_database_url: str, role: str, mint_token: MintToken
) -> None:
    await migrate(empty_database_url, PREVIOUS)
    app_url = await create_role(empty_database_url, role, "rolled-early", EARLIER_RECIPES[PREVIOUS])
    settings = make_settings(app_url, clerk_webhook_signing_secret=TEST_SECRET)
    async with running_app(settings) as api:
        ready = await api.http.get("/readyz")
        headers = bearer(mint_token("user_early"))
        saved = await api.http.put("/me/message", json={"message": "Early."}, headers=headers)
        ended = await webhook(api.http, session_ended("user_early", "sess_early"))
    assert ready.status_code == 503
    assert ready.json() == {
        "status": "not-ready",
        "database": "ok",
        "schema": "behind",
        "current": PREVIOUS,
        "head": HEAD,
    }
    # Reads and writes need nothing newer; ending a session binds its user with a function the
    # newer revision adds: 503, which Svix retries until the migration ran.
    assert saved.status_code == 201, saved.text
    assert_retry_later(ended, "database-schema-behind")


async def test_a_schema_the_next_release_migrated_keeps_this_code_ready_and_serving(
    empty_database_url: str, role: str, tmp_path: Path, mint_token: MintToken
) -> None:
    scripts = tmp_path / "alembic"
    shutil.copytree(scripts_dir(), scripts, ignore=shutil.ignore_patterns("__pycache__"))
    (scripts / "versions" / "next.py").write_text(NEXT_REVISION.format(head=HEAD))
    config = alembic_config(parse_database_url(empty_database_url))
    config.set_main_option("script_location", str(scripts))
    await asyncio.to_thread(command.upgrade, config, "head")
    app_url = await ensure_app_role(empty_database_url, role, "next-release")
    settings = make_settings(app_url, clerk_webhook_signing_secret=TEST_SECRET)
    async with running_app(settings) as api:
        ready = await api.http.get("/readyz")
        await assert_everything_works(api.http, mint_token)
    assert ready.json() == {
        "status": "ready",
        "database": "ok",
        "schema": "ahead",
        "current": "next",
        "head": HEAD,
    }
