"""The caller is verified before the body is parsed: without a good token, a PUT gets 401
whatever its body, so an anonymous client learns nothing about how bodies are validated."""

from __future__ import annotations

import httpx
import pytest

from tests.support.tokens import MintToken

BROKEN_BODIES = [
    pytest.param(b'{"message": ', "application/json", id="truncated-json"),
    pytest.param(b"\xff\xfe not utf-8", "application/json", id="not-utf-8"),
    pytest.param(b"message=hi", "application/x-www-form-urlencoded", id="form"),
    pytest.param(b'{"message": ""}', "application/json", id="empty-quote"),
    pytest.param(b"", "application/json", id="no-body"),
]


@pytest.mark.parametrize(("body", "content_type"), BROKEN_BODIES)
@pytest.mark.parametrize(
    ("authorization", "code"),
    [
        pytest.param(None, "token-missing", id="no-token"),
        pytest.param("Bearer not.a.token", "token-malformed", id="bad-token"),
    ],
)
async def test_put_without_a_good_token_is_401_whatever_the_body(
    client: httpx.AsyncClient,
    body: bytes,
    content_type: str,
    authorization: str | None,
    code: str,
) -> None:
    headers = {"Content-Type": content_type}
    if authorization is not None:
        headers["Authorization"] = authorization
    response = await client.put("/me/message", content=body, headers=headers)
    assert response.status_code == 401, response.text
    assert response.json()["code"] == code


async def test_a_verified_caller_still_learns_the_body_is_not_json(
    client: httpx.AsyncClient, mint_token: MintToken
) -> None:
    response = await client.put(
        "/me/message",
        content=b'{"message": ',
        headers={"Authorization": f"Bearer {mint_token()}", "Content-Type": "application/json"},
    )
    assert response.status_code == 400, response.text
    assert response.json()["code"] == "invalid-json"
