"""Alembic owns the schema: models and migrations agree, the guide's table is adopted,
and `migrate` works from an installed wheel as well as from a checkout."""

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import asyncpg
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.engine import Connection

from quoteapi.app import create_app as _loads_every_table  # noqa: F401
from quoteapi.database import metadata
from quoteapi.database.engine import create_engine
from quoteapi.database.url import parse_database_url
from quoteapi.migrations import alembic_config, head_revision, known_revisions, upgrade_async

# The table exactly as drizzle-kit creates it from the Neon guide's schema.
GUIDE_DDL = """
CREATE TABLE "user_messages" (
    "user_id" text PRIMARY KEY NOT NULL,
    "create_ts" timestamp DEFAULT now() NOT NULL,
    "message" text NOT NULL
)
"""


async def _connect(url: str) -> asyncpg.Connection:
    return await asyncpg.connect(**parse_database_url(url).connect_kwargs)


async def test_models_match_migrations(database_url: str) -> None:
    engine = create_engine(parse_database_url(database_url))

    def differences(connection: Connection) -> list[object]:
        return list(compare_metadata(MigrationContext.configure(connection), metadata))

    try:
        async with engine.connect() as connection:
            assert await connection.run_sync(differences) == []
    finally:
        await engine.dispose()


async def test_upgrade_adopts_the_guides_table_and_keeps_every_row(
    empty_database_url: str,
) -> None:
    connection = await _connect(empty_database_url)
    try:
        await connection.execute(GUIDE_DDL)
        await connection.execute(
            "INSERT INTO user_messages (user_id, message, create_ts) VALUES"
            " ('user_a', 'Stay hungry.', '2024-05-01 10:00:00'),"
            " ('user_b', 'Stay foolish.', '2024-05-02 11:30:00')"
        )
        await upgrade_async(parse_database_url(empty_database_url))
        rows = await connection.fetch(
            "SELECT user_id, message, create_ts, update_ts, version"
            " FROM user_messages ORDER BY user_id"
        )
    finally:
        await connection.close()
    assert [(r["user_id"], r["message"]) for r in rows] == [
        ("user_a", "Stay hungry."),
        ("user_b", "Stay foolish."),
    ]
    assert rows[0]["create_ts"].isoformat() == "2024-05-01T10:00:00+00:00"
    assert rows[0]["update_ts"] == rows[0]["create_ts"]
    assert rows[0]["version"] != rows[1]["version"]


async def test_the_guides_insert_still_works_after_upgrade(empty_database_url: str) -> None:
    await upgrade_async(parse_database_url(empty_database_url))
    connection = await _connect(empty_database_url)
    try:
        await connection.execute(
            "INSERT INTO user_messages (user_id, message) VALUES ('user_c', 'Carpe diem.')"
        )
        row = await connection.fetchrow("SELECT * FROM user_messages")
    finally:
        await connection.close()
    assert row is not None
    assert row["message"] == "Carpe diem."
    assert row["version"] > 0


def _alembic(command: list[str], url: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": url}
    return subprocess.run(
        [sys.executable, "-m", "alembic", *command],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def test_plain_alembic_upgrade_and_downgrade_base(
    empty_database_url: str, repo_root: Path
) -> None:
    upgraded = _alembic(["upgrade", "head"], empty_database_url, repo_root)
    assert upgraded.returncode == 0, upgraded.stderr
    current = _alembic(["current"], empty_database_url, repo_root)
    assert f"{head_revision()} (head)" in current.stdout

    downgraded = _alembic(["downgrade", "base"], empty_database_url, repo_root)
    assert downgraded.returncode == 0, downgraded.stderr
    connection = await _connect(empty_database_url)
    try:
        tables = await connection.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
        )
    finally:
        await connection.close()
    assert [t["tablename"] for t in tables] == ["alembic_version"]


async def test_migrate_runs_from_the_installed_wheel(
    empty_database_url: str, repo_root: Path, tmp_path: Path
) -> None:
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), "."],
        cwd=repo_root,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = tmp_path.glob("quoteapi-*.whl")
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as archive:
        assert "quoteapi/alembic/env.py" in archive.namelist()
        archive.extractall(site)
    # Run from an empty folder with only the unpacked wheel on the path: no checkout involved.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    migrated = subprocess.run(
        [sys.executable, "-c", "from quoteapi.cli import main; main(['migrate'])"],
        cwd=elsewhere,
        env={**os.environ, "PYTHONPATH": str(site), "DATABASE_URL": empty_database_url},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert migrated.returncode == 0, migrated.stderr
    assert "Running upgrade" in migrated.stderr
    assert (
        f"{site}/quoteapi/"
        in subprocess.run(
            [sys.executable, "-c", "import quoteapi.migrations as m; print(m.scripts_dir())"],
            cwd=elsewhere,
            env={**os.environ, "PYTHONPATH": str(site)},
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
    )


def test_the_revisions_read_from_the_scripts_are_alembics_own() -> None:
    from alembic.script import ScriptDirectory

    scripts = ScriptDirectory.from_config(alembic_config())
    assert known_revisions() == tuple(script.revision for script in scripts.walk_revisions())


def test_serving_never_loads_alembic() -> None:
    loaded = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, quoteapi.app, quoteapi.cli; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'alembic'))",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert loaded.strip() == "[]"
