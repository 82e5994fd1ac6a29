"""quoteapi under load, beside four baselines, on this machine: one command.

    .venv/bin/python bench/run.py [--workers 1] [--users 100000] [--duration 10] [--quick]
                                  [--soak] [--users-compare 1000,1000000]

It starts an embedded PostgreSQL, migrates and seeds a database (half the users have a quote),
mints Clerk-shaped tokens with a bench RSA key, and starts five servers with the same uvicorn
flags: the real service (`quoteapi serve`, verifying with CLERK_JWT_KEY), a hand-written raw
baseline (PyJWT + asyncpg) as it is and with the service's GC setting, a tutorial-style one
(PyJWT + SQLModel AsyncSession.get) and a bare FastAPI one (bench/baselines.py). wrk
(bench/load.lua) then drives GET hit, GET miss, PUT and a 90/10 read/write mix, each with tokens
reused per user (the frontend pattern) and with a new token on every request (verification-cache
misses); a concurrency sweep; worker memory after 200,000 requests (2,000,000 with --soak); the
cost of row-level security when the service has it; and optionally 1,000 vs 1,000,000 users.

Output: a table on stdout, bench/results/latest.json and bench/results/latest.png.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

# The repository root, for the helpers the bench shares with the tests (tests/support/).
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))

import asyncpg
import database
import loadgen
import report
import tokens

from quoteapi.dev.databases import drop_database
from quoteapi.settings import Settings
from tests.support.processes import answers_200, clean_env, free_port, spawn, wait_ready

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results" / "latest.json"
DATABASE_NAME = "quoteapi_bench"
TOKEN_CACHE_SIZE = Settings.model_fields["clerk_token_cache_size"].default
POOL_SIZE = Settings.model_fields["database_pool_size"].default
GC_THRESHOLD = Settings.model_fields["quoteapi_gc_gen0_threshold"].default
# The yardsticks driven once per scenario with reused tokens (they cache nothing): raw as it is,
# raw with the service's GC setting, and the tutorial style.
PER_SCENARIO_BASELINES = ("raw", "raw_gc", "tutorial")
RLS_SETTING = "database_row_level_security"
MEMORY_MILESTONES = (200_000, 2_000_000)


@dataclass(frozen=True)
class Scenario:
    key: str
    label: str
    mode: str  # load.lua's MODE: get | put | mix
    users: str  # whose tokens: "hit" (has a quote) or "miss" (has none)
    expect: int  # the status the service and the raw baseline answer


SCENARIOS = (
    Scenario("get-hit", "GET hit", "get", "hit", 200),
    Scenario("get-miss", "GET miss (404)", "get", "miss", 404),
    Scenario("put", "PUT", "put", "hit", 200),
    Scenario("mix", "90/10 GET/PUT", "mix", "hit", 200),
)
TOKEN_KINDS = ("reuse", "fresh")


# --- servers ----------------------------------------------------------------------------------


@dataclass
class Server:
    """One HTTP server process under test, and how many requests have been driven at it."""

    name: str
    process: subprocess.Popen[bytes]
    base_url: str
    log: Path
    served: int = 0
    offsets: dict[Path, int] = field(default_factory=dict)

    def worker_rss_mib(self) -> list[float]:
        """Resident memory of each uvicorn worker (the process itself with one worker)."""
        import psutil

        parent = psutil.Process(self.process.pid)
        workers = [
            child
            for child in parent.children(recursive=True)
            if "spawn_main" in " ".join(child.cmdline())
        ]
        return [round(p.memory_info().rss / 2**20, 1) for p in workers or [parent]]

    def cpu_seconds(self) -> float:
        """User and system CPU time of the server and its workers so far."""
        import psutil

        return _cpu_seconds(psutil.Process(self.process.pid))

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


def start_server(name: str, argv: list[str], env: dict[str, str], workdir: Path) -> Server:
    """Start `argv` (which must take `--port`) and wait until GET /healthz answers 200."""
    port = free_port()
    log = workdir / f"{name}.log"
    process = spawn(
        [*argv, "--port", str(port)],
        cwd=workdir,  # no developer .env is read from here
        env=env,
        log=log,
        start_new_session=True,  # Ctrl-C reaches the harness, which stops it
    )
    server = Server(name, process, f"http://127.0.0.1:{port}", log)
    try:
        wait_ready(
            process,
            lambda: answers_200(f"{server.base_url}/healthz"),
            within=60,
            what=f"{name} answering GET /healthz",
            log=log,
        )
    except RuntimeError:
        server.stop()
        raise
    return server


def _cpu_seconds(root: Any) -> float:
    """CPU time (user + system) of the psutil process `root` and its live descendants."""
    import psutil

    total = 0.0
    for process in (root, *root.children(recursive=True)):
        try:
            times = process.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def _tail(path: Path, lines: int = 30) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


# --- the run ----------------------------------------------------------------------------------


class Bench:
    """Everything one invocation sets up, drives and measures."""

    def __init__(self, args: argparse.Namespace, workdir: Path, stack: ExitStack) -> None:
        self.args = args
        self.workdir = workdir
        self.stack = stack  # stops every server and the database, however the run ends
        self.wrk = loadgen.find_wrk()
        self.key = tokens.load_key()
        self.users = database.Users.split(args.users)
        self.service_env_extra = dict(item.split("=", 1) for item in args.service_env)
        self.pool_size = int(self.service_env_extra.get("DATABASE_POOL_SIZE", POOL_SIZE))
        self.runs = 0
        self.postgres: Any = None  # the postmaster (psutil), once the database runs

    # -- load ---------------------------------------------------------------------------------

    def drive(
        self,
        server: Server,
        mode: str,
        token_file: Path,
        connections: int,
        duration: int,
        *,
        note: str = "",
    ) -> loadgen.Result:
        """One wrk run against `server`, continuing through `token_file` where the last run
        against it stopped (so a fresh token is never one the server has cached)."""
        offset = server.offsets.get(token_file, 0)
        cpu_before = self.cpu_seconds(server)
        result = loadgen.run(
            self.wrk,
            f"{server.base_url}/me/message",
            tokens=token_file,
            mode=mode,
            connections=connections,
            duration=duration,
            threads=self.args.wrk_threads,
            offset=offset,
        )
        cpu = {
            part: round((after - cpu_before[part]) * 1e6 / result.requests, 1)
            for part, after in self.cpu_seconds(server).items()
            if result.requests
        }
        result = replace(result, cpu_us_per_request=cpu)
        server.offsets[token_file] = offset + result.requests
        server.served += result.requests
        self.runs += 1
        kind = "reuse" if "-pool-" in token_file.name else "fresh"
        print(
            f"bench: {server.name:<13} {mode:<4} {kind:<6} c={connections:<4} "
            f"{result.rps:>9,.0f} rps  p50 {result.p50_ms} ms  p99 {result.p99_ms} ms  "
            f"{result.statuses}  cpu/request: server {cpu.get('server', 0):,.0f} us, "
            f"postgres {cpu.get('postgres', 0):,.0f} us{note}",
            flush=True,
        )
        return result

    def cpu_seconds(self, server: Server) -> dict[str, float]:
        """CPU time so far of `server` and of PostgreSQL: per request, it tells where the time
        of a run went (the worker's code, or the database's), which throughput alone cannot."""
        used = {"server": server.cpu_seconds()}
        if self.postgres is not None:
            used["postgres"] = _cpu_seconds(self.postgres)
        return used

    def check_contract(self, server: Server, files: dict[tuple[str, str], Path]) -> None:
        """One request of each kind, before any load: the answers the scenarios expect."""
        bare = server.name.startswith("bare")
        hit = files["reuse", "hit"].read_text().split("\n", 1)[0]
        miss = files["reuse", "miss"].read_text().split("\n", 1)[0]
        cases = [
            ("GET", hit, None, 200),
            ("GET", miss, None, 200 if bare else 404),
            ("PUT", hit, b'{"message": "Checked before the load."}', 200),
        ]
        for method, token, body, expected in cases:
            request = urllib.request.Request(  # noqa: S310 - loopback http
                f"{server.base_url}/me/message",
                data=body,
                method=method,
                headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
            )
            try:
                with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
                    status, text = response.status, response.read()
            except urllib.error.HTTPError as exc:
                status, text = exc.code, exc.read()
            if status != expected:
                raise RuntimeError(
                    f"{server.name}: {method} /me/message answered {status}, expected "
                    f"{expected}: {text[:300]!r}\n{_tail(server.log, 10)}"
                )

    # -- servers ------------------------------------------------------------------------------

    def service_env(self, database_url: str, **extra: str) -> dict[str, str]:
        """This process's environment without any quoteapi setting (`clean_env`, the tests'
        rule), plus the bench's settings and --service-env."""
        return {
            **clean_env(),
            "DATABASE_URL": database_url,
            "CLERK_JWT_KEY": tokens.public_pem(self.key),
            "CLERK_ISSUER": tokens.ISSUER,
            "CLERK_AUTHORIZED_PARTIES": tokens.AZP,
            **self.service_env_extra,
            **extra,
        }

    def start_service(self, name: str, database_url: str, **extra: str) -> Server:
        argv = [sys.executable, "-m", "quoteapi", "serve", "--workers", str(self.args.workers)]
        env = self.service_env(database_url, **extra)
        return self._started(start_server(name, argv, env, self.workdir))

    def start_baseline(
        self, kind: str, database_url: str, *, name: str | None = None, gc_threshold: int = 0
    ) -> Server:
        env = {
            **clean_env(),
            "BENCH_DATABASE_URL": database_url,
            "BENCH_JWT_KEY": tokens.public_pem(self.key),
            "BENCH_ISSUER": tokens.ISSUER,
            "BENCH_AZP": tokens.AZP,
            "BENCH_POOL_SIZE": str(self.pool_size),
            "BENCH_GC_GEN0_THRESHOLD": str(gc_threshold),
        }
        argv = [sys.executable, str(BENCH / "baselines.py"), kind]
        argv += ["--workers", str(self.args.workers)]
        return self._started(start_server(name or kind, argv, env, self.workdir))

    def _started(self, server: Server) -> Server:
        self.stack.callback(server.stop)
        return server

    def warm(self, server: Server, files: dict[tuple[str, str], Path]) -> None:
        """Open the pools and fill the token cache before anything is measured."""
        if self.args.warmup:
            self.drive(
                server,
                "get",
                files["reuse", "hit"],
                self.args.connections,
                self.args.warmup,
                note="  (warm-up)",
            )

    # -- phases -------------------------------------------------------------------------------

    def token_files(self, users: database.Users) -> dict[tuple[str, str], Path]:
        pool = self.args.pool_users
        fresh = self.args.fresh_tokens // 2
        if fresh <= TOKEN_CACHE_SIZE:
            print(
                f"bench: note: {fresh:,} fresh tokens per file do not exceed the service's "
                f"token cache ({TOKEN_CACHE_SIZE:,}): the 'fresh' rows are partly cache hits",
                flush=True,
            )
        return {
            ("reuse", "hit"): tokens.token_file(
                self.key, "pool-hit", users.hit, min(pool, len(users.hit))
            ),
            ("reuse", "miss"): tokens.token_file(
                self.key, "pool-miss", users.miss, min(pool, len(users.miss))
            ),
            ("fresh", "hit"): tokens.token_file(self.key, "fresh-hit", users.hit, fresh),
            ("fresh", "miss"): tokens.token_file(self.key, "fresh-miss", users.miss, fresh),
        }

    def headline(
        self,
        service: Server,
        baselines: dict[str, Server],
        files: dict[tuple[str, str], Path],
    ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """Every scenario at --connections: the service with both token kinds, each of
        PER_SCENARIO_BASELINES once per scenario, the bare one once per method."""
        c, d = self.args.connections, self.args.duration
        rows: list[dict[str, Any]] = []
        runs: dict[str, dict[str, loadgen.Result]] = {name: {} for name in baselines}
        for scenario in SCENARIOS:
            service_runs = {
                kind: self.drive(service, scenario.mode, files[kind, scenario.users], c, d)
                for kind in TOKEN_KINDS
            }
            for name in PER_SCENARIO_BASELINES:
                runs[name][scenario.key] = self.drive(
                    baselines[name], scenario.mode, files["reuse", scenario.users], c, d
                )
            if scenario.mode not in runs["bare"]:
                runs["bare"][scenario.mode] = self.drive(
                    baselines["bare"], scenario.mode, files["reuse", "hit"], c, d
                )
            these = {name: runs[name][scenario.key] for name in PER_SCENARIO_BASELINES}
            these["bare"] = runs["bare"][scenario.mode]
            for kind, run in service_runs.items():
                unexpected = {
                    name: count
                    for name, count in (
                        ("service", run.unexpected(scenario.expect)),
                        *(
                            (name, these[name].unexpected(scenario.expect))
                            for name in PER_SCENARIO_BASELINES
                        ),
                        ("bare", these["bare"].unexpected(200)),
                    )
                    if count
                }
                row: dict[str, Any] = {
                    "scenario": scenario.key,
                    "label": scenario.label,
                    "tokens": kind,
                    "connections": c,
                    "expected_status": scenario.expect,
                    "service": run.as_dict(),
                }
                for name, baseline in these.items():
                    row[name] = baseline.as_dict()
                    row[f"service_vs_{name}"] = (
                        round(run.rps / baseline.rps, 3) if baseline.rps else None
                    )
                row["unexpected"] = unexpected
                rows.append(row)
        return rows, {
            name: {key: run.as_dict() for key, run in by_key.items()}
            for name, by_key in runs.items()
        }

    def sweep(
        self, targets: Sequence[Server], files: dict[tuple[str, str], Path]
    ) -> dict[str, Any]:
        """GET hit with reused tokens at each --sweep concurrency, for every target."""
        points = []
        for connections in self.args.sweep:
            point: dict[str, Any] = {"connections": connections}
            for server in targets:
                point[server.name] = self.drive(
                    server, "get", files["reuse", "hit"], connections, self.args.sweep_duration
                ).as_dict()
            points.append(point)
        return {
            "scenario": "GET hit, reused tokens",
            "duration_s": self.args.sweep_duration,
            "points": points,
        }

    def memory(
        self,
        service: Server,
        baselines: Sequence[Server],
        files: dict[tuple[str, str], Path],
        samples: list[dict[str, Any]],
    ) -> dict[str, Any]:
        """Worker RSS once the service has served 200,000 requests (and 2,000,000 with
        --soak), topping up with the 90/10 mix on fresh tokens (so the token cache fills).
        Without --soak the top-up stops after --memory-seconds, and says so."""
        milestones = MEMORY_MILESTONES if self.args.soak else MEMORY_MILESTONES[:1]
        budget = math.inf if self.args.soak else self.args.memory_seconds
        deadline = time.monotonic() + budget
        note = None
        if budget <= 0:
            milestones, note = (), "no top-up to 200,000 requests (--memory-seconds 0, or --quick)"
        rate = 1000.0
        for milestone in milestones:
            while service.served < milestone:
                left = deadline - time.monotonic()
                if left < 1:
                    note = (
                        f"stopped at {service.served:,} requests, short of {milestone:,}: the "
                        f"{budget:.0f} s top-up budget ran out (--memory-seconds; --soak: none)"
                    )
                    break
                wanted = math.ceil((milestone - service.served) / rate)
                seconds = int(max(1, min(60, wanted, left)))
                run = self.drive(
                    service, "mix", files["fresh", "hit"], self.args.connections, seconds
                )
                rate = max(run.rps, 1.0)
            samples.append(self.rss_sample(service, f"after {service.served:,} requests"))
            if note:
                break
        return {
            "samples": samples,
            "baselines_rss_mib": {server.name: server.worker_rss_mib() for server in baselines},
            "note": note,
        }

    def rss_sample(self, service: Server, label: str) -> dict[str, Any]:
        return {
            "label": label,
            "requests": service.served,
            "service_worker_rss_mib": service.worker_rss_mib(),
        }

    def row_level_security(self, url: str, files: dict[tuple[str, str], Path]) -> dict[str, Any]:
        """GET hit (reused tokens) as a least-privilege role with row-level security, and as
        the superuser with it off; alternating rounds, so that drift hits both alike."""
        if RLS_SETTING not in Settings.model_fields:
            return {"skipped": "this quoteapi has no DATABASE_ROW_LEVEL_SECURITY setting yet"}
        table = asyncio.run(database.facts(url))
        app_url = asyncio.run(database.create_app_role(url))
        variable = RLS_SETTING.upper()
        on = self.start_service("service-rls", app_url, **{variable: "true"})
        off = self.start_service("service-norls", url, **{variable: "false"})
        rounds: dict[str, list[loadgen.Result]] = {"on": [], "off": []}
        for server in (on, off):
            self.check_contract(server, files)
            self.warm(server, files)
        seconds = max(1, self.args.duration // 2)
        for _ in range(2):
            for name, server in (("on", on), ("off", off)):
                rounds[name].append(
                    self.drive(server, "get", files["reuse", "hit"], self.args.connections, seconds)
                )
        on.stop()
        off.stop()
        return {
            "scenario": "GET hit, reused tokens",
            "connections": self.args.connections,
            "table_rls_enabled": table["rls_enabled"],
            "table_rls_forced": table["rls_forced"],
            "app_role_rls_on": _combine(rounds["on"]),
            "superuser_rls_off": _combine(rounds["off"]),
        }

    def users_compare(self, server_url: str) -> list[dict[str, Any]]:
        """GET hit (reused tokens) on databases of each --users-compare size, each with its
        own service: throughput, p99, table size and worker RSS."""
        entries = []
        for count in self.args.users_compare:
            users = database.Users.split(count)
            name = f"quoteapi_bench_users_{count}"
            started = time.perf_counter()
            url = asyncio.run(database.prepare(server_url, name, users))
            print(f"bench: seeded {count:,} users in {time.perf_counter() - started:.1f} s")
            pool = tokens.token_file(
                self.key, f"pool-hit-u{count}", users.hit, min(self.args.pool_users, len(users.hit))
            )
            files = {("reuse", "hit"): pool}
            service = self.start_service(f"service-u{count}", url)
            self.warm(service, files)
            result = self.drive(service, "get", pool, self.args.connections, self.args.duration)
            rss = service.worker_rss_mib()
            service.stop()
            table = asyncio.run(database.facts(url))
            asyncio.run(drop_database(server_url, name))
            entries.append(
                {
                    "users": count,
                    "scenario": "GET hit, reused tokens",
                    "connections": self.args.connections,
                    "result": result.as_dict(),
                    "service_worker_rss_mib": rss,
                    "table_mib": round(table["table_bytes"] / 2**20, 1),
                }
            )
        return entries

    # -- all of it ----------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        from quoteapi.dev.embedded import EmbeddedPostgres

        args = self.args
        machine = report.machine_facts()
        machine["wrk"] = loadgen.version(self.wrk)
        results: dict[str, Any] = {
            "command": shlex.join([sys.executable, *sys.argv]),
            "machine": machine,
        }
        embedded = EmbeddedPostgres(self.workdir / "postgres", durable=args.durable)
        self.stack.callback(embedded.stop)
        server_url = embedded.start()
        self.postgres = _postmaster(embedded.pgdata)
        started = time.perf_counter()
        url = asyncio.run(database.prepare(server_url, DATABASE_NAME, self.users))
        table = asyncio.run(database.facts(url))
        machine["postgresql"] = table["version"]
        print(
            f"bench: seeded {args.users:,} users ({table['rows']:,} quotes) in "
            f"{time.perf_counter() - started:.1f} s",
            flush=True,
        )
        files = self.token_files(self.users)
        results["settings"] = self.settings_record(files)

        service = self.start_service("service", url)
        baselines = {
            "raw": self.start_baseline("raw", url),
            "raw_gc": self.start_baseline("raw", url, name="raw_gc", gc_threshold=GC_THRESHOLD),
            "tutorial": self.start_baseline("tutorial", url),
            "bare": self.start_baseline("bare", url),
        }
        every = (service, *baselines.values())
        for server in every:
            self.check_contract(server, files)
            self.warm(server, files)
        samples = [self.rss_sample(service, "after start and warm-up")]

        results["scenarios"], results["baselines"] = self.headline(service, baselines, files)
        results["sweep"] = self.sweep(every, files)
        samples.append(self.rss_sample(service, "after the scenarios and the sweep"))
        results["memory"] = self.memory(service, tuple(baselines.values()), files, samples)
        for server in every:
            server.stop()

        # The optional lines: a failure is reported with the results, not instead of them.
        if args.rls:
            results["rls"] = _attempt("row-level security", self.row_level_security, url, files)
        else:
            results["rls"] = {"skipped": "--no-rls"}
        if args.users_compare:
            results["users_compare"] = _attempt("users compare", self.users_compare, server_url)
        machine["load_average_at_end"] = report.load_average()
        return results

    def settings_record(self, files: dict[tuple[str, str], Path]) -> dict[str, Any]:
        args = self.args
        inherited = clean_env()  # what the servers get from this process, settings removed
        return {
            "workers": args.workers,
            "users": args.users,
            "duration_s": args.duration,
            "connections": args.connections,
            "sweep": args.sweep,
            "wrk_threads": args.wrk_threads,
            "pool_users": min(args.pool_users, len(self.users.hit)),
            "fresh_tokens": args.fresh_tokens,
            "pool_size": self.pool_size,
            "durable": args.durable,
            "quick": args.quick,
            "soak": args.soak,
            "service_env": {
                k: v
                for k, v in self.service_env("postgresql://…").items()
                if k not in inherited and k != "CLERK_JWT_KEY"
            },
            "token_files": {f"{kind}-{users}": path.name for (kind, users), path in files.items()},
        }


def _postmaster(pgdata: Path) -> Any:
    """The running PostgreSQL's main process (psutil), from its postmaster.pid."""
    import psutil

    return psutil.Process(int((pgdata / "postmaster.pid").read_text().splitlines()[0]))


def _attempt(what: str, phase: Callable[..., Any], *args: Any) -> Any:
    try:
        return phase(*args)
    except (RuntimeError, OSError, asyncpg.PostgresError) as exc:
        print(f"bench: {what} failed: {exc}", file=sys.stderr, flush=True)
        return {"error": str(exc).splitlines()[0]}


def _combine(runs: Sequence[loadgen.Result]) -> dict[str, Any]:
    """Several rounds as one: total requests over total time; mean of the percentiles."""

    def mean(values: list[float | None]) -> float | None:
        present = [v for v in values if v is not None]
        return round(sum(present) / len(present), 3) if present else None

    requests = sum(r.requests for r in runs)
    seconds = sum(r.seconds for r in runs)
    statuses: dict[str, int] = {}
    for run in runs:
        for status, count in run.statuses.items():
            statuses[status] = statuses.get(status, 0) + count
    return {
        "rounds": len(runs),
        "requests": requests,
        "seconds": round(seconds, 3),
        "rps": round(requests / seconds, 1) if seconds else 0.0,
        "p50_ms": mean([r.p50_ms for r in runs]),
        "p99_ms": mean([r.p99_ms for r in runs]),
        "statuses": statuses,
        "round_rps": [r.rps for r in runs],
    }


# --- command line -----------------------------------------------------------------------------


def _counts(text: str) -> list[int]:
    return [int(part.replace("_", "").replace(",", "")) for part in text.split() if part]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 2)[2],
    )
    parser.add_argument("--workers", type=int, default=1, help="uvicorn workers (default 1)")
    parser.add_argument(
        "--users", type=int, help="seeded users, half with a quote (default 100,000; quick 10,000)"
    )
    parser.add_argument(
        "--duration", type=int, help="seconds per headline run (default 10; quick 2)"
    )
    parser.add_argument(
        "--connections", type=int, default=64, help="connections of the headline rows (64)"
    )
    parser.add_argument(
        "--sweep",
        default="1,8,32,128",
        help="connections of the concurrency sweep, comma-separated; 'none' to skip",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a one-minute smoke run: short runs, fewer users and tokens, no memory top-up",
    )
    parser.add_argument(
        "--soak", action="store_true", help="also read worker memory after 2,000,000 requests"
    )
    parser.add_argument(
        "--memory-seconds",
        type=float,
        help="at most this long topping up to 200,000 requests for the memory reading "
        "(default 120; quick 0); --soak has no limit",
    )
    parser.add_argument(
        "--users-compare",
        default="",
        help="also run GET hit on databases of these sizes, e.g. 1000,1000000",
    )
    parser.add_argument(
        "--rls",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="measure the cost of row-level security when the service has it (default on)",
    )
    parser.add_argument(
        "--pool-users",
        type=int,
        default=1000,
        help="users (one token each) in the reused-token scenarios (default 1000)",
    )
    parser.add_argument(
        "--fresh-tokens",
        type=int,
        help="distinct tokens minted for the fresh-token scenarios, half for users with a "
        "quote, half without (default 200,000; quick 24,000); cached in bench/.cache",
    )
    parser.add_argument(
        "--wrk-threads",
        type=int,
        default=min(2, os.cpu_count() or 1),
        help="wrk threads (default: 2, or 1 on one CPU)",
    )
    parser.add_argument(
        "--durable",
        action="store_true",
        help="PostgreSQL with fsync on (default off: the bench measures the app, not the disk)",
    )
    parser.add_argument(
        "--service-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra setting for the service (repeatable), e.g. DATABASE_POOL_SIZE=20",
    )
    parser.add_argument("--output", type=Path, default=RESULTS, help="results JSON (PNG beside it)")
    args = parser.parse_args(argv)
    if args.users is None:
        args.users = 10_000 if args.quick else 100_000
    if args.duration is None:
        args.duration = 2 if args.quick else 10
    if args.memory_seconds is None:
        args.memory_seconds = 0 if args.quick else 120
    if args.fresh_tokens is None:
        args.fresh_tokens = 24_000 if args.quick else 200_000
    args.sweep = (
        [] if args.sweep.strip().lower() == "none" else _counts(args.sweep.replace(",", " "))
    )
    args.users_compare = _counts(args.users_compare.replace(",", " "))
    args.sweep_duration = 1 if args.quick else max(1, args.duration // 2)
    args.warmup = 0 if args.quick else 2  # seconds; the contract check opens the pools
    for item in args.service_env:
        if "=" not in item:
            parser.error(f"--service-env {item!r}: expected NAME=VALUE")
    if args.users < 2 or args.duration < 1 or args.connections < 1 or args.fresh_tokens < 2:
        parser.error("--users and --fresh-tokens must be at least 2, --duration at least 1")
    return args


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # unwinds through the ExitStack, which stops every server


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        import psutil  # noqa: F401 - worker memory
    except ImportError:
        print(
            "bench: psutil is missing: .venv/bin/pip install -q -c requirements.lock "
            "-e '.[dev,bench]'",
            file=sys.stderr,
        )
        return 2
    try:
        with (
            tempfile.TemporaryDirectory(prefix="quoteapi-bench-") as workdir,
            ExitStack() as stack,
        ):
            results = Bench(args, Path(workdir), stack).run()
    except loadgen.WrkMissing as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bench: interrupted; everything it started is stopped", file=sys.stderr)
        return 130
    report.write_json(results, args.output)
    chart = args.output.with_suffix(".png")
    note = report.write_chart(results, chart)
    report.print_report(results)
    print(f"results: {args.output}")
    print(note or f"chart:   {chart}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
