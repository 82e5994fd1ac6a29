"""Every good token of the corpus passes: each shape of session token a real Clerk instance
mints (v1 and v2 claim sets, organizations, billing, impersonation, custom claims, and the `cat`
of instances with `use_ignore_jwt_cat`, which Clerk's SDKs treat as no category at all), and
each edge of the rules (times within the leeway, optional claims left out, either authorized
party)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest

from tests.auth.test_tokens import LEEWAY, OTHER_ORIGIN, Build
from tests.auth.token_corpus import GOOD_TOKENS, IGNORED_CATEGORY
from tests.support.app import NO_DATABASE_URL, RunningApp, make_settings, running_app
from tests.support.tokens import TEST_AZP, SigningKey, mint


@pytest.fixture
async def api() -> AsyncIterator[RunningApp]:
    settings = make_settings(
        NO_DATABASE_URL,
        clerk_authorized_parties=f"{TEST_AZP},{OTHER_ORIGIN}",
        clerk_leeway_seconds=LEEWAY,
    )
    async with running_app(settings, with_whoami=True) as api:
        yield api


@pytest.mark.parametrize("build", [b for _, b in GOOD_TOKENS], ids=[i for i, _ in GOOD_TOKENS])
async def test_every_good_token_of_the_corpus_passes(
    api: RunningApp, signing_key: SigningKey, build: Build
) -> None:
    response = await api.whoami(build(signing_key, time.time()))
    assert response.status_code == 200, response.text


async def test_a_token_with_the_ignored_category_names_its_user(
    api: RunningApp, signing_key: SigningKey
) -> None:
    token = mint(signing_key, "user_ignored_cat", headers={"cat": IGNORED_CATEGORY})
    response = await api.whoami(token)
    assert response.status_code == 200, response.text
    assert response.json()["user_id"] == "user_ignored_cat"
