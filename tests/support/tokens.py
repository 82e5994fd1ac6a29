"""The test signing key and Clerk-shaped session tokens, and a clock the test moves."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

TEST_ISSUER = "https://clerk.quoteapi.test"
TEST_AZP = "http://localhost:5173"
# Written out rather than imported: the tests pin Clerk's value.
SESSION_CATEGORY = "cl_B7d4PD111AAA"


@dataclass(frozen=True)
class SigningKey:
    """An RSA key pair standing in for a Clerk instance's signing key."""

    kid: str
    private_key: rsa.RSAPrivateKey

    @classmethod
    def generate(cls, kid: str) -> SigningKey:
        return cls(kid, rsa.generate_private_key(public_exponent=65537, key_size=2048))

    @property
    def public_pem(self) -> str:
        return (
            self.private_key.public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            .decode()
        )

    @property
    def jwk(self) -> dict[str, Any]:
        jwk: dict[str, Any] = RSAAlgorithm.to_jwk(self.private_key.public_key(), as_dict=True)
        return {**jwk, "kid": self.kid, "use": "sig", "alg": "RS256"}


TEST_KEY = SigningKey.generate("ins_test_quoteapi")


def session_claims(user_id: str = "user_test", *, now: float | None = None) -> dict[str, Any]:
    """The claims of a Clerk v2 session token issued `now` for `user_id`, living 60 s."""
    issued_at = int(time.time() if now is None else now)
    return {
        "sub": user_id,
        "sid": f"sess_{uuid.uuid4().hex[:24]}",
        "iat": issued_at,
        "nbf": issued_at - 5,
        "exp": issued_at + 60,
        "iss": TEST_ISSUER,
        "azp": TEST_AZP,
        "v": 2,
        "sts": "active",
    }


def mint(
    key: SigningKey,
    user_id: str = "user_test",
    *,
    headers: Mapping[str, Any] | None = None,
    now: float | None = None,
    **claim_overrides: Any,
) -> str:
    """A session token signed by `key`; an override of None removes that claim or header."""
    claims = {**session_claims(user_id, now=now), **claim_overrides}
    header = {"kid": key.kid, "typ": "JWT", "cat": SESSION_CATEGORY, **(headers or {})}
    return jwt.encode(
        {k: v for k, v in claims.items() if v is not None},
        key.private_key,
        algorithm="RS256",
        headers={k: v for k, v in header.items() if v is not None},
    )


MintToken = Callable[..., str]
AuthHeaders = Callable[[str], dict[str, str]]


def bearer(token: str) -> dict[str, str]:
    """The Authorization header carrying `token`."""
    return {"Authorization": f"Bearer {token}"}


class FakeClock:
    """A clock the test moves: starts at the real time, advances only when told."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
