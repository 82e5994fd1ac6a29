"""The signing-key cache against a real JWKS server on loopback: start-up warm-up, refresh
after the TTL, rotation, outage, single flight and the unknown-kid cooldown. The key cache
ages on a FakeClock the tests move (tokens are minted on the real one); the JWKS server counts
what it serves."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.support.app import NO_DATABASE_URL, RunningApp, make_settings, running_app
from tests.support.jwks import JwksServer
from tests.support.logs import events
from tests.support.polling import until
from tests.support.tokens import SESSION_CATEGORY, FakeClock, SigningKey, mint

TTL = 300
COOLDOWN = 30
MAX_STALE = 86400
RETRY_AFTER = 5  # quoteapi.errors.RETRY_AFTER_SECONDS: also the pause after a failed fetch


def key_settings(server: JwksServer, **overrides: Any) -> Any:
    defaults = {
        "clerk_jwks_url": server.url,
        "clerk_jwks_cache_seconds": TTL,
        "clerk_jwks_cooldown_seconds": COOLDOWN,
        "clerk_jwks_max_stale_seconds": MAX_STALE,
    }
    return make_settings(NO_DATABASE_URL, **{**defaults, **overrides})


@pytest.fixture
async def api(jwks_server: JwksServer, clock: FakeClock) -> AsyncIterator[RunningApp]:
    async with running_app(key_settings(jwks_server), clock=clock, with_whoami=True) as api:
        yield api


def token_with_kid(kid: str) -> str:
    """A token naming `kid`; its signature is garbage (it never gets that far)."""

    def segment(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    head = {"alg": "RS256", "typ": "JWT", "kid": kid, "cat": SESSION_CATEGORY}
    claims = {"sub": "user_x", "sid": "sess_x"}
    return f"{segment(head)}.{segment(claims)}.AAAA"


async def test_keys_are_fetched_once_at_start_up_and_then_reused(
    api: RunningApp, jwks_server: JwksServer, signing_key: SigningKey, clock: FakeClock
) -> None:
    assert jwks_server.fetches == 1
    for i in range(20):
        response = await api.whoami(mint(signing_key, f"user_{i}"))
        assert response.status_code == 200, response.text
    assert jwks_server.fetches == 1


async def test_keys_are_refetched_after_the_cache_ttl(
    api: RunningApp, jwks_server: JwksServer, signing_key: SigningKey, clock: FakeClock
) -> None:
    clock.advance(TTL - 1)
    assert (await api.whoami(mint(signing_key))).status_code == 200
    assert jwks_server.fetches == 1
    clock.advance(2)
    assert (await api.whoami(mint(signing_key))).status_code == 200
    await until(lambda: jwks_server.fetches == 2, within=10, what="the refetch after the TTL")


async def test_rotation_to_a_new_kid_passes_after_one_refetch(
    api: RunningApp, jwks_server: JwksServer, signing_key: SigningKey, clock: FakeClock
) -> None:
    new_key = SigningKey.generate("ins_rotated")
    jwks_server.publish(new_key)
    for i in range(5):
        response = await api.whoami(mint(new_key, f"user_{i}"))
        assert response.status_code == 200, response.text
    assert jwks_server.fetches == 2
    old = await api.whoami(mint(signing_key))
    assert old.status_code == 401
    assert old.json()["code"] == "token-unknown-key"


async def test_rotation_under_the_same_kid_refetches_once_after_the_signature_fails(
    api: RunningApp, jwks_server: JwksServer, clock: FakeClock
) -> None:
    new_material = SigningKey.generate("ins_test_quoteapi")  # Clerk's kid is the instance id
    jwks_server.publish(new_material)
    for i in range(5):
        response = await api.whoami(mint(new_material, f"user_{i}"))
        assert response.status_code == 200, response.text
    assert jwks_server.fetches == 2


async def test_bad_signatures_refetch_at_most_once_per_cooldown(
    api: RunningApp, jwks_server: JwksServer, clock: FakeClock
) -> None:
    forger = SigningKey.generate("ins_test_quoteapi")
    for _ in range(3):
        for i in range(20):
            response = await api.whoami(mint(forger, f"user_{i}"))
            assert response.json()["code"] == "token-invalid-signature"
        clock.advance(COOLDOWN)
    assert jwks_server.fetches == 1 + 3


async def test_a_key_change_empties_the_token_cache(
    api: RunningApp, jwks_server: JwksServer, signing_key: SigningKey, clock: FakeClock
) -> None:
    assert (await api.whoami(mint(signing_key))).status_code == 200
    assert len(api.verifier.cache) == 1
    new_key = SigningKey.generate("ins_rotated")
    jwks_server.publish(new_key)
    assert (await api.whoami(mint(new_key))).status_code == 200
    assert len(api.verifier.cache) == 1  # only the new token: the old entry went with its key


async def test_an_unchanged_refetch_keeps_the_token_cache(
    api: RunningApp, jwks_server: JwksServer, signing_key: SigningKey, clock: FakeClock
) -> None:
    token = mint(signing_key)
    assert (await api.whoami(token)).status_code == 200
    assert (await api.whoami(token_with_kid("ins_garbage"))).status_code == 401
    assert jwks_server.fetches == 2
    assert len(api.verifier.cache) == 1


async def test_a_token_rejected_for_an_unknown_kid_is_not_remembered(
    api: RunningApp, jwks_server: JwksServer, clock: FakeClock
) -> None:
    new_key = SigningKey.generate("ins_later")
    token = mint(new_key)
    assert (await api.whoami(token)).json()["code"] == "token-unknown-key"
    jwks_server.publish(new_key)
    clock.advance(COOLDOWN)
    assert (await api.whoami(token)).status_code == 200


async def test_500_concurrent_requests_with_a_new_kid_cause_exactly_one_fetch(
    api: RunningApp, jwks_server: JwksServer, signing_key: SigningKey, clock: FakeClock
) -> None:
    new_key = SigningKey.generate("ins_new")
    jwks_server.publish(signing_key, new_key)
    tokens = [mint(new_key, f"user_{i}") for i in range(500)]
    responses = await asyncio.gather(*(api.whoami(token) for token in tokens))
    assert [r.status_code for r in responses] == [200] * 500
    assert jwks_server.fetches == 2


async def test_1000_garbage_kids_cause_at_most_one_fetch_per_cooldown(
    api: RunningApp, jwks_server: JwksServer, clock: FakeClock
) -> None:
    async def flood() -> None:
        tokens = [token_with_kid(f"ins_{uuid.uuid4().hex}") for _ in range(1000)]
        responses = await asyncio.gather(*(api.whoami(token) for token in tokens))
        assert {r.json()["code"] for r in responses} == {"token-unknown-key"}

    await flood()
    assert jwks_server.fetches == 2
    clock.advance(COOLDOWN - 1)
    await flood()
    assert jwks_server.fetches == 2
    clock.advance(1)
    await flood()
    assert jwks_server.fetches == 3


async def test_during_an_outage_the_cached_keys_keep_working(
    api: RunningApp,
    jwks_server: JwksServer,
    signing_key: SigningKey,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    keys = api.verifier.keys

    def failed_fetch() -> bool:
        return keys.fetches_failed >= 1

    jwks_server.stop()
    clock.advance(TTL + 1)
    with caplog.at_level(logging.WARNING, logger="quoteapi.auth"):
        for i in range(3):
            response = await api.whoami(mint(signing_key, f"user_{i}"))
            assert response.status_code == 200, response.text
            await until(failed_fetch, within=10, what="the failed refetch")
        clock.advance(3600)
        response = await api.whoami(mint(signing_key))
        assert response.status_code == 200, response.text
    assert events(caplog.records, "jwks_fetch_failed")
    jwks_server.start()
    clock.advance(RETRY_AFTER)
    assert (await api.whoami(mint(signing_key))).status_code == 200
    await until(lambda: jwks_server.fetches == 2, within=10, what="the refetch after the outage")


async def test_keys_older_than_the_stale_bound_are_not_used(
    api: RunningApp, jwks_server: JwksServer, signing_key: SigningKey, clock: FakeClock
) -> None:
    jwks_server.stop()
    clock.advance(MAX_STALE + 1)
    response = await api.whoami(mint(signing_key))
    assert response.status_code == 503
    assert response.json()["code"] == "auth-unavailable"


async def test_a_cold_start_with_the_jwks_down_returns_503_then_recovers(
    jwks_server: JwksServer,
    signing_key: SigningKey,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    jwks_server.stop()
    with caplog.at_level(logging.WARNING, logger="quoteapi.auth"):
        async with running_app(key_settings(jwks_server), clock=clock, with_whoami=True) as api:
            assert events(caplog.records, "jwks_warm_up_failed")  # start-up went on
            response = await api.whoami(mint(signing_key))
            assert response.status_code == 503
            assert response.headers["content-type"] == "application/problem+json"
            assert response.headers["retry-after"] == str(RETRY_AFTER)
            assert response.json()["code"] == "auth-unavailable"
            assert "www-authenticate" not in response.headers

            jwks_server.start()
            clock.advance(RETRY_AFTER)
            response = await api.whoami(mint(signing_key))
            assert response.status_code == 200, response.text
    assert jwks_server.fetches == 1


async def test_while_the_jwks_is_down_fetches_are_paced(
    jwks_server: JwksServer, signing_key: SigningKey, clock: FakeClock
) -> None:
    jwks_server.stop()
    async with running_app(key_settings(jwks_server), clock=clock, with_whoami=True) as api:
        jwks_server.start()  # back, but within the pause after the failed warm-up
        response = await api.whoami(mint(signing_key))
        assert response.status_code == 503
        assert jwks_server.fetches == 0


async def test_a_jwks_answering_an_error_status_counts_as_down(
    jwks_server: JwksServer, signing_key: SigningKey, clock: FakeClock
) -> None:
    settings = key_settings(jwks_server, clerk_jwks_url=jwks_server.url.replace("jwks", "nope"))
    async with running_app(settings, clock=clock, with_whoami=True) as api:
        response = await api.whoami(mint(signing_key))
    assert response.status_code == 503
