"""Alembic, driven from the installed package: the scripts ship inside the wheel."""

from __future__ import annotations

import asyncio
from importlib.resources import files
from pathlib import Path

from alembic.config import Config
from alembic.script import ScriptDirectory

from alembic import command
from quoteapi.database.url import DatabaseTarget


def scripts_dir() -> Path:
    """The `alembic/` folder: inside the installed wheel, or at the top of a checkout."""
    packaged = Path(str(files("quoteapi"))) / "alembic"
    if (packaged / "env.py").is_file():
        return packaged
    checkout = Path(__file__).resolve().parents[2] / "alembic"
    if (checkout / "env.py").is_file():
        return checkout
    raise FileNotFoundError("migration scripts not found: reinstall quoteapi")


def alembic_config(target: DatabaseTarget | None = None) -> Config:
    """An Alembic config for our scripts; env.py connects to `target` (else to DATABASE_URL)."""
    config = Config()
    config.set_main_option("script_location", str(scripts_dir()))
    if target is not None:
        config.attributes["database_target"] = target
    return config


def head_revision() -> str | None:
    """The revision that `upgrade head` reaches."""
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def known_revisions() -> tuple[str, ...]:
    """Every revision this release ships, head first: a database at a revision not among them
    was migrated by a later release."""
    scripts = ScriptDirectory.from_config(alembic_config())
    return tuple(script.revision for script in scripts.walk_revisions())


def upgrade(target: DatabaseTarget, revision: str = "head") -> None:
    """Apply migrations up to `revision` (blocking; env.py runs its own event loop)."""
    command.upgrade(alembic_config(target), revision)


async def upgrade_async(target: DatabaseTarget, revision: str = "head") -> None:
    """`upgrade` for callers already inside an event loop."""
    await asyncio.to_thread(upgrade, target, revision)
