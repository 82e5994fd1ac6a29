"""DATABASE_URL in every form a user pastes, and the settings a guide user already has."""

import ssl
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pydantic import AliasChoices

from quoteapi.database.url import parse_database_url
from quoteapi.settings import ConfigError, Settings, load_settings
from tests.support.processes import clean_env

BASE = {"user": "alex", "password": "s3cret", "database": "neondb"}
NEON_HOST = "ep-cool-rain-123456-pooler.eu-central-1.aws.neon.tech"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgres://alex:s3cret@db.example.com/neondb", {**BASE, "host": "db.example.com"}),
        (
            "postgresql://alex:s3cret@db.example.com:6543/neondb",
            {**BASE, "host": "db.example.com", "port": 6543},
        ),
        ("postgresql+asyncpg://alex:s3cret@localhost/neondb", {**BASE, "host": "localhost"}),
        ("postgresql://alex:s3cret@[::1]:5433/neondb", {**BASE, "host": "::1", "port": 5433}),
        (
            "postgresql://alex:p%40ss%2Fw0rd@localhost/neondb",
            {**BASE, "host": "localhost", "password": "p@ss/w0rd"},
        ),
        (
            "postgresql://alex:s3cret@/neondb?host=/var/run/postgresql",
            {**BASE, "host": "/var/run/postgresql"},
        ),
        (
            "postgresql://alex:s3cret@%2FVar%2Frun%2Fpostgresql/neondb",
            {**BASE, "host": "/Var/run/postgresql"},
        ),
        (
            "postgresql://alex:s3cret@localhost/neondb?connect_timeout=7&application_name=qa",
            {
                **BASE,
                "host": "localhost",
                "timeout": 7.0,
                "server_settings": {"application_name": "qa"},
            },
        ),
        (
            "postgresql://alex:s3cret@localhost/neondb?sslmode=disable",
            {**BASE, "host": "localhost", "ssl": False},
        ),
        (
            "postgresql://alex:s3cret@localhost/neondb?sslmode=prefer",
            {**BASE, "host": "localhost", "ssl": "prefer"},
        ),
    ],
)
def test_database_url_forms_become_asyncpg_arguments(url: str, expected: dict[str, Any]) -> None:
    assert parse_database_url(url).connect_kwargs == expected


def _ssl_of(url: str) -> ssl.SSLContext:
    context = parse_database_url(url).connect_kwargs["ssl"]
    assert isinstance(context, ssl.SSLContext)
    return context


def test_neon_url_requires_tls_and_drops_channel_binding_with_a_note() -> None:
    target = parse_database_url(
        f"postgresql://alex:s3cret@{NEON_HOST}/neondb?sslmode=require&channel_binding=require"
    )
    context = target.connect_kwargs["ssl"]
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_NONE  # libpq's `require`: encrypted, not verified
    assert "channel_binding" not in target.connect_kwargs
    assert "server_settings" not in target.connect_kwargs
    assert any("channel_binding" in note for note in target.notes)


@pytest.mark.parametrize(
    ("sslmode", "checks_hostname"),
    [("verify-full", True), ("verify-ca", False)],
    ids=["verify-full", "verify-ca"],
)
def test_sslmode_verify_checks_the_certificate_and_the_host_only_when_full(
    sslmode: str, checks_hostname: bool
) -> None:
    context = _ssl_of(f"postgresql://alex:s3cret@{NEON_HOST}/neondb?sslmode={sslmode}")
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname is checks_hostname


