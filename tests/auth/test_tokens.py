"""Session tokens over HTTP through `CurrentUser`: every bad token gets 401 and its own code;
good tokens pass from the Authorization header or the `__session` cookie."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from quoteapi.auth import problems as auth_problems
from quoteapi.auth.problems import SESSION_REVOKED, TOKEN_MISSING
from quoteapi.auth.verify import MAX_TOKEN_LIFETIME_SECONDS
from quoteapi.problems import Problem
from quoteapi.settings import Settings
from quoteapi.webhooks.repository import REVOCATION_RETENTION
from tests.support.app import NO_DATABASE_URL, RunningApp, make_settings, running_app
from tests.support.jwks import JwksServer
from tests.support.logs import events, everything
from tests.support.polling import until
from tests.support.problems import assert_problem
from tests.support.tokens import (
    SESSION_CATEGORY,
    TEST_AZP,
    SigningKey,
    mint,
    session_claims,
)

OTHER_ORIGIN = "https://app.example.com"
LEEWAY = 5
# Written out rather than imported: the tests pin the longest lifetime a token may have.
TWELVE_HOURS = 12 * 60 * 60
LARGEST_LEEWAY = 300  # the most CLERK_LEEWAY_SECONDS may be
INVALID_TOKEN_CHALLENGE = 'Bearer realm="quoteapi", error="invalid_token", error_description="'


@pytest.fixture
async def api(jwks_server: JwksServer) -> AsyncIterator[RunningApp]:
    """The app verifying against the loopback JWKS, with authorized parties configured."""
    settings = make_settings(
        NO_DATABASE_URL,
        clerk_jwks_url=jwks_server.url,
        clerk_authorized_parties=f"{TEST_AZP},{OTHER_ORIGIN}",
        clerk_leeway_seconds=LEEWAY,
    )
    async with running_app(settings, with_whoami=True) as api:
        yield api


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def segment(value: Any) -> str:
    return b64(json.dumps(value).encode())


def header(**fields: Any) -> dict[str, Any]:
    base = {"alg": "RS256", "typ": "JWT", "kid": "ins_test_quoteapi", "cat": SESSION_CATEGORY}
    return {k: v for k, v in {**base, **fields}.items() if v is not None}


def hs256_with_public_pem(key: SigningKey, now: float) -> str:
    # The classic algorithm-confusion attack: HMAC keyed with the published RSA public key.
    signing_input = f"{segment(header(alg='HS256'))}.{segment(session_claims(now=now))}"
    mac = hmac.new(key.public_pem.encode(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(mac)}"


def es256(key: SigningKey, now: float) -> str:
    other = ec.generate_private_key(ec.SECP256R1())
    return jwt.encode(session_claims(now=now), other, algorithm="ES256", headers=header(alg=None))


def signed_raw_payload(key: SigningKey, payload: bytes) -> str:
    return jwt.api_jws.encode(payload, key.private_key, algorithm="RS256", headers=header())


def tamper_sub(token: str) -> str:
    head, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    return f"{head}.{segment({**claims, 'sub': 'user_admin'})}.{signature}"


Build = Callable[[SigningKey, float], str]
OTHER_KEY = SigningKey.generate("ins_test_quoteapi")  # same kid, different key material


def valid(key: SigningKey, now: float, **overrides: Any) -> str:
    return mint(key, "user_test", now=now, **overrides)


BAD_TOKENS: list[tuple[str, Build, str]] = [
    # Shape, before anything is decoded.
    ("two-segments", lambda k, n: "abc.def", "token-malformed"),
    ("four-segments", lambda k, n: valid(k, n) + ".abc", "token-malformed"),
    (
        "empty-signature",
        lambda k, n: valid(k, n).rsplit(".", 1)[0] + ".",
        "token-invalid-signature",
    ),
    ("bad-base64-length", lambda k, n: "abcde.abcd.abcd", "token-malformed"),
    ("base64-padding-char", lambda k, n: "eyJ=.abcd.abcd", "token-malformed"),
    ("header-not-json", lambda k, n: f"{b64(b'not json')}.abcd.abcd", "token-malformed"),
    ("header-json-array", lambda k, n: f"{segment([1, 2])}.abcd.abcd", "token-malformed"),
    ("non-ascii-garbage", lambda k, n: "ëyJ.ü.ß", "token-malformed"),
    ("too-large-9-kib", lambda k, n: valid(k, n, pad="x" * 9 * 1024), "token-too-large"),
    # Header.
    (
        "alg-none-unsigned",
        lambda k, n: f"{segment(header(alg='none'))}.{segment(session_claims(now=n))}.",
        "token-invalid-algorithm",
    ),
    (
        "alg-none-with-signature",
        lambda k, n: f"{segment(header(alg='none'))}.{segment(session_claims(now=n))}.AAAA",
        "token-invalid-algorithm",
    ),
    ("hs256-public-pem-as-secret", hs256_with_public_pem, "token-invalid-algorithm"),
    ("es256", es256, "token-invalid-algorithm"),
    ("rs512", lambda k, n: valid(k, n, headers={"alg": "RS512"}), "token-invalid-algorithm"),
    (
        "alg-missing",
        lambda k, n: f"{segment(header(alg=None))}.{segment(session_claims(now=n))}.AAAA",
        "token-invalid-algorithm",
    ),
    ("typ-not-jwt", lambda k, n: valid(k, n, headers={"typ": "at+jwt"}), "token-malformed"),
    (
        "jwt-template-cat",
        lambda k, n: valid(k, n, headers={"cat": "cl_B7d4PD222AAA"}),
        "token-type-not-session",
    ),
    (
        "machine-token-cat",
        lambda k, n: valid(k, n, headers={"cat": "cl_m2m_token"}),
        "token-type-not-session",
    ),
    # No kid names no published key (a single CLERK_JWT_KEY needs none, as in Clerk's SDKs).
    ("kid-missing", lambda k, n: valid(k, n, headers={"kid": None}), "token-unknown-key"),
    (
        "kid-not-a-string",
        lambda k, n: f"{segment(header(kid=7))}.{segment(session_claims(now=n))}.AAAA",
        "token-malformed",
    ),
    ("kid-unknown", lambda k, n: valid(k, n, headers={"kid": "ins_other"}), "token-unknown-key"),
    # Signature.
    ("signed-by-another-key", lambda k, n: valid(OTHER_KEY, n), "token-invalid-signature"),
    ("payload-tampered", lambda k, n: tamper_sub(valid(k, n)), "token-invalid-signature"),
    (
        "signature-garbage",
        lambda k, n: valid(k, n).rsplit(".", 1)[0] + ".AAAA",
        "token-invalid-signature",
    ),
    # Claims, read only once the signature verified.
    ("payload-not-object", lambda k, n: signed_raw_payload(k, b"[1]"), "token-malformed"),
    ("payload-not-json", lambda k, n: signed_raw_payload(k, b"{nope"), "token-malformed"),
    ("exp-missing", lambda k, n: valid(k, n, exp=None), "token-missing-claim"),
    ("iat-missing", lambda k, n: valid(k, n, iat=None), "token-missing-claim"),
    ("sub-missing", lambda k, n: valid(k, n, sub=None), "token-missing-claim"),
    ("sid-missing", lambda k, n: valid(k, n, sid=None), "token-missing-claim"),
    ("exp-not-a-number", lambda k, n: valid(k, n, exp="tomorrow"), "token-malformed"),
    ("exp-numeric-string", lambda k, n: valid(k, n, exp=str(int(n) + 60)), "token-malformed"),
    ("iat-boolean", lambda k, n: valid(k, n, iat=True), "token-malformed"),
    ("exp-boolean", lambda k, n: valid(k, n, exp=True), "token-expired"),  # PyJWT: true is 1
    ("sub-empty", lambda k, n: valid(k, n, sub=""), "token-malformed"),
    ("sid-not-a-string", lambda k, n: valid(k, n, sid=["sess_1"]), "token-malformed"),
    (
        "expired-beyond-leeway",
        lambda k, n: valid(k, n - 60 - LEEWAY, exp=int(n) - LEEWAY),
        "token-expired",
    ),
    ("expired-long-ago", lambda k, n: valid(k, n - 3600), "token-expired"),
    (
        "lifetime-over-12-hours",
        lambda k, n: valid(k, n, exp=int(n) + TWELVE_HOURS + 1),
        "token-lifetime-too-long",
    ),
    (
        "nbf-in-the-future",
        lambda k, n: valid(k, n, nbf=int(n) + LEEWAY + 60),
        "token-not-active-yet",
    ),
    (
        "iat-in-the-future",
        lambda k, n: valid(k, n, iat=int(n) + LEEWAY + 60, nbf=None),
        "token-iat-in-the-future",
    ),
    (
        "iss-wrong",
        lambda k, n: valid(k, n, iss="https://evil.clerk.accounts.dev"),
        "token-invalid-issuer",
    ),
    (
        "iss-trailing-slash",
        lambda k, n: valid(k, n, iss="https://clerk.quoteapi.test/"),
        "token-invalid-issuer",
    ),
    ("iss-missing", lambda k, n: valid(k, n, iss=None), "token-invalid-issuer"),
    (
        "azp-wrong",
        lambda k, n: valid(k, n, azp="https://evil.example"),
        "token-invalid-authorized-party",
    ),
    ("azp-missing", lambda k, n: valid(k, n, azp=None), "token-invalid-authorized-party"),
    (
        "azp-not-a-string",
        lambda k, n: valid(k, n, azp=[TEST_AZP]),
        "token-invalid-authorized-party",
    ),
    ("sts-pending", lambda k, n: valid(k, n, sts="pending"), "token-session-pending"),
]


def test_the_table_covers_every_code_a_token_is_refused_with_in_30_tokens_or_more() -> None:
    # The codes come from the service, so that a new reason to refuse a token needs its tokens
    # here. A missing token is no bad token, an ambiguous key needs a key set that publishes
    # one (tests/auth/test_jwks_selection.py), and a session is revoked by a Clerk webhook
    # (tests/webhooks/test_clerk_lifecycle.py): each has tests of its own.
    refusals = {
        problem.code
        for problem in vars(auth_problems).values()
        if isinstance(problem, Problem) and problem.status == 401
    } - {TOKEN_MISSING.code, auth_problems.TOKEN_AMBIGUOUS_KEY.code, SESSION_REVOKED.code}
    assert {code for _, _, code in BAD_TOKENS} == refusals
    assert len(BAD_TOKENS) >= 30


@pytest.mark.parametrize(
    ("build", "code"), [(b, c) for _, b, c in BAD_TOKENS], ids=[i for i, _, _ in BAD_TOKENS]
)
async def test_bad_token_returns_401_with_its_code(
    api: RunningApp, signing_key: SigningKey, build: Build, code: str
) -> None:
    token = build(signing_key, time.time())
    response = await api.http.get(
        "/test/whoami", headers={"Authorization": b"Bearer " + token.encode("utf-8")}
    )
    assert_problem(response, 401, code)
    challenge = response.headers["www-authenticate"]
    assert challenge.startswith(INVALID_TOKEN_CHALLENGE)
    assert challenge.endswith('"')
    assert len(api.verifier.cache) == 0  # failures are never cached


async def test_valid_token_in_the_authorization_header_passes(
    api: RunningApp, signing_key: SigningKey
) -> None:
    token = mint(signing_key, "user_123", sid="sess_abc")
    response = await api.whoami(token)
    assert response.status_code == 200, response.text
    assert response.json() == {"user_id": "user_123", "session_id": "sess_abc"}


async def test_valid_token_in_the_session_cookie_passes(
    api: RunningApp, signing_key: SigningKey
) -> None:
    token = mint(signing_key, "user_cookie")
    response = await api.http.get("/test/whoami", headers={"Cookie": f"__session={token}"})
    assert response.status_code == 200, response.text
    assert response.json()["user_id"] == "user_cookie"


async def test_the_header_wins_over_the_cookie(api: RunningApp, signing_key: SigningKey) -> None:
    header_token = mint(signing_key, "user_header")
    cookie_token = mint(signing_key, "user_cookie")
    response = await api.whoami(header_token, headers={"Cookie": f"__session={cookie_token}"})
    assert response.json()["user_id"] == "user_header"


async def test_a_bad_header_token_is_not_rescued_by_a_good_cookie(
    api: RunningApp, signing_key: SigningKey
) -> None:
    cookie_token = mint(signing_key, "user_cookie")
    response = await api.whoami("garbage", headers={"Cookie": f"__session={cookie_token}"})
    assert_problem(response, 401, "token-malformed")


async def test_no_token_returns_401_token_missing_with_a_bare_challenge(api: RunningApp) -> None:
    response = await api.whoami()
    assert_problem(response, 401, "token-missing")
    assert response.headers["www-authenticate"] == 'Bearer realm="quoteapi"'


@pytest.mark.parametrize(
    "authorization", ["Basic dXNlcjpwYXNz", "Bearer", "Bearer   ", "Token x.y.z"]
)
async def test_an_authorization_header_that_is_not_bearer_is_malformed(
    api: RunningApp, authorization: str
) -> None:
    response = await api.http.get("/test/whoami", headers={"Authorization": authorization})
    assert_problem(response, 401, "token-malformed")


async def test_the_bearer_scheme_is_case_insensitive(
    api: RunningApp, signing_key: SigningKey
) -> None:
    token = mint(signing_key)
    response = await api.http.get("/test/whoami", headers={"Authorization": f"bearer {token}"})
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    "lifetime", [TWELVE_HOURS + 1, 2 * 24 * 60 * 60], ids=["twelve-hours-and-a-second", "two-days"]
)
async def test_a_token_living_longer_than_twelve_hours_is_refused(
    api: RunningApp, signing_key: SigningKey, lifetime: int
) -> None:
    now = time.time()
    token = mint(signing_key, now=now, exp=int(now) + lifetime)
    assert_problem(await api.whoami(token), 401, "token-lifetime-too-long")


async def test_a_token_may_live_twelve_hours_and_not_a_second_longer(
    api: RunningApp, signing_key: SigningKey
) -> None:
    now = time.time()
    longest = mint(signing_key, now=now, exp=int(now) + TWELVE_HOURS)
    too_long = mint(signing_key, now=now, exp=int(now) + TWELVE_HOURS + 1)
    assert (await api.whoami(longest)).status_code == 200
    assert_problem(await api.whoami(too_long), 401, "token-lifetime-too-long")


def test_no_accepted_token_outlives_the_record_of_its_ended_session() -> None:
    # A token is issued before its session ends and accepted until its exp plus
    # CLERK_LEEWAY_SECONDS at the latest: the ended session must be remembered that long.
    leeway = Settings.model_fields["clerk_leeway_seconds"]
    largest_leeway = [bound.le for bound in leeway.metadata if hasattr(bound, "le")]
    assert largest_leeway == [LARGEST_LEEWAY]
    assert REVOCATION_RETENTION.total_seconds() >= MAX_TOKEN_LIFETIME_SECONDS + LARGEST_LEEWAY


@pytest.mark.parametrize(
    ("setting", "claim"),
    [({}, {"azp": None}), ({"clerk_allow_pending_sessions": True}, {"sts": "pending"})],
    ids=["azp-unchecked-without-authorized-parties", "pending-session-allowed"],
)
async def test_a_claim_passes_when_the_settings_do_not_ask_for_it(
    jwks_server: JwksServer,
    signing_key: SigningKey,
    setting: dict[str, Any],
    claim: dict[str, Any],
) -> None:
    settings = make_settings(NO_DATABASE_URL, clerk_jwks_url=jwks_server.url, **setting)
    async with running_app(settings, with_whoami=True) as api:
        response = await api.whoami(mint(signing_key, **claim))
    assert response.status_code == 200, response.text


async def test_a_verified_token_is_served_from_the_cache(
    api: RunningApp, signing_key: SigningKey
) -> None:
    token = mint(signing_key, "user_cached")
    first = await api.whoami(token)
    second = await api.whoami(token)
    assert first.json() == second.json()
    assert len(api.verifier.cache) == 1


async def test_a_cached_token_stops_being_accepted_when_it_expires(
    jwks_server: JwksServer, signing_key: SigningKey
) -> None:
    settings = make_settings(
        NO_DATABASE_URL, clerk_jwks_url=jwks_server.url, clerk_leeway_seconds=0
    )
    answers: list[tuple[float, int]] = []  # (when the request was sent, its status)
    async with running_app(settings, with_whoami=True) as api:
        expires_at = int(time.time()) + 2
        token = mint(signing_key, iat=expires_at - 60, exp=expires_at)

        async def refused() -> bool:
            sent_at = time.time()
            answers.append((sent_at, (await api.whoami(token)).status_code))
            return answers[-1][1] == 401

        assert not await refused()
        await until(refused, within=15, what="the cached token's expiry")
        assert api.verifier.cache.hits >= 1  # it was served from the cache until then
        assert_problem(await api.whoami(token), 401, "token-expired")
        assert len(api.verifier.cache) == 0
    assert all(sent_at < expires_at for sent_at, status in answers if status == 200), answers


async def test_a_static_pem_key_verifies_without_any_fetch(
    jwks_server: JwksServer, signing_key: SigningKey
) -> None:
    escaped = signing_key.public_pem.replace("\n", "\\n")  # as it sits on one line in .env
    settings = make_settings(NO_DATABASE_URL, clerk_jwt_key=escaped)
    async with running_app(settings, with_whoami=True) as api:
        response = await api.whoami(mint(signing_key))
        other = await api.whoami(mint(OTHER_KEY))
    assert response.status_code == 200, response.text
    assert_problem(other, 401, "token-invalid-signature")
    assert jwks_server.fetches == 0


async def test_rejections_log_the_code_and_never_the_token(
    api: RunningApp, signing_key: SigningKey, caplog: pytest.LogCaptureFixture
) -> None:
    token = mint(signing_key, now=time.time() - 3600)
    with caplog.at_level(logging.DEBUG):
        assert_problem(await api.whoami(token), 401, "token-expired")
    assert [e["code"] for e in events(caplog.records, "token_rejected")] == ["token-expired"]
    for part in token.split("."):
        assert part not in everything(caplog.records)
