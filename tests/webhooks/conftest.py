"""The webhook tests run the root `api` with CLERK_WEBHOOK_SIGNING_SECRET set. Rows are arranged
and inspected as the owner (`owner_engine`): the app's own role sees only one user's rows per
transaction (row-level security)."""

from __future__ import annotations

import pytest

from quoteapi.settings import Settings
from tests.support.app import make_settings
from tests.support.jwks import JwksServer
from tests.support.webhooks import TEST_SECRET


@pytest.fixture
def settings(database_url: str, jwks_server: JwksServer) -> Settings:
    return make_settings(
        database_url, clerk_jwks_url=jwks_server.url, clerk_webhook_signing_secret=TEST_SECRET
    )
