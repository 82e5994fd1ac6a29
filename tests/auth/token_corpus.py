"""The token corpus both verifiers are run on: the service's (tests/auth/test_tokens.py,
tests/auth/test_clerk_token_shapes.py) and Clerk's own (tests/auth/test_clerk_compat.py). Every
bad token of the service's table, plus the good ones: the shapes real Clerk instances mint (v1
and v2 claim sets, organizations, billing, impersonation (`act`), custom claims, the header
variants Clerk issues) and the edges of the rules (times within the leeway, optional claims
left out, each authorized party)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import jwt

from quoteapi.auth.verify import MAX_TOKEN_BYTES, MAX_TOKEN_LIFETIME_SECONDS
from tests.auth.test_tokens import BAD_TOKENS, LEEWAY, OTHER_ORIGIN, Build, valid
from tests.support.tokens import TEST_ISSUER, SigningKey

# Clerk's JOSE `cat` values, written out: the tests pin Clerk's values.
SESSION_CATEGORY = "cl_B7d4PD111AAA"
IGNORED_CATEGORY = "cl_I7d4PD111III"  # every token of an instance with use_ignore_jwt_cat

GOOD_TOKENS: list[tuple[str, Build]] = [
    ("v2-session", valid),  # its azp is the first authorized party
    ("v1-session", lambda k, n: valid(k, n, v=None, sts=None)),
    ("cat-missing", lambda k, n: valid(k, n, headers={"cat": None})),
    ("cat-ignored", lambda k, n: valid(k, n, headers={"cat": IGNORED_CATEGORY})),
    ("typ-missing", lambda k, n: valid(k, n, headers={"typ": None})),
    ("cat-and-typ-missing", lambda k, n: valid(k, n, headers={"cat": None, "typ": None})),
    ("azp-second-party", lambda k, n: valid(k, n, azp=OTHER_ORIGIN)),
    (
        "v2-organization",
        lambda k, n: valid(
            k,
            n,
            fva=[3, -1],
            o={"id": "org_2abc", "rol": "admin", "slg": "acme", "per": "read,manage", "fpm": "3"},
        ),
    ),
    (
        "v1-organization",
        lambda k, n: valid(
            k,
            n,
            v=None,
            org_id="org_2abc",
            org_role="org:admin",
            org_slug="acme",
            org_permissions=["org:quotes:manage"],
        ),
    ),
    ("v2-billing", lambda k, n: valid(k, n, pla="u:pro", fea="u:quotes,u:export")),
    (
        "impersonation-act",
        lambda k, n: valid(k, n, act={"sub": "user_support", "iss": "https://dashboard.clerk.com"}),
    ),
    (
        "custom-claims",
        lambda k, n: valid(k, n, email="ada@example.com", metadata={"plan": "pro", "beta": True}),
    ),
    ("sts-active-and-nbf-missing", lambda k, n: valid(k, n, nbf=None)),
    ("sts-nbf-and-v-missing", lambda k, n: valid(k, n, sts=None, nbf=None, v=None)),
    # Expired 2 s before `n`: the service checks it on the real clock, a moment after `n`.
    ("expired-within-the-leeway", lambda k, n: valid(k, n - 60, exp=int(n) - 2)),
    (
        "nbf-and-iat-ahead-within-the-leeway",
        lambda k, n: valid(k, n, nbf=int(n) + LEEWAY - 1, iat=int(n) + LEEWAY - 1),
    ),
]


@dataclass(frozen=True)
class CorpusToken:
    name: str
    token: str
    code: str | None  # the service's answer: None when it accepts the token


def token_corpus(key: SigningKey, now: float) -> list[CorpusToken]:
    """Every token of the corpus, minted with `key` at `now`."""
    good = [CorpusToken(name, build(key, now), None) for name, build in GOOD_TOKENS]
    bad = [CorpusToken(name, build(key, now), code) for name, build, code in BAD_TOKENS]
    return good + bad


def is_session_token_for_this_instance(token: str) -> bool:
    """What the service requires beyond Clerk's `verifyToken`, by design: `iss` exactly this
    instance, a session (or ignored, or no) `cat`, a session that is not pending, a lifetime
    (`exp - iat`) of at most 12 hours so that no token outlives its session's revocation, and
    what every token Clerk mints has (an `iat`, `sub` and `sid` as non-empty strings, well under
    8 KiB). Read without verifying: the caller has a verifier's word for the
    signature."""
    try:
        header = jwt.get_unverified_header(token)
        claims: Any = jwt.decode(token, options={"verify_signature": False})
    except (jwt.PyJWTError, json.JSONDecodeError, UnicodeDecodeError):
        return False
    return (
        isinstance(claims, dict)
        and len(token) <= MAX_TOKEN_BYTES
        and header.get("cat", SESSION_CATEGORY) in (SESSION_CATEGORY, IGNORED_CATEGORY)
        and claims.get("iss") == TEST_ISSUER
        and all(isinstance(claims.get(name), str) and claims[name] for name in ("sub", "sid"))
        and "iat" in claims
        and _lifetime(claims) <= MAX_TOKEN_LIFETIME_SECONDS
        and claims.get("sts") != "pending"
    )


def _lifetime(claims: dict[str, Any]) -> float:
    """`exp - iat` in seconds; infinite unless both are numbers."""
    if not all(type(claims.get(name)) in (int, float) for name in ("exp", "iat")):
        return math.inf
    return float(claims["exp"] - claims["iat"])
