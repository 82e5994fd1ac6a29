"""Two yardsticks for quoteapi's figures, served exactly as `quoteapi serve` serves the app
(uvicorn, uvloop, httptools, no access log; see quoteapi.cli.serve):

- `bare`: FastAPI returning a small JSON dict; no auth, no database. The framework's ceiling.
- `raw`: the same /me/message contract written by hand: PyJWT checks the RS256 signature and the
  claims of every request's token (the key object is loaded once; no token cache), and raw
  asyncpg (a pool, asyncpg's own statement cache, no reset query) runs the service's SQL: GET
  selects by user_id, PUT upserts and returns the row. What a careful minimal implementation
  costs: one round trip to PostgreSQL per request.

- `tutorial`: the contract as a fastapi-clerk-auth tutorial writes it: one dependency that
  verifies every token with PyJWT (no cache) and hands over a SQLModel `AsyncSession`; GET is
  `session.get(UserMessage, user_id)`, PUT loads, changes or adds the row, commits and
  refreshes. What users would write instead of quoteapi.

Run: python bench/baselines.py {bare,raw,tutorial} --port PORT [--workers W]
The raw and tutorial apps read BENCH_DATABASE_URL, BENCH_JWT_KEY (PEM), BENCH_ISSUER, BENCH_AZP
and BENCH_POOL_SIZE from the environment; with BENCH_GC_GEN0_THRESHOLD the raw app tunes its
garbage collector as the service's QUOTEAPI_GC_GEN0_THRESHOLD does.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import jwt
import uvicorn
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from fastapi import Depends, FastAPI, HTTPException, Request, Response
from fastapi.responses import JSONResponse
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine
from sqlmodel.ext.asyncio.session import AsyncSession

from quoteapi.app import tune_garbage_collector
from quoteapi.database.url import parse_database_url
from quoteapi.messages.models import UserMessage

SELECT = "SELECT message, create_ts, update_ts, version FROM user_messages WHERE user_id = $1"
# The service's PUT without preconditions: insert, or replace with a new version; xmax = 0 on a
# row version this statement inserted.
_UPSERT = """\
INSERT INTO user_messages (user_id, message) VALUES ($1, $2)
ON CONFLICT (user_id) DO UPDATE
SET message = excluded.message, update_ts = now(), version = nextval('user_messages_version_seq')
RETURNING message, create_ts, update_ts, version, (xmax = 0) AS created
"""
_MAX_MESSAGE = 1000


async def _keep_session(connection: asyncpg.Connection) -> None:
    """No reset query when a connection returns to the pool: these handlers leave no session
    state (no SET, LISTEN, advisory lock or open transaction), and asyncpg's default reset
    would cost a round trip per request that the service does not pay."""


def create_bare_app() -> FastAPI:
    """The framework ceiling: routes that return a small JSON dict."""
    app = FastAPI()

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/me/message")
    async def get_message() -> dict[str, str]:
        return {"message": "Stay hungry, stay foolish."}

    @app.put("/me/message")
    async def put_message(request: Request) -> dict[str, str]:
        await request.body()
        return {"message": "Stay hungry, stay foolish."}

    return app


def token_checker() -> Any:
    """PyJWT on every request, no cache: the user id of a valid token, else None."""
    key = load_pem_public_key(os.environ["BENCH_JWT_KEY"].encode())
    assert isinstance(key, RSAPublicKey)
    issuer = os.environ["BENCH_ISSUER"]
    azp = os.environ.get("BENCH_AZP")

    def user_of(request: Request) -> str | None:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer":
            return None
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=["RS256"],
                issuer=issuer,
                leeway=5,
                options={"require": ["exp", "iat", "sub", "sid"]},
            )
        except jwt.PyJWTError:
            return None
        if azp is not None and claims.get("azp") != azp:
            return None
        sub: str = claims["sub"]
        return sub

    return user_of


def create_raw_app() -> FastAPI:
    """/me/message by hand: PyJWT on every request, raw asyncpg."""
    user_of = token_checker()
    database = parse_database_url(os.environ["BENCH_DATABASE_URL"])
    pool_size = int(os.environ.get("BENCH_POOL_SIZE", "10"))
    gc_threshold = int(os.environ.get("BENCH_GC_GEN0_THRESHOLD", "0"))
    pools: list[asyncpg.Pool] = []

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool = await asyncpg.create_pool(
            **database.connect_kwargs,
            min_size=pool_size,
            max_size=pool_size,
            reset=_keep_session,
        )
        pools.append(pool)
        tune_garbage_collector(gc_threshold)
        try:
            yield
        finally:
            await pool.close()

    def message(row: asyncpg.Record, status: int = 200) -> JSONResponse:
        body = {
            "message": row["message"],
            "created_at": row["create_ts"].isoformat(),
            "updated_at": row["update_ts"].isoformat(),
        }
        return JSONResponse(body, status_code=status, headers={"ETag": f'"{row["version"]}"'})

    def problem(status: int, code: str) -> JSONResponse:
        return JSONResponse({"status": status, "code": code}, status_code=status)

    app = FastAPI(lifespan=lifespan)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/me/message")
    async def get_message(request: Request) -> Response:
        user = user_of(request)
        if user is None:
            return problem(401, "token-invalid")
        row = await pools[0].fetchrow(SELECT, user)
        return problem(404, "message-not-found") if row is None else message(row)

    @app.put("/me/message")
    async def put_message(request: Request) -> Response:
        user = user_of(request)
        if user is None:
            return problem(401, "token-invalid")
        body: Any = await request.json()
        text = body.get("message") if isinstance(body, dict) else None
        if not isinstance(text, str) or not 0 < len(text.strip()) <= _MAX_MESSAGE:
            return problem(422, "validation-failed")
        row = await pools[0].fetchrow(_UPSERT, user, text.strip())
        assert row is not None
        return message(row, 201 if row["created"] else 200)

    return app


def create_tutorial_app() -> FastAPI:
    """/me/message as a tutorial writes it: one dependency (PyJWT + a SQLModel session)."""
    user_of = token_checker()
    database = parse_database_url(os.environ["BENCH_DATABASE_URL"])
    pool_size = int(os.environ.get("BENCH_POOL_SIZE", "10"))
    engine = create_async_engine(
        "postgresql+asyncpg://",
        connect_args=database.connect_kwargs,
        pool_size=pool_size,
        max_overflow=0,
    )
    sessions = async_sessionmaker(engine, class_=AsyncSession, expire_on_commit=False)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        await engine.dispose()

    async def caller_session(request: Request) -> AsyncIterator[tuple[str, AsyncSession]]:
        user = user_of(request)
        if user is None:
            raise HTTPException(401, "token-invalid")
        async with sessions() as session:
            yield user, session

    def message(row: UserMessage, status: int = 200) -> JSONResponse:
        body = {
            "message": row.message,
            "created_at": row.created_at.isoformat(),
            "updated_at": row.updated_at.isoformat(),
        }
        return JSONResponse(body, status_code=status, headers={"ETag": f'"{row.version}"'})

    app = FastAPI(lifespan=lifespan)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/me/message")
    async def get_message(
        caller: tuple[str, AsyncSession] = Depends(caller_session),
    ) -> Response:
        user, session = caller
        row = await session.get(UserMessage, user)
        if row is None:
            raise HTTPException(404, "message-not-found")
        return message(row)

    @app.put("/me/message")
    async def put_message(
        request: Request,
        caller: tuple[str, AsyncSession] = Depends(caller_session),
    ) -> Response:
        user, session = caller
        body: Any = await request.json()
        text = body.get("message") if isinstance(body, dict) else None
        if not isinstance(text, str) or not 0 < len(text.strip()) <= _MAX_MESSAGE:
            raise HTTPException(422, "validation-failed")
        row = await session.get(UserMessage, user)
        created = row is None
        if row is None:
            row = UserMessage(user_id=user, message=text.strip())
            session.add(row)
        else:
            row.message = text.strip()
        await session.commit()
        await session.refresh(row)
        return message(row, 201 if created else 200)

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("app", choices=["bare", "raw", "tutorial"])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    # The same flags as quoteapi.cli.serve, so that only the application differs.
    uvicorn.run(
        f"baselines:create_{args.app}_app",
        factory=True,
        app_dir=str(Path(__file__).resolve().parent),
        host=args.host,
        port=args.port,
        workers=args.workers,
        loop="uvloop",
        http="httptools",
        log_config=None,
        access_log=False,
        proxy_headers=True,
    )


if __name__ == "__main__":
    main()
