"""Shared fixtures: a real PostgreSQL (embedded unless TEST_DATABASE_URL is set), a fresh
database per test session with migrations applied, and the app on top of it."""

from __future__ import annotations

import json
import os
import threading
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, NamedTuple

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi import FastAPI
from jwt.algorithms import RSAAlgorithm
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from quoteapi.app import create_app
from quoteapi.auth.deps import CurrentUser
from quoteapi.auth.verify import TokenVerifier
from quoteapi.db import create_engine
from quoteapi.dev.databases import (
    create_app_role,
    create_database,
    drop_app_role,
    drop_database,
    url_for_database,
)
from quoteapi.migrations import upgrade_async
from quoteapi.settings import Settings, parse_database_url
from tests.support.processes import ServerProcess, clean_env


@pytest.fixture(scope="session")
def embedded_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """The embedded PostgreSQL the suite runs on (None when TEST_DATABASE_URL is set)."""
    if os.environ.get("TEST_DATABASE_URL"):
        yield None
        return
    from quoteapi.dev.embedded import EmbeddedPostgres

    server = EmbeddedPostgres(tmp_path_factory.mktemp("embedded-pg"), durable=False)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def server_url(embedded_server: object) -> str:
    """URL of a PostgreSQL superuser connection on the test server."""
    from quoteapi.dev.embedded import EmbeddedPostgres

    if isinstance(embedded_server, EmbeddedPostgres):
        return embedded_server.url()
    return os.environ["TEST_DATABASE_URL"]


@pytest.fixture(scope="session")
async def fresh_database(server_url: str) -> AsyncIterator[str]:
    """One new database per test session, dropped at the end; yields its URL."""
    name = f"quoteapi_test_{uuid.uuid4().hex[:10]}"
    await create_database(server_url, name)
    yield url_for_database(server_url, name)
    await drop_database(server_url, name)


@pytest.fixture(scope="session")
async def owner_database_url(fresh_database: str) -> str:
    """The session's database, migrated to head, as its owner (a superuser: bypasses RLS)."""
    await upgrade_async(parse_database_url(fresh_database))
    return fresh_database


@pytest.fixture(scope="session")
async def database_url(owner_database_url: str) -> AsyncIterator[str]:
    """The session's database as the service connects in production: a least-privilege role,
    so row-level security applies to every test that goes through the app."""
    role = f"quoteapi_app_{uuid.uuid4().hex[:8]}"
    yield await create_app_role(owner_database_url, role, "app-role-secret")
    await drop_app_role(owner_database_url, role)


@pytest.fixture(scope="session")
async def owner_engine(owner_database_url: str) -> AsyncIterator[AsyncEngine]:
    """An engine as the owner, for tests to arrange and inspect rows behind the app's back."""
    engine = create_engine(parse_database_url(owner_database_url), pool_size=2)
    yield engine
    await engine.dispose()


@pytest.fixture
async def empty_database_url(server_url: str) -> AsyncIterator[str]:
    """A database of its own for one test that needs an empty schema (migration tests)."""
    name = f"quoteapi_test_{uuid.uuid4().hex[:10]}"
    await create_database(server_url, name)
    yield url_for_database(server_url, name)
    await drop_database(server_url, name)


def make_settings(database_url: str, **overrides: object) -> Settings:
    """Settings for a test app: only what the test says, never the developer's `.env`.

    Unless the test names a Clerk key source, tokens are verified with the test signing key
    (`TEST_KEY`, as CLERK_JWT_KEY: no network) and issuer `TEST_ISSUER`, so `mint_token`'s
    tokens pass."""
    if not any(overrides.get(name) for name in _CLERK_KEY_SOURCES):
        overrides = {"clerk_jwt_key": TEST_KEY.public_pem, **overrides}
    overrides = {"clerk_issuer": TEST_ISSUER, **overrides}
    return Settings(_env_file=None, database_url=database_url, **overrides)  # type: ignore[call-arg]


@pytest.fixture
def settings(database_url: str, jwks_server: JwksServer) -> Settings:
    """Settings whose tokens are verified against the loopback JWKS server, as in production."""
    return make_settings(database_url, clerk_jwks_url=jwks_server.url, clerk_issuer=TEST_ISSUER)


