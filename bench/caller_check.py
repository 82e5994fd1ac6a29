"""PostgreSQL's cost of reading the caller through `act_as` (migration 0004: the row-level
security binding, the ended-session check and, for a write, the user's lock and the
deleted-user check) against `set_config` alone (the binding as it was before).

Run: .venv/bin/python bench/caller_check.py [--calls 20000] [--rounds 3]

It starts an embedded PostgreSQL, migrates it, fills the lifecycle tables with 10,000 rows each,
and calls each form alone, prepared, on one connection as the least-privilege role (row-level
security applies), inside a transaction as a request's statement is. It reads the backend's
CPU time from /proc (Linux) around each batch and reports the median round, in microseconds
per call; the wall time per call includes the round trip.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import statistics
import tempfile
import time
from pathlib import Path

import asyncpg

from quoteapi.database.url import parse_database_url
from quoteapi.dev.databases import ensure_app_role
from quoteapi.dev.embedded import EmbeddedPostgres
from quoteapi.migrations import upgrade_async

FORMS = {
    "set_config alone (before)": ("SELECT set_config('app.user_id', $1, true)", ("user_1",)),
    "act_as, a read": ("SELECT act_as($1, $2, false)", ("user_1", "sess_live")),
    "act_as, a write": ("SELECT act_as($1, $2, true)", ("user_1", "sess_live")),
}
_FILL = (
    "INSERT INTO revoked_sessions (session_id, user_id, expires_at)"
    " SELECT 'sess_' || g, 'user_' || g, now() + interval '1 day' FROM generate_series(1, 10000) g",
    "INSERT INTO erased_users (user_id) SELECT 'user_gone_' || g FROM generate_series(1, 10000) g",
    "ANALYZE",
)


def backend_cpu_seconds(connection: asyncpg.Connection) -> float:
    stat = Path(f"/proc/{connection.get_server_pid()}/stat").read_text()
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100  # utime + stime, in clock ticks


async def per_call(
    connection: asyncpg.Connection, sql: str, args: tuple[str, ...], calls: int
) -> tuple[float, float]:
    """Wall and backend CPU microseconds per call of `sql`."""
    statement = await connection.prepare(sql)
    async with connection.transaction():
        for _ in range(500):  # warm the plans
            await statement.fetchval(*args)
        started, cpu = time.perf_counter(), backend_cpu_seconds(connection)
        for _ in range(calls):
            await statement.fetchval(*args)
        wall = time.perf_counter() - started
        cpu = backend_cpu_seconds(connection) - cpu
    return wall / calls * 1e6, cpu / calls * 1e6


async def measure(calls: int, rounds: int) -> dict[str, tuple[float, float]]:
    postgres = EmbeddedPostgres(Path(tempfile.mkdtemp()) / "postgres", durable=False)
    owner_url = postgres.start()
    try:
        await upgrade_async(parse_database_url(owner_url))
        owner = await asyncpg.connect(**parse_database_url(owner_url).connect_kwargs)
        for statement in _FILL:
            await owner.execute(statement)
        await owner.close()
        app_url = await ensure_app_role(owner_url, "quoteapi_bench", "bench-password")
        connection = await asyncpg.connect(**parse_database_url(app_url).connect_kwargs)
        figures: dict[str, list[tuple[float, float]]] = {name: [] for name in FORMS}
        for _ in range(rounds):  # interleaved: each round calls every form in turn
            for name, (sql, args) in FORMS.items():
                figures[name].append(await per_call(connection, sql, args, calls))
        await connection.close()
    finally:
        postgres.stop()
    return {
        name: (statistics.median(w for w, _ in runs), statistics.median(c for _, c in runs))
        for name, runs in figures.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    results = asyncio.run(measure(args.calls, args.rounds))
    print(f"{platform.processor() or platform.machine()}, Python {platform.python_version()}")
    for name, (wall, cpu) in results.items():
        print(f"{name:27s} wall {wall:6.1f} us/call   PostgreSQL CPU {cpu:5.1f} us/call")


if __name__ == "__main__":
    main()
