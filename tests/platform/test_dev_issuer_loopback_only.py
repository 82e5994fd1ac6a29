"""The dev token issuer never faces a network: `quoteapi dev` refuses a non-loopback bind
while it would run the dev issuer, and `POST /dev/token` answers only requests addressed to a
loopback name (a rebinding DNS name that resolves to 127.0.0.1 gets 403)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from quoteapi.dev import issuer
from tests.support.app import NO_DATABASE_URL, make_settings, running_app
from tests.support.processes import clean_env


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.20", "example.com"])
def test_dev_refuses_a_non_loopback_bind_with_the_dev_issuer(tmp_path: Path, host: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "quoteapi", "dev", "--host", host, "--web-port", "0"],
        cwd=tmp_path,
        env=clean_env({"quoteapi_data_dir": tmp_path / "data"}),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "--host" in lines[0]
    assert host in lines[0]


@pytest.fixture
async def dev_app(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    """The app configured as `quoteapi dev` configures it (dev issuer on)."""
    settings = make_settings(
        NO_DATABASE_URL, quoteapi_data_dir=tmp_path / "data", **issuer.dev_auth_settings(8000)
    )
    async with running_app(settings) as api:
        yield api.http


@pytest.mark.parametrize(
    "host", ["evil.example", "evil.example:8000", "127.0.0.1.nip.io:8000", "0.0.0.0:8000", ""]
)
async def test_dev_token_refuses_a_host_that_is_not_a_loopback_name(
    dev_app: httpx.AsyncClient, host: str
) -> None:
    response = await dev_app.post(
        "/dev/token", json={"user_id": "user_victim"}, headers={"Host": host}
    )
    assert response.status_code == 403, response.text
    assert response.json()["code"] == "host-not-loopback"
    assert "token" not in response.json()


@pytest.mark.parametrize(
    "host", ["127.0.0.1:8000", "localhost:8000", "LOCALHOST", "[::1]:8000", "127.0.0.1"]
)
async def test_dev_token_answers_loopback_names(dev_app: httpx.AsyncClient, host: str) -> None:
    response = await dev_app.post(
        "/dev/token", json={"user_id": "user_dev"}, headers={"Host": host}
    )
    assert response.status_code == 200, response.text
    assert response.json()["user_id"] == "user_dev"
