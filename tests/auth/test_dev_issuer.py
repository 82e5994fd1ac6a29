"""The local dev issuer: a persistent key, its JWKS served by `quoteapi dev`, and `quoteapi token`
whose output `quoteapi dev` accepts over real HTTP through the production verification path."""

from __future__ import annotations

import stat
from collections.abc import Iterator
from pathlib import Path

import httpx
import jwt
import pytest

from quoteapi.auth.verify import MAX_TOKEN_LIFETIME_SECONDS
from quoteapi.cli import main
from quoteapi.dev import issuer
from tests.support.app import NO_DATABASE_URL, make_settings, running_app
from tests.support.processes import ServerProcess, clean_env, running_server
from tests.support.tokens import SESSION_CATEGORY, bearer


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A data directory `quoteapi token` uses too (no developer `.env` is read)."""
    monkeypatch.chdir(tmp_path)
    for name in ("CLERK_PUBLISHABLE_KEY", "CLERK_SECRET_KEY", "CLERK_JWT_KEY", "CLERK_JWKS_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("QUOTEAPI_DATA_DIR", str(tmp_path / "data"))
    return tmp_path / "data"


@pytest.fixture(scope="module")
def dev_server(
    owner_database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """`quoteapi dev` (dev issuer on, no web page) on loopback, on the test database."""
    workdir = tmp_path_factory.mktemp("dev")
    env = clean_env({"database_url": owner_database_url, "quoteapi_data_dir": workdir / "data"})
    with running_server(workdir, env, args=("--web-port", "0"), command="dev") as server:
        yield server


def run_token_command(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    main(["token", *args])
    return capsys.readouterr().out.strip()


def test_quoteapi_token_is_accepted_by_the_dev_server(
    dev_server: ServerProcess,
    data_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("QUOTEAPI_DATA_DIR", dev_server.env["QUOTEAPI_DATA_DIR"])  # its key
    token = run_token_command(capsys, "--user", "user_dev_token")
    with httpx.Client(base_url=dev_server.url, headers=bearer(token), timeout=10) as http:
        stored = http.put("/me/message", json={"message": "signed by the dev issuer"})
        read = http.get("/me/message")
    assert stored.status_code in (200, 201), stored.text
    assert read.json()["message"] == "signed by the dev issuer"


def test_the_dev_server_serves_its_jwks(dev_server: ServerProcess) -> None:
    document = httpx.get(f"{dev_server.url}{issuer.JWKS_PATH}", timeout=10).json()
    assert [key["kid"] for key in document["keys"]] == [issuer.DEV_KID]
    assert "d" not in document["keys"][0]  # the public half only


def test_quoteapi_token_is_clerk_shaped(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    token = run_token_command(
        capsys, "--user", "user_9", "--ttl", "120", "--azp", "http://localhost:3000"
    )
    header = jwt.get_unverified_header(token)
    claims = jwt.decode(token, options={"verify_signature": False})
    assert header == {"alg": "RS256", "typ": "JWT", "kid": issuer.DEV_KID, "cat": SESSION_CATEGORY}
    assert set(claims) == {"sub", "sid", "iat", "nbf", "exp", "iss", "azp", "v", "sts"}
    assert claims["sub"] == "user_9"
    assert claims["sid"].startswith("sess_")
    assert claims["exp"] - claims["iat"] == 120
    assert (claims["iss"], claims["azp"], claims["v"], claims["sts"]) == (
        issuer.DEV_ISSUER,
        "http://localhost:3000",
        2,
        "active",
    )


def test_quoteapi_token_names_the_session_it_is_told(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    token = run_token_command(capsys, "--user", "user_9", "--session", "sess_to_end_later")
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["sid"] == "sess_to_end_later"


def test_quoteapi_token_refuses_a_ttl_longer_than_the_verifier_accepts(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    longest = run_token_command(
        capsys, "--user", "user_9", "--ttl", str(MAX_TOKEN_LIFETIME_SECONDS)
    )
    claims = jwt.decode(longest, options={"verify_signature": False})
    assert claims["exp"] - claims["iat"] == MAX_TOKEN_LIFETIME_SECONDS
    with pytest.raises(SystemExit) as exited:
        main(["token", "--user", "user_9", "--ttl", str(MAX_TOKEN_LIFETIME_SECONDS + 1)])
    assert exited.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith(
        f"quoteapi token: error: argument --ttl: {MAX_TOKEN_LIFETIME_SECONDS + 1} is over "
        f"{MAX_TOKEN_LIFETIME_SECONDS} seconds (12 hours)"
    )


def test_the_dev_key_is_private_to_its_owner_and_kept(data_dir: Path) -> None:
    first = issuer.load_or_create_key(data_dir)
    path = data_dir / issuer.KEY_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    second = issuer.load_or_create_key(data_dir)
    assert first.private_numbers() == second.private_numbers()


async def test_the_dev_jwks_route_is_absent_unless_the_dev_issuer_is_on(data_dir: Path) -> None:
    async with running_app(make_settings(NO_DATABASE_URL)) as api:
        response = await api.http.get(issuer.JWKS_PATH)
    assert response.status_code == 404


def test_quoteapi_token_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["token", "--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert "--user" in out
    assert "--ttl" in out
    assert f"up to {MAX_TOKEN_LIFETIME_SECONDS} " in " ".join(out.split())  # however it wraps
    assert "--azp" in out
