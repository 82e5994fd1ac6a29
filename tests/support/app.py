"""The app under test in-process: settings that read nothing from the developer, and
`running_app`, which builds the app, runs its lifespan and gives a client for it.

Everything the tests read from the app's services goes through `RunningApp`, so that how the
app holds them is written in one place; a test replaces one with `app.dependency_overrides`."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, NamedTuple

import httpx
from fastapi import FastAPI, Request
from sqlalchemy.ext.asyncio import AsyncEngine

from quoteapi.app import create_app
from quoteapi.auth.deps import CurrentUser, VerifiedUser, authenticate, current_user
from quoteapi.auth.verify import TokenVerifier
from quoteapi.services import Services
from quoteapi.settings import Settings
from tests.support.polling import until
from tests.support.tokens import TEST_ISSUER, TEST_KEY

BASE_URL = "http://quoteapi.test"
# A database URL for apps that never touch the database (auth tests): nothing listens there.
NO_DATABASE_URL = "postgresql://nobody:secret@127.0.0.1:1/none"
# Empties what the tests write for users: their quotes and their Clerk lifecycle (a user erased
# or a delivery recorded by one test must not be refused by the next).
EMPTY_USER_TABLES = "TRUNCATE user_messages, erased_users, revoked_sessions, webhook_deliveries"
_CLERK_KEY_SOURCES = (
    "clerk_jwt_key",
    "clerk_jwks_url",
    "clerk_publishable_key",
    "clerk_secret_key",
)


def make_settings(database_url: str, **overrides: object) -> Settings:
    """Settings for a test app: only what the test says, never the developer's `.env`.

    Unless the test names a Clerk key source, tokens are verified with the test signing key
    (`TEST_KEY`, as CLERK_JWT_KEY: no network) and issuer `TEST_ISSUER`, so `mint`'s tokens
    pass."""
    if not any(overrides.get(name) for name in _CLERK_KEY_SOURCES):
        overrides = {"clerk_jwt_key": TEST_KEY.public_pem, **overrides}
    # The test process's own collector stays as Python sets it (test_gc covers the setting).
    overrides = {"clerk_issuer": TEST_ISSUER, "quoteapi_gc_gen0_threshold": 0, **overrides}
    return Settings(_env_file=None, database_url=database_url, **overrides)  # type: ignore[call-arg]


async def whoami(user: CurrentUser) -> dict[str, Any]:
    """The test-only route behind `CurrentUser`: who the token says the caller is."""
    return {"user_id": user.user_id, "session_id": user.session_id}


WHOAMI_PATH = "/test/whoami"


def add_whoami_route(app: FastAPI) -> None:
    """Add `GET /test/whoami` behind `CurrentUser` to `app`."""
    app.add_api_route(WHOAMI_PATH, whoami, methods=["GET"])


class RunningApp(NamedTuple):
    """An app with its lifespan running, and a client talking to it in-process."""

    app: FastAPI
    http: httpx.AsyncClient
    own_verifier: TokenVerifier | None = None  # the test's, when it replaced the app's

    @property
    def services(self) -> Services:
        """What the app's lifespan built (only while it runs)."""
        services: Services = self.app.state.services
        return services

    @property
    def verifier(self) -> TokenVerifier:
        """The verifier requests use: the app's, or the test's own that replaced it."""
        return self.own_verifier or self.services.verifier

    async def engine(self) -> AsyncEngine:
        """The app's database engine (its pool), opened if it was not yet."""
        return await self.services.database.open()

    async def wait_for_idle_pool(self) -> None:
        """Poll until no pooled connection is checked out (start-up checks use one)."""
        pool: Any = (await self.engine()).pool
        await until(lambda: pool.checkedout() == 0, within=5, what="an idle pool")

    def client(self, *, raise_app_exceptions: bool = True) -> httpx.AsyncClient:
        """Another client for the app (`raise_app_exceptions=False`: see what a real server
        answers when a route raises)."""
        return _client(self.app, raise_app_exceptions=raise_app_exceptions)

    async def whoami(self, token: str | None = None, **kwargs: Any) -> httpx.Response:
        """GET /test/whoami, with `token` as a Bearer header when given."""
        headers = dict(kwargs.pop("headers", {}))
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        return await self.http.get(WHOAMI_PATH, headers=headers, **kwargs)


@asynccontextmanager
async def running_app(
    settings: Settings,
    *,
    clock: Callable[[], float] | None = None,
    with_whoami: bool = False,
    lifespan: bool = True,
) -> AsyncIterator[RunningApp]:
    """`create_app(settings)` with its lifespan running (unless `lifespan=False`) and a client
    for it. `clock`: the token verifier reads the time from it; `with_whoami`: the app also
    has `GET /test/whoami` behind `CurrentUser`."""
    app_settings = settings
    if clock is not None:  # the test's verifier replaces the app's: keep the app's offline
        app_settings = settings.model_copy(update={"clerk_jwt_key": TEST_KEY.public_pem})
    app = create_app(app_settings)
    if with_whoami:
        add_whoami_route(app)
    async with _client(app) as http:
        if not lifespan:
            yield RunningApp(app, http)
            return
        async with app.router.lifespan_context(app), httpx.AsyncClient() as jwks_http:
            if clock is None:
                yield RunningApp(app, http)
                return
            verifier = TokenVerifier.from_settings(settings, clock=clock)
            await verifier.start(jwks_http)

            async def caller_on_the_test_clock(request: Request) -> VerifiedUser:
                return await authenticate(request, verifier)

            app.dependency_overrides[current_user] = caller_on_the_test_clock
            try:
                yield RunningApp(app, http, verifier)
            finally:
                await verifier.close()


def _client(app: FastAPI, *, raise_app_exceptions: bool = True) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=raise_app_exceptions)
    return httpx.AsyncClient(transport=transport, base_url=BASE_URL)
