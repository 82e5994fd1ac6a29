"""Two yardsticks for quoteapi's figures, served exactly as `quoteapi serve` serves the app
(uvicorn, uvloop, httptools, no access log; see quoteapi.cli.serve):

- `bare`: FastAPI returning a small JSON dict; no auth, no database. The framework's ceiling.
- `raw`: the same /me/message contract written by hand: PyJWT checks the RS256 signature and the
  claims of every request's token (the key object is loaded once; no token cache), and raw
  asyncpg (a pool, asyncpg's own statement cache, no reset query) runs the service's SQL: GET
  selects by user_id, PUT upserts and returns the row. What a careful minimal implementation
  costs: one round trip to PostgreSQL per request.

Run: python bench/baselines.py {bare,raw} --port PORT [--workers W]
The raw app reads BENCH_DATABASE_URL, BENCH_JWT_KEY (PEM), BENCH_ISSUER, BENCH_AZP and
BENCH_POOL_SIZE from the environment.
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
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from quoteapi.database import parse_database_url

_SELECT = "SELECT message, create_ts, update_ts, version FROM user_messages WHERE user_id = $1"
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


def create_raw_app() -> FastAPI:
    """/me/message by hand: PyJWT on every request, raw asyncpg."""
    key = load_pem_public_key(os.environ["BENCH_JWT_KEY"].encode())
    assert isinstance(key, RSAPublicKey)
    issuer = os.environ["BENCH_ISSUER"]
    azp = os.environ.get("BENCH_AZP")
    database = parse_database_url(os.environ["BENCH_DATABASE_URL"])
    pool_size = int(os.environ.get("BENCH_POOL_SIZE", "10"))
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
        try:
            yield
        finally:
            await pool.close()

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
        row = await pools[0].fetchrow(_SELECT, user)
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("app", choices=["bare", "raw"])
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
