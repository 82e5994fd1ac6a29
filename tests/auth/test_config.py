"""Auth configuration: the publishable key, key-source precedence, the issuer, and the one-line
ConfigErrors that stop start-up."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from pydantic import SecretStr

from quoteapi.app import create_app
from quoteapi.auth.sources import (
    CLERK_API_JWKS_URL,
    frontend_api_from_publishable_key,
    resolve_issuer,
    resolve_key_source,
)
from quoteapi.cli import main
from quoteapi.settings import ConfigError, Settings, load_settings
from tests.support.app import NO_DATABASE_URL
from tests.support.tokens import TEST_KEY

FRONTEND_API = "clean-pony-42.clerk.accounts.dev"
PUBLISHABLE_KEY = "pk_test_" + base64.b64encode(f"{FRONTEND_API}$".encode()).decode()


def clerk_settings(**values: Any) -> Settings:
    """Settings holding only the given values (no `.env`, no test defaults)."""
    return Settings(_env_file=None, database_url=NO_DATABASE_URL, **values)  # type: ignore[call-arg]


@pytest.fixture(autouse=True)
def _no_clerk_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "CLERK_PUBLISHABLE_KEY",
        "NEXT_PUBLIC_CLERK_PUBLISHABLE_KEY",
        "CLERK_SECRET_KEY",
        "CLERK_JWT_KEY",
        "CLERK_JWKS_URL",
        "CLERK_ISSUER",
        "QUOTEAPI_DEV_ISSUER",
    ):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize("prefix", ["pk_test_", "pk_live_"])
def test_the_publishable_key_decodes_to_the_frontend_api(prefix: str) -> None:
    key = prefix + PUBLISHABLE_KEY.removeprefix("pk_test_")
    assert frontend_api_from_publishable_key(key) == FRONTEND_API


def test_a_publishable_key_without_padding_decodes() -> None:
    unpadded = "pk_live_" + base64.b64encode(b"clerk.example.com$").decode().rstrip("=")
    assert frontend_api_from_publishable_key(unpadded) == "clerk.example.com"


@pytest.mark.parametrize(
    "key",
    [
        "sk_test_" + PUBLISHABLE_KEY.removeprefix("pk_test_"),
        "pk_test_" + base64.b64encode(FRONTEND_API.encode()).decode(),  # no trailing $
        "pk_test_!!!not-base64!!!",
        "pk_test_" + base64.b64encode(b"evil.com/path$").decode(),
        "pk_test_",
    ],
    ids=["secret-prefix", "no-dollar", "not-base64", "not-a-host", "empty"],
)
def test_a_malformed_publishable_key_is_refused(key: str) -> None:
    with pytest.raises(ConfigError, match="CLERK_PUBLISHABLE_KEY"):
        frontend_api_from_publishable_key(key)


def test_the_publishable_key_gives_the_jwks_url_and_the_issuer() -> None:
    settings = clerk_settings(clerk_publishable_key=PUBLISHABLE_KEY)
    source = resolve_key_source(settings)
    assert source.jwks_url == f"https://{FRONTEND_API}/.well-known/jwks.json"
    assert source.headers == {}
    assert resolve_issuer(settings) == f"https://{FRONTEND_API}"


def test_next_public_clerk_publishable_key_is_read_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEXT_PUBLIC_CLERK_PUBLISHABLE_KEY", PUBLISHABLE_KEY)
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert resolve_issuer(settings) == f"https://{FRONTEND_API}"


def test_the_jwt_key_wins_over_every_other_source() -> None:
    settings = clerk_settings(
        clerk_jwt_key=TEST_KEY.public_pem,
        clerk_jwks_url="https://example.test/jwks.json",
        clerk_publishable_key=PUBLISHABLE_KEY,
        clerk_secret_key="sk_test_secret",
    )
    source = resolve_key_source(settings)
    assert source.setting == "CLERK_JWT_KEY"
    assert source.static_key is not None
    assert source.jwks_url is None


def test_the_jwks_url_wins_over_the_derived_ones() -> None:
    settings = clerk_settings(
        clerk_jwks_url="https://example.test/jwks.json",
        clerk_publishable_key=PUBLISHABLE_KEY,
        clerk_secret_key="sk_test_secret",
    )
    source = resolve_key_source(settings)
    assert (source.setting, source.jwks_url) == ("CLERK_JWKS_URL", "https://example.test/jwks.json")


def test_the_publishable_key_wins_over_the_secret_key() -> None:
    settings = clerk_settings(clerk_publishable_key=PUBLISHABLE_KEY, clerk_secret_key="sk_x")
    assert resolve_key_source(settings).setting == "CLERK_PUBLISHABLE_KEY"


def test_the_secret_key_alone_uses_the_backend_api_with_a_bearer_header() -> None:
    settings = clerk_settings(clerk_secret_key=SecretStr("sk_test_abc"))
    source = resolve_key_source(settings)
    assert source.jwks_url == CLERK_API_JWKS_URL
    assert source.headers == {"Authorization": "Bearer sk_test_abc"}


def test_clerk_issuer_wins_over_the_publishable_key_and_loses_its_trailing_slash() -> None:
    settings = clerk_settings(
        clerk_publishable_key=PUBLISHABLE_KEY, clerk_issuer="https://clerk.example.com/"
    )
    assert resolve_issuer(settings) == "https://clerk.example.com"


def test_a_pem_key_with_literal_newline_escapes_is_accepted() -> None:
    escaped = TEST_KEY.public_pem.strip().replace("\n", "\\n")
    source = resolve_key_source(clerk_settings(clerk_jwt_key=escaped))
    assert source.static_key is not None


def test_no_key_source_is_a_one_line_config_error_at_build_time() -> None:
    with pytest.raises(ConfigError) as caught:
        create_app(clerk_settings(clerk_issuer="https://clerk.example.com"))
    message = str(caught.value)
    assert "\n" not in message
    assert "CLERK_PUBLISHABLE_KEY" in message
    assert "Fix:" in message


@pytest.mark.parametrize(
    ("values", "variable"),
    [
        ({"clerk_jwks_url": "https://example.test/jwks.json"}, "CLERK_ISSUER"),
        ({"clerk_secret_key": "sk_test_abc"}, "CLERK_ISSUER"),
        ({"clerk_publishable_key": "pk_test_bm9wZQ"}, "CLERK_PUBLISHABLE_KEY"),
    ],
    ids=["no-issuer", "secret-key-alone-needs-an-issuer", "bad-publishable-key"],
)
def test_an_incomplete_clerk_configuration_stops_create_app_naming_the_variable(
    values: dict[str, Any], variable: str
) -> None:
    with pytest.raises(ConfigError, match=variable) as caught:
        create_app(clerk_settings(**values))
    assert caught.value.variable == variable


EC_PUBLIC_PEM = (
    ec.generate_private_key(ec.SECP256R1())
    .public_key()
    .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    .decode()
)


@pytest.mark.parametrize(
    ("values", "variable"),
    [
        ({"clerk_jwt_key": "not a key"}, "CLERK_JWT_KEY"),
        ({"clerk_jwt_key": EC_PUBLIC_PEM}, "CLERK_JWT_KEY"),
        ({"clerk_jwks_url": "file:///etc/passwd"}, "CLERK_JWKS_URL"),
    ],
    ids=["jwt-key-garbage", "jwt-key-ec", "jwks-url-not-http"],
)
def test_an_unusable_key_source_is_a_config_error_naming_the_variable(
    values: dict[str, Any], variable: str
) -> None:
    with pytest.raises(ConfigError, match=variable):
        resolve_key_source(clerk_settings(**values))


def test_a_negative_leeway_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLERK_LEEWAY_SECONDS", "-1")
    with pytest.raises(ConfigError, match="CLERK_LEEWAY_SECONDS"):
        load_settings(_env_file=None)


def test_serve_refuses_the_dev_issuer(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)  # no developer `.env`
    monkeypatch.setenv("QUOTEAPI_DEV_ISSUER", "1")
    monkeypatch.setenv("DATABASE_URL", NO_DATABASE_URL)
    monkeypatch.setenv("CLERK_PUBLISHABLE_KEY", PUBLISHABLE_KEY)
    with pytest.raises(SystemExit) as exited:
        main(["serve"])
    assert exited.value.code == 2
    stderr = capsys.readouterr().err
    assert stderr.count("\n") == 1
    assert "QUOTEAPI_DEV_ISSUER" in stderr
