"""From raw asyncpg to quoteapi, one layer at a time: the worker CPU per GET hit of apps that
each add one thing to the one before, driven in-process through ASGI, rounds interleaved.

- raw: bench/baselines.py's raw app (PyJWT on every request, asyncpg's `pool.fetchrow`);
- raw_cached: raw, each token verified once (as the service's token cache does for a frontend
  that reuses its token);
- session: raw_cached reading through a SQLModel `AsyncSession` on quoteapi's own engine
  (autocommit, statements prepared and cached per connection, result columns declared), as
  the stack requires: the least a unit of work through a session costs;
- dependency: session, the caller verified in a FastAPI dependency (as `CurrentUser` is);
- middleware: dependency inside quoteapi's request middleware (request id, JSON access log
  written to /dev/null);
- service: quoteapi as `quoteapi serve` runs it (least-privilege role, the caller bound by
  `act_as`, the pool's FIFO admission, conditional headers, the response model).

Run: .venv/bin/python bench/get_ladder.py [--requests 2000] [--rounds 5]

uvicorn's protocol is left out (it costs every app the same); raw/x is raw's CPU over x's, the
ceiling of x's throughput against raw's where the worker's CPU is the bottleneck.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import asyncpg
import baselines
import database
import tokens
from fastapi import Depends, FastAPI, Request, Response
from fastapi.responses import JSONResponse
from report import load_average, machine_facts
from sqlalchemy import BigInteger, DateTime, String, column, text
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from quoteapi.app import create_app
from quoteapi.database.engine import create_engine
from quoteapi.database.url import parse_database_url
from quoteapi.dev import issuer
from quoteapi.dev.embedded import EmbeddedPostgres
from quoteapi.logs import configure_logging
from quoteapi.middleware import RequestContextMiddleware
from quoteapi.settings import load_settings

Row = Any
Fetch = Callable[[str], Awaitable[Row | None]]
_SELECT = text(baselines.SELECT.replace("$1", ":user_id")).columns(
    column("message", String),
    column("create_ts", DateTime(timezone=True)),
    column("update_ts", DateTime(timezone=True)),
    column("version", BigInteger),
)


def read_app(fetch: Fetch, *, cache: bool, dependency: bool, middleware: bool) -> FastAPI:
    """raw's GET reading its row with `fetch`, with the layers asked for."""
    verify = baselines.token_checker()
    verified: dict[str | None, str | None] = {}

    def user_of(request: Request) -> str | None:
        if not cache:
            return verify(request)
        token = request.headers.get("authorization")
        if token not in verified:
            verified[token] = verify(request)
        return verified[token]

    async def caller(request: Request) -> str | None:
        return user_of(request)

    async def answer(user: str | None) -> Response:
        if user is None:
            return JSONResponse({"code": "token-invalid"}, status_code=401)
        row = await fetch(user)
        if row is None:
            return JSONResponse({"code": "message-not-found"}, status_code=404)
        body = {
            "message": row[0],
            "created_at": row[1].isoformat(),
            "updated_at": row[2].isoformat(),
        }
        return JSONResponse(body, headers={"ETag": f'"{row[3]}"'})

    app = FastAPI()
    if dependency:

        @app.get("/me/message")
        async def get_message_of(user: str | None = Depends(caller)) -> Response:
            return await answer(user)
    else:

        @app.get("/me/message")
        async def get_message(request: Request) -> Response:
            return await answer(user_of(request))

    if middleware:
        app.add_middleware(RequestContextMiddleware)
    return app


def reads(pool: asyncpg.Pool, engine: AsyncEngine) -> dict[str, Fetch]:
    sessions = async_sessionmaker(engine, class_=AsyncSession, expire_on_commit=False)

    async def raw(user: str) -> Row | None:
        return await pool.fetchrow(baselines.SELECT, user)

    async def session(user: str) -> Row | None:
        unit = sessions()
        try:  # as quoteapi's repository executes: on the session's connection
            connection = await unit.connection()
            return (await connection.execute(_SELECT, {"user_id": user})).one_or_none()
        finally:
            await unit.close()

    return {"raw": raw, "session": session}


