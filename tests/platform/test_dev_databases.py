"""The dev set-up's kept passwords: private from the moment the file exists, and stable."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from quoteapi.dev.databases import kept_password


def test_a_kept_password_is_created_private_and_then_reused(tmp_path: Path) -> None:
    path = tmp_path / "app-role-password"
    previous = os.umask(0)  # the most permissive umask: the file's own mode must protect it
    try:
        first = kept_password(path)
    finally:
        os.umask(previous)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(first) >= 32
    assert kept_password(path) == first