def test_unknown_parameters_are_never_forwarded_as_server_settings() -> None:
    target = parse_database_url(
        "postgresql://alex:s3cret@localhost/neondb?options=endpoint%3Dep-x&search_path=x"
    )
    assert target.connect_kwargs == {**BASE, "host": "localhost"}
    assert target.notes == ("DATABASE_URL: ignored unsupported parameters: options, search_path",)


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("mysql://alex@localhost/db", "unsupported scheme"),
        ("postgresql://alex@localhost:abc/db", "not a number"),
        ("postgresql://alex@localhost/db?sslmode=sometimes", "sslmode"),
        ("postgresql://alex@localhost/db?connect_timeout=soon", "connect_timeout"),
    ],
)
def test_bad_database_url_is_one_line_config_error(
    url: str, problem: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_URL", url)
    with pytest.raises(ConfigError) as raised:
        load_settings(_env_file=None)
    message = str(raised.value)
    assert message.startswith("configuration error: DATABASE_URL: ")
    assert problem in message
    assert "Fix:" in message
    assert "\n" not in message


# Passwords with a character a URL reserves, pasted without percent-encoding.
UNENCODED_PASSWORDS = [
    pytest.param("s3cr/etPW", id="slash"),
    pytest.param("Zp9?mK4w", id="question-mark"),
    pytest.param("Xq7#vR2k", id="hash"),
    pytest.param("ab+c/d=e", id="base64"),  # its alphabet has `/`, `+` and `=`
    pytest.param("Kp@3/xZ9", id="at-and-slash"),  # urlsplit reads `3` as the host
]


def password_fragments(password: str) -> list[str]:
    """Every 3-character stretch of `password`: none may appear in an error message."""
    return [password[i : i + 3] for i in range(len(password) - 2)]


@pytest.mark.parametrize("password", UNENCODED_PASSWORDS)
def test_unencoded_password_in_database_url_is_named_never_repeated(password: str) -> None:
    url = f"postgresql://app:{password}@db.example.com/quoteapi"
    with pytest.raises(ConfigError) as raised:
        load_settings(_env_file=None, database_url=url)
    message = str(raised.value)
    assert message.startswith("configuration error: DATABASE_URL: ")
    assert "percent-encode" in message
    assert "\n" not in message
    assert [part for part in password_fragments(password) if part in message] == []


@pytest.mark.parametrize("password", UNENCODED_PASSWORDS)
def test_serve_with_an_unencoded_password_exits_with_one_line_that_never_repeats_it(
    password: str, tmp_path: Path
) -> None:
    url = f"postgresql://app:{password}@db.example.com/quoteapi"
    result = subprocess.run(
        [sys.executable, "-m", "quoteapi", "serve"],
        env=clean_env({"database_url": url}),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("quoteapi: configuration error: DATABASE_URL: ")
    output = result.stdout + result.stderr
    assert [part for part in password_fragments(password) if part in output] == []


def test_the_nextjs_guides_env_file_is_read_as_is(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = tmp_path / ".env"
    env.write_text(
        "NEXT_PUBLIC_CLERK_PUBLISHABLE_KEY=pk_test_Y2xlcmsuZXhhbXBsZS5jb20k\n"
        "CLERK_SECRET_KEY=sk_test_abc\n"
        "NEXT_PUBLIC_CLERK_SIGN_IN_URL=/sign-in\n"
        f"DATABASE_URL=postgresql://alex:s3cret@{NEON_HOST}/neondb?sslmode=require\n"
    )
    monkeypatch.chdir(tmp_path)
    for name in ("DATABASE_URL", "CLERK_PUBLISHABLE_KEY", "NEXT_PUBLIC_CLERK_PUBLISHABLE_KEY"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings()
    assert settings.clerk_publishable_key == "pk_test_Y2xlcmsuZXhhbXBsZS5jb20k"
    assert settings.clerk_secret_key is not None
    assert settings.clerk_secret_key.get_secret_value() == "sk_test_abc"
    assert settings.database is not None
    assert settings.database.connect_kwargs["host"] == NEON_HOST


def test_comma_separated_lists(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CORS_ALLOW_ORIGINS", "http://localhost:5173, https://app.example.com/")
    monkeypatch.setenv("CLERK_AUTHORIZED_PARTIES", "https://app.example.com")
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.cors_allow_origins == ["http://localhost:5173", "https://app.example.com"]
    assert settings.clerk_authorized_parties == ["https://app.example.com"]


def test_env_example_documents_every_setting_with_a_comment(repo_root: Path) -> None:
    lines = (repo_root / ".env.example").read_text().splitlines()
    documented = {}
    for number, line in enumerate(lines):
        if line and not line.startswith("#"):
            name = line.split("=", 1)[0]
            documented[name] = lines[number - 1].startswith("#")
    expected = set()
    for name, info in Settings.model_fields.items():
        alias = info.validation_alias
        expected.add(str(alias.choices[0]) if isinstance(alias, AliasChoices) else name.upper())
    assert set(documented) == expected
    assert all(documented.values()), [name for name, ok in documented.items() if not ok]