def asgi_get(app: FastAPI, token: str) -> Callable[[], Awaitable[None]]:
    """One GET /me/message through `app`, as uvicorn hands it over; it must answer 200."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/me/message",
        "raw_path": b"/me/message",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"bench"), (b"authorization", f"Bearer {token}".encode())],
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 8000),
    }
    statuses: list[int] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    async def get() -> None:
        await app(dict(scope), receive, send)
        if statuses[-1] != 200:
            raise RuntimeError(f"GET answered {statuses[-1]}")

    return get


async def cpu_per_request(get: Callable[[], Awaitable[None]], requests: int) -> float:
    """Microseconds of this process's CPU per request, the best of three batches."""
    best = float("inf")
    for _ in range(3):
        started = time.process_time()
        for _ in range(requests):
            await get()
        best = min(best, (time.process_time() - started) / requests * 1e6)
    return best


async def measure(requests: int, rounds: int) -> dict[str, list[float]]:
    postgres = EmbeddedPostgres(Path(tempfile.mkdtemp()) / "postgres", durable=False)
    server_url = postgres.start()
    try:
        owner_url = await database.prepare(server_url, "floor", database.Users.split(1000))
        app_url = await database.create_app_role(owner_url)
        key = tokens.load_key()
        token = issuer.mint_session_token(key, tokens.user_id(1), ttl=3600, azp=tokens.AZP)
        # raw reads as the owner, unbound (bench/run.py --no-rls); the service as deployed.
        os.environ.update(
            BENCH_JWT_KEY=tokens.public_pem(key), BENCH_ISSUER=tokens.ISSUER, BENCH_AZP=tokens.AZP
        )
        owner = parse_database_url(owner_url)
        pool = await asyncpg.create_pool(**owner.connect_kwargs, min_size=10, max_size=10)
        engine = create_engine(owner, pooler=False)
        service = create_app(
            load_settings(
                database_url=app_url,
                clerk_jwt_key=tokens.public_pem(key),
                clerk_issuer=tokens.ISSUER,
                clerk_authorized_parties=[tokens.AZP],
            )
        )
        fetch = reads(pool, engine)
        none = {"cache": False, "dependency": False, "middleware": False}
        apps = {
            "raw": read_app(fetch["raw"], **none),
            "raw_cached": read_app(fetch["raw"], **{**none, "cache": True}),
            "session": read_app(fetch["session"], **{**none, "cache": True}),
            "dependency": read_app(fetch["session"], cache=True, dependency=True, middleware=False),
            "middleware": read_app(fetch["session"], cache=True, dependency=True, middleware=True),
            "service": service,
        }
        figures: dict[str, list[float]] = {name: [] for name in apps}
        async with AsyncExitStack() as stack:
            gets = {}
            for name, app in apps.items():
                await stack.enter_async_context(app.router.lifespan_context(app))
                gets[name] = asgi_get(app, token)
                for _ in range(300):  # warm: connections, prepared statements, caches
                    await gets[name]()
            for _ in range(rounds):
                for name, get in gets.items():
                    figures[name].append(round(await cpu_per_request(get, requests), 1))
        await pool.close()
        await engine.dispose()
    finally:
        postgres.stop()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    configure_logging(json_lines=True)
    logging.getLogger().handlers[0].setStream(open(os.devnull, "w"))  # noqa: SIM115
    load = load_average()
    figures = asyncio.run(measure(args.requests, args.rounds))
    medians = {name: statistics.median(runs) for name, runs in figures.items()}
    facts = machine_facts()
    print(f"{facts['cpu']}, Python {facts['python']}, git {facts['git']}, load {load}")
    for name, runs in figures.items():
        ratio = medians["raw"] / medians[name]
        print(f"{name:14s} {medians[name]:7.1f} us/GET  raw/{name} {ratio:.2f}  rounds {runs}")
    print(json.dumps({"load_average": load, "figures": figures}))


if __name__ == "__main__":
    main()
