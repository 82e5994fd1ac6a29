"""Which entries of a JWKS verify session tokens (RFC 7517): only keys that can verify an RS256
signature. Entries of another type or use may share a signing key's `kid` (section 4.5 allows
equivalent alternatives) and change nothing; a `kid` is ambiguous only when two different
usable keys share it, and then only tokens naming it are refused, the rest of the set serves."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm

from quoteapi.settings import Settings
from tests.support.app import running_app
from tests.support.jwks import JwksServer
from tests.support.logs import events
from tests.support.problems import assert_problem
from tests.support.tokens import SigningKey, mint


def _ec_key(kid: str) -> dict[str, Any]:
    jwk: dict[str, Any] = ECAlgorithm.to_jwk(
        ec.generate_private_key(ec.SECP256R1()).public_key(), as_dict=True
    )
    return {**jwk, "kid": kid, "use": "sig", "alg": "ES256"}


def _unusable_entries(kid: str) -> list[dict[str, Any]]:
    """Entries under `kid` that cannot verify an RS256 signature, one per reason."""
    other = SigningKey.generate(kid).jwk
    without_n = {name: value for name, value in other.items() if name != "n"}
    return [
        _ec_key(kid),
        {**other, "use": "enc", "alg": "RSA-OAEP"},
        {**other, "alg": "RS512"},
        {**other, "key_ops": ["encrypt"]},
        {**other, "n": "not base64url!"},
        SigningKey(kid, rsa.generate_private_key(65537, 1024)).jwk,  # noqa: S505 - refused
        without_n,
        {"kty": "oct", "kid": kid, "k": "c2VjcmV0"},
        "not an object",
    ]


async def test_entries_that_cannot_verify_rs256_are_ignored_even_under_the_same_kid(
    settings: Settings, jwks_server: JwksServer, signing_key: SigningKey
) -> None:
    jwks_server.publish(signing_key, other_entries=_unusable_entries(signing_key.kid))
    async with running_app(settings, with_whoami=True) as api:  # no keys cached before
        response = await api.whoami(mint(signing_key, "user_alternatives"))
    assert response.status_code == 200, response.text


async def test_two_usable_keys_sharing_a_kid_refuse_only_tokens_naming_it(
    settings: Settings,
    jwks_server: JwksServer,
    signing_key: SigningKey,
    caplog: pytest.LogCaptureFixture,
) -> None:
    impostor = SigningKey.generate(signing_key.kid)
    other = SigningKey.generate("ins_other_key")
    jwks_server.publish(signing_key, impostor, other)
    with caplog.at_level(logging.INFO, logger="quoteapi.auth"):
        async with running_app(settings, with_whoami=True) as api:
            for key in (signing_key, impostor):
                ambiguous = await api.whoami(mint(key, "user_ambiguous"))
                assert_problem(ambiguous, 401, "token-ambiguous-key")
            assert (await api.whoami(mint(other, "user_other_kid"))).status_code == 200
    (ambiguous_kid,) = events(caplog.records, "jwks_ambiguous_kid")
    assert (ambiguous_kid["url"], ambiguous_kid["kids"]) == (jwks_server.url, signing_key.kid)


async def test_the_same_key_listed_twice_under_its_kid_is_not_ambiguous(
    settings: Settings, jwks_server: JwksServer, signing_key: SigningKey
) -> None:
    jwks_server.publish(signing_key, other_entries=[{**signing_key.jwk, "use": "sig"}])
    async with running_app(settings, with_whoami=True) as api:
        assert (await api.whoami(mint(signing_key, "user_listed_twice"))).status_code == 200
