"""Alembic, driven from the installed package (the scripts ship inside the wheel). The revisions
are read from the scripts' text: `serve` checks them but never migrates, so it does not load
Alembic (a tenth of its start-up)."""

from __future__ import annotations

import asyncio
import re
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING

from quoteapi.database.url import DatabaseTarget

if TYPE_CHECKING:
    from alembic.config import Config

_REVISION = re.compile(r"^revision(?:: str)? = [\"']([^\"']+)[\"']", re.MULTILINE)
_DOWN_REVISION = re.compile(
    r"^down_revision(?:: [^=]+)? = (?:[\"']([^\"']+)[\"']|None)", re.MULTILINE
)


def scripts_dir() -> Path:
    """The `alembic/` folder: inside the installed wheel, or at the top of a checkout."""
    for folder in (Path(str(files("quoteapi"))), Path(__file__).resolve().parents[2]):
        if (folder / "alembic" / "env.py").is_file():
            return folder / "alembic"
    raise FileNotFoundError("migration scripts not found: reinstall quoteapi")


def known_revisions() -> tuple[str, ...]:
    """Every revision this release ships, head first: a database at a revision not among them
    was migrated by a later release."""
    follows: dict[str, str | None] = {}
    for script in (scripts_dir() / "versions").glob("*.py"):
        text = script.read_text()
        revision, down = _REVISION.search(text), _DOWN_REVISION.search(text)
        if revision is None or down is None:
            raise ValueError(f"{script.name}: no revision or down_revision line")
        follows[revision.group(1)] = down.group(1)
    followed = set(follows.values())
    chain = [next(revision for revision in follows if revision not in followed)]
    while (previous := follows[chain[-1]]) is not None:
        chain.append(previous)
    return tuple(chain)


def head_revision() -> str:
    return known_revisions()[0]


def alembic_config(target: DatabaseTarget | None = None) -> Config:
    """An Alembic config for our scripts; env.py connects to `target` (else to DATABASE_URL)."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(scripts_dir()))
    if target is not None:
        config.attributes["database_target"] = target
    return config


def upgrade(target: DatabaseTarget, revision: str = "head") -> None:
    """Apply migrations up to `revision` (blocking; env.py runs its own event loop)."""
    from alembic import command

    command.upgrade(alembic_config(target), revision)


async def upgrade_async(target: DatabaseTarget, revision: str = "head") -> None:
    await asyncio.to_thread(upgrade, target, revision)
