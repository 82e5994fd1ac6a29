"""One credential, or none: two Authorization headers or two `__session` cookies are
ambiguous (which one wins depends on the parser), so they are refused with 401."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from tests.support.app import NO_DATABASE_URL, RunningApp, make_settings, running_app
from tests.support.jwks import JwksServer
from tests.support.tokens import MintToken


@pytest.fixture
async def api(jwks_server: JwksServer) -> AsyncIterator[RunningApp]:
    async with running_app(
        make_settings(NO_DATABASE_URL, clerk_jwks_url=jwks_server.url), with_whoami=True
    ) as api:
        yield api


def assert_malformed(response: httpx.Response, why: str) -> None:
    assert response.status_code == 401, response.text
    body = response.json()
    assert body["code"] == "token-malformed"
    assert why in body["detail"]


async def test_two_authorization_headers_are_refused_even_when_both_are_valid(
    api: RunningApp, mint_token: MintToken
) -> None:
    headers = [
        ("Authorization", f"Bearer {mint_token('user_a')}"),
        ("Authorization", f"Bearer {mint_token('user_b')}"),
    ]
    response = await api.http.get("/test/whoami", headers=headers)
    assert_malformed(response, "two Authorization headers")


@pytest.mark.parametrize(
    "cookie_headers",
    [
        pytest.param(["__session={a}; __session={b}"], id="one-cookie-header"),
        pytest.param(["__session={a}", "theme=dark; __session={b}"], id="two-cookie-headers"),
    ],
)
async def test_two_session_cookies_are_refused(
    api: RunningApp, mint_token: MintToken, cookie_headers: list[str]
) -> None:
    a, b = mint_token("user_a"), mint_token("user_b")
    headers = [("Cookie", value.format(a=a, b=b)) for value in cookie_headers]
    response = await api.http.get("/test/whoami", headers=headers)
    assert_malformed(response, "two __session cookies")


async def test_the_authorization_header_settles_two_session_cookies(
    api: RunningApp, mint_token: MintToken
) -> None:
    cookie = f"__session={mint_token('user_a')}; __session={mint_token('user_b')}"
    headers = {"Authorization": f"Bearer {mint_token('user_header')}", "Cookie": cookie}
    response = await api.http.get("/test/whoami", headers=headers)
    assert response.status_code == 200, response.text
    assert response.json()["user_id"] == "user_header"
