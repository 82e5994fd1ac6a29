"""Tokens the verifier refuses although their RS256 signature verifies: a header naming
critical extensions it does not implement (RFC 7515 `crit`), a non-canonical encoding of a good
signature, and a `sub` or `sid` PostgreSQL cannot store (NUL, lone surrogate), which used to
end in a 500."""

from __future__ import annotations

import base64
import json
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

from tests.support.tokens import SESSION_CATEGORY, MintToken, SigningKey, session_claims

ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def assert_malformed(response: httpx.Response, why: str) -> None:
    assert response.status_code == 401, response.text
    assert response.json()["code"] == "token-malformed"
    assert why in response.json()["detail"]


async def get_with(client: httpx.AsyncClient, token: str) -> httpx.Response:
    return await client.get("/me/message", headers={"Authorization": f"Bearer {token}"})


def signed_by_hand(key: SigningKey, header: dict[str, Any]) -> str:
    """An RS256 token with exactly this header (PyJWT's encoder rewrites `crit` and `b64`)."""
    header = {"alg": "RS256", "typ": "JWT", "kid": key.kid, "cat": SESSION_CATEGORY, **header}
    signing_input = (
        f"{b64(json.dumps(header).encode())}.{b64(json.dumps(session_claims()).encode())}"
    )
    signature = key.private_key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input}.{b64(signature)}"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


# PyJWT refuses them; the one it implements, RFC 7797's `b64`, cannot carry claims when false.
@pytest.mark.parametrize(
    "header",
    [
        pytest.param({"crit": ["urn:example:unknown"]}, id="unknown"),
        pytest.param({"crit": []}, id="empty"),
    ],
)
async def test_a_header_with_crit_is_refused(
    client: httpx.AsyncClient, signing_key: SigningKey, header: dict[str, Any]
) -> None:
    response = await get_with(client, signed_by_hand(signing_key, header))
    assert_malformed(response, "")


async def test_a_non_canonical_twin_of_a_good_signature_is_refused(
    client: httpx.AsyncClient, mint_token: MintToken
) -> None:
    token = mint_token("user_twin")
    assert (await get_with(client, token)).status_code == 404  # the original passes
    # A 256-byte signature is 342 characters: the last one carries 4 unused bits. Setting one
    # of them decodes to the same bytes, so the signature still verifies byte for byte.
    last = ALPHABET.index(token[-1])
    twin = token[:-1] + ALPHABET[last | 1]
    assert twin != token
    assert_malformed(await get_with(client, twin), "canonical")


@pytest.mark.parametrize(
    "claims",
    [
        pytest.param({"user_id": "user_\x00admin"}, id="sub-nul"),
        pytest.param({"user_id": "user_\ud800"}, id="sub-lone-surrogate"),
        pytest.param({"sid": "sess_\x00"}, id="sid-nul"),
        pytest.param({"sid": "sess_\udfff"}, id="sid-lone-surrogate"),
    ],
)
@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
async def test_a_sub_or_sid_postgresql_cannot_store_is_refused(
    client: httpx.AsyncClient, mint_token: MintToken, claims: dict[str, str], method: str
) -> None:
    token = mint_token(**claims)
    response = await client.request(
        method,
        "/me/message",
        headers={"Authorization": f"Bearer {token}"},
        json={"message": "x"} if method == "PUT" else None,
    )
    assert_malformed(response, "NUL or lone surrogates")