@pytest.fixture
async def app(settings: Settings, owner_engine: AsyncEngine) -> AsyncIterator[FastAPI]:
    """The app with its lifespan running, on a database emptied for this test."""
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        async with owner_engine.begin() as connection:
            await connection.execute(text("TRUNCATE user_messages"))
        yield application


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client talking to the app in-process."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://quoteapi.test") as http:
        yield http


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def pooled_database_url(
    database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """The session's database reached through a real PgBouncer in transaction mode."""
    from tests.support.pgbouncer import find_pgbouncer, run_pgbouncer

    if find_pgbouncer() is None:
        if os.environ.get("CI"):
            pytest.fail("pgbouncer is not installed; .ci/run installs it")
        pytest.skip("pgbouncer is not installed (apt-get install pgbouncer)")
    with run_pgbouncer(database_url, tmp_path_factory.mktemp("pgbouncer")) as url:
        yield url


# === Auth fixtures (quoteapi.auth) ==============================================================
# A test signing key, a real JWKS server on loopback (counts fetches, rotates, goes down and
# comes back), Clerk-shaped token minting, and a client for an app with a route behind
# `CurrentUser`. Used by tests/test_auth_*.py and by every test that sends a token.

TEST_ISSUER = "https://clerk.quoteapi.test"
TEST_AZP = "http://localhost:5173"
# Written out rather than imported: the tests pin Clerk's value.
SESSION_CATEGORY = "cl_B7d4PD111AAA"
# A database URL for apps that never touch the database (auth tests): nothing listens there.
NO_DATABASE_URL = "postgresql://nobody:secret@127.0.0.1:1/none"
_CLERK_KEY_SOURCES = (
    "clerk_jwt_key",
    "clerk_jwks_url",
    "clerk_publishable_key",
    "clerk_secret_key",
)


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


@pytest.fixture(scope="session")
def signing_key() -> SigningKey:
    """The key the JWKS server publishes first and `mint_token` signs with."""
    return TEST_KEY


@pytest.fixture
def mint_token(signing_key: SigningKey) -> MintToken:
    """`mint_token(user_id="user_...", *, headers=..., now=..., **claim_overrides) -> str`."""

    def mint_token(user_id: str = "user_test", **kwargs: Any) -> str:
        return mint(signing_key, user_id, **kwargs)

    return mint_token


@pytest.fixture
def auth_headers(mint_token: MintToken) -> Callable[[str], dict[str, str]]:
    """`auth_headers(user_id) -> {"Authorization": "Bearer <a fresh session token>"}`."""

    def auth_headers(user_id: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {mint_token(user_id)}"}

    return auth_headers


class JwksServer:
    """A JWKS endpoint on 127.0.0.1, served from a thread, restartable on the same port."""

    PATH = "/.well-known/jwks.json"

    def __init__(self, *keys: SigningKey) -> None:
        self._lock = threading.Lock()
        self._keys: tuple[SigningKey, ...] = keys
        self._fetches = 0
        self._port = 0
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._port}{self.PATH}"

    @property
    def fetches(self) -> int:
        """How many times the JWKS has been served."""
        with self._lock:
            return self._fetches

    def publish(self, *keys: SigningKey) -> None:
        """Serve these keys from now on (a rotation)."""
        with self._lock:
            self._keys = keys

    def start(self) -> None:
        """Listen (again, on the same port after a `stop`) and return once it answers."""
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/ready":
                    body = b"ok"
                elif self.path == JwksServer.PATH:
                    with server._lock:
                        server._fetches += 1
                        body = json.dumps({"keys": [k.jwk for k in server._keys]}).encode()
                else:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", self._port), Handler)
        self._httpd.daemon_threads = True
        self._port = self._httpd.server_address[1]
        # A short poll interval makes `stop` quick (shutdown waits for the loop to notice).
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )
        self._thread.start()
        _wait_until_ready(f"http://127.0.0.1:{self._port}/ready")

    def stop(self) -> None:
        """Stop listening: connections are refused until `start`."""
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            assert self._thread is not None
            self._thread.join()
            self._httpd = None


def _wait_until_ready(url: str, attempts: int = 500) -> None:
    for _ in range(attempts):
        try:
            with urllib.request.urlopen(url, timeout=1) as response:  # noqa: S310 - loopback
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.01)  # poll interval, not a guess at start-up time
    raise RuntimeError(f"{url} never became ready")


@pytest.fixture
def jwks_server(signing_key: SigningKey) -> Iterator[JwksServer]:
    """A running JWKS server publishing `signing_key`."""
    server = JwksServer(signing_key)
    server.start()
    yield server
    server.stop()


class FakeClock:
    """A clock the test moves: starts at the real time, advances only when told."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


async def whoami(user: CurrentUser) -> dict[str, Any]:
    """The test-only route behind `CurrentUser`: who the token says the caller is."""
    return {"user_id": user.user_id, "session_id": user.session_id}


class AuthApp(NamedTuple):
    app: FastAPI
    http: httpx.AsyncClient

    @property
    def verifier(self) -> TokenVerifier:
        verifier: TokenVerifier = self.app.state.verifier
        return verifier

    async def whoami(self, token: str | None = None, **kwargs: Any) -> httpx.Response:
        """GET /test/whoami, with `token` as a Bearer header when given."""
        headers = dict(kwargs.pop("headers", {}))
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        return await self.http.get("/test/whoami", headers=headers, **kwargs)


@asynccontextmanager
async def auth_client(
    settings: Settings, *, clock: Callable[[], float] | None = None
) -> AsyncIterator[AuthApp]:
    """`create_app(settings)` plus `GET /test/whoami` behind `CurrentUser`, its lifespan
    running, and a client for it; with `clock`, the verifier reads the time from it."""
    app = create_app(settings)
    if clock is not None:
        app.state.verifier = TokenVerifier.from_settings(settings, clock=clock)
    app.add_api_route("/test/whoami", whoami, methods=["GET"])
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://quoteapi.test") as http:
            yield AuthApp(app, http)


# === Real server fixtures (`quoteapi serve` as a process on loopback) ==========================
# For tests that need a real uvicorn: signals, sockets, timeouts, the process's JSON logs.
# `serve_env` builds its environment (the test Clerk key, so `mint_token`'s tokens pass; none of
# the developer's settings); `start_server` starts one on a free port and polls /healthz;
# `tests.support.processes.running_server` does the same for module-scoped fixtures.


def serve_env(database_url: str, **settings: object) -> dict[str, str]:
    """The environment of a `quoteapi serve` process for the tests, plus `settings`."""
    return clean_env(
        {
            "database_url": database_url,
            "clerk_jwt_key": TEST_KEY.public_pem,
            "clerk_issuer": TEST_ISSUER,
            **settings,
        }
    )


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    """`start_server(database_url, *, port=None, **settings) -> ServerProcess`: a healthy
    `quoteapi serve` process; stopped (SIGTERM, then SIGKILL) at teardown."""
    started: list[ServerProcess] = []

    def start_server(
        database_url: str, *, port: int | None = None, **settings: object
    ) -> ServerProcess:
        server = ServerProcess(
            tmp_path / f"server-{len(started)}", serve_env(database_url, **settings), port
        )
        started.append(server)
        server.start()
        return server

    yield start_server
    for server in started:
        server.stop()
