"""Cold start as a scaled-to-zero container sees it: exec to the first authenticated answer.

    .venv/bin/python bench/coldstart.py [--rounds 7] [--no-node]

In one run, rounds interleaved (floor, serve, node, floor, serve, node, ...) after one
untimed warm-up round, on one embedded PostgreSQL and one token:

- floor: a fresh `python -c 'import <the stack>'` (FLOOR_MODULES): exec to exit, and its RSS
  after the imports. No service written on this stack can start faster or smaller.
- serve: the installed `quoteapi serve` with DATABASE_URL and CLERK_JWT_KEY, as deployed: exec
  to the first answer (200 or 404) of an authenticated `GET /me/message`, a connection tried
  every POLL_SECONDS; its RSS right after that answer.
- node: the seed's Node stack (../shared/nodepeer, installed once into bench/.cache) the same way.

Each start also gives the process's CPU seconds (user + system) at that moment: on a shared
machine the figure its load does not move. Output: medians and ranges of the three, with the
ratios serve/floor and serve/node, on stdout and in bench/results/coldstart.json.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import shlex
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

# The repository root, for the helpers the bench shares with the tests (tests/support/).
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))

import database
import psutil
import report
import tokens

from tests.support.processes import clean_env, free_port, spawn, stop_process

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results" / "coldstart.json"
NODE_PEER = BENCH.parents[1] / "shared" / "nodepeer"
DATABASE_NAME = "quoteapi_coldstart"
# The card's stack, as a service on it imports it before it can answer.
FLOOR_MODULES = (
    "fastapi",
    "sqlmodel",
    "sqlalchemy.ext.asyncio",
    "asyncpg",
    "jwt",
    "cryptography.hazmat.primitives.asymmetric.rsa",
    "httpx",
    "uvicorn",
    "uvicorn.protocols.http.httptools_impl",
    "uvloop",
    "pydantic_settings",
)
# Resident memory read by the process itself once its imports are done (Linux's statm).
_FLOOR_CODE = (
    f"import {', '.join(FLOOR_MODULES)}, os; "
    "t = os.times(); "
    "print(int(open('/proc/self/statm').read().split()[1]) * os.sysconf('SC_PAGE_SIZE'), "
    "t.user + t.system)"
)
POLL_SECONDS = 0.005
MEASURES = ("seconds", "rss_mib", "cpu_seconds")
START_WITHIN = 60.0


# What one start gives: wall seconds, RSS bytes, CPU seconds (user + system) of the process.
Sample = tuple[float, int, float]


class Target:
    """One way of starting, and what each of its timed starts gave."""

    def __init__(self, name: str, measure: Callable[[], Sample]) -> None:
        self.name = name
        self.measure = measure
        self.samples: list[Sample] = []


def floor(workdir: Path) -> Sample:
    started = time.perf_counter()
    done = subprocess.run(  # noqa: S603 - our own interpreter, fixed code
        [sys.executable, "-c", _FLOOR_CODE],
        cwd=workdir,
        env=clean_env(),
        capture_output=True,
        text=True,
        check=True,
    )
    rss, cpu = done.stdout.split()[-2:]
    return time.perf_counter() - started, int(rss), float(cpu)


def first_answer(
    argv: Sequence[str], env: dict[str, str], port: int, token: str, log: Path
) -> Sample:
    """Exec `argv`, poll 127.0.0.1:`port` until GET /me/message answers 200 or 404; the seconds
    that took, and the process's RSS and CPU time right after the answer."""
    request = (
        f"GET /me/message HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Authorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    ).encode()
    started = time.perf_counter()
    process = spawn(argv, cwd=log.parent, env=env, log=log)
    try:
        while True:
            status = _ask(port, request)
            elapsed = time.perf_counter() - started
            if status in (200, 404):
                measured = psutil.Process(process.pid)
                cpu = measured.cpu_times()
                return elapsed, measured.memory_info().rss, cpu.user + cpu.system
            if process.poll() is not None or elapsed > START_WITHIN:
                raise RuntimeError(
                    f"{argv[0]} did not answer 200 or 404 (last: {status}):\n"
                    + log.read_text(errors="replace")[-3000:]
                )
            time.sleep(POLL_SECONDS)
    finally:
        stop_process(process, within=15)


def _ask(port: int, request: bytes) -> int | None:
    """The status of one request, None while nothing listens."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(request)
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
    except (ConnectionRefusedError, ConnectionResetError):
        return None
    parts = answer.split(b" ", 2)
    return int(parts[1]) if len(parts) > 1 else None


def node_peer(source: Path) -> Path:
    """The Node peer installed from its lock file into bench/.cache (its source is read-only)."""
    lock = hashlib.sha256((source / "package-lock.json").read_bytes()).hexdigest()[:12]
    peer = BENCH / ".cache" / f"nodepeer-{lock}"
    if not (peer / "node_modules").is_dir():
        shutil.copytree(source, peer, dirs_exist_ok=True)
        npm = ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"]
        subprocess.run(npm, cwd=peer, check=True)  # noqa: S603 - a fixed command
    return peer


def targets(args: argparse.Namespace, workdir: Path, url: str, token: str) -> list[Target]:
    pem = tokens.public_pem(tokens.load_key())
    quoteapi = str(Path(sys.executable).with_name("quoteapi"))
    service_env = {
        **clean_env(),
        "DATABASE_URL": url,
        "CLERK_JWT_KEY": pem,
        "CLERK_ISSUER": tokens.ISSUER,
        "CLERK_AUTHORIZED_PARTIES": tokens.AZP,
    }

    def serve() -> Sample:
        port = free_port()
        argv = [quoteapi, "serve", "--port", str(port)]
        return first_answer(argv, service_env, port, token, workdir / "serve.log")

    found = [Target("floor", lambda: floor(workdir)), Target("serve", serve)]
    if args.node:
        node, npm = shutil.which("node"), shutil.which("npm")
        if node is None or npm is None or not args.node_peer.is_dir():
            print(f"coldstart: no Node peer (node, npm or {args.node_peer} missing)", flush=True)
        else:
            peer = node_peer(args.node_peer)
            node_env = {
                **clean_env(),
                "REF_DSN": url,
                "PEER_JWT_KEY": pem,
                "CLERK_AUTHORIZED_PARTIES": tokens.AZP,
            }

            def peer_start() -> Sample:
                port = free_port()
                argv = [node, str(peer / "server.mjs")]
                env = {**node_env, "PORT": str(port)}
                return first_answer(argv, env, port, token, workdir / "node.log")

            found.append(Target("node", peer_start))
    return found


def summary(values: Sequence[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def run(args: argparse.Namespace, workdir: Path, stack: ExitStack) -> dict[str, Any]:
    from quoteapi.dev.embedded import EmbeddedPostgres

    machine = report.machine_facts()
    embedded = EmbeddedPostgres(workdir / "postgres", durable=False)
    stack.callback(embedded.stop)
    users = database.Users.split(1000)
    url = asyncio.run(database.prepare(embedded.start(), DATABASE_NAME, users))
    machine["postgresql"] = asyncio.run(database.facts(url))["version"]
    token = tokens.token_file(tokens.load_key(), "coldstart", users.hit, 1).read_text().strip()
    every = targets(args, workdir, url, token)
    for round_number in range(-args.warmup, args.rounds):
        for target in every:
            sample = target.measure()
            if round_number >= 0:  # the warm-up rounds fill the page cache, for all alike
                target.samples.append(sample)
        if round_number >= 0:
            print(f"coldstart: round {round_number + 1}/{args.rounds} done", flush=True)
    machine["load_average_at_end"] = report.load_average()
    results: dict[str, Any] = {
        "command": shlex.join([sys.executable, *sys.argv]),
        "machine": machine,
        "rounds": args.rounds,
        "floor_modules": list(FLOOR_MODULES),
        "targets": {t.name: figures(t.samples) for t in every},
    }
    found = results["targets"]
    results["ratios"] = {
        f"serve/{other} {measure}": round(
            found["serve"][measure]["median"] / found[other][measure]["median"], 2
        )
        for other in ("floor", "node")
        if other in found
        for measure in MEASURES
    }
    return results


def figures(samples: list[Sample]) -> dict[str, Any]:
    each = {
        "seconds": [round(s, 4) for s, _, _ in samples],
        "rss_mib": [round(rss / 2**20, 1) for _, rss, _ in samples],
        "cpu_seconds": [round(cpu, 3) for _, _, cpu in samples],
    }
    return {measure: {**summary(values), "each": values} for measure, values in each.items()}


def print_table(results: dict[str, Any]) -> None:
    machine = results["machine"]
    print(
        f"\ncold start, median (min-max) of {results['rounds']} interleaved rounds: exec to the "
        "first authenticated answer (floor: exec to exit), and the process's RSS and CPU then\n"
    )
    print("| | seconds | RSS MiB | CPU seconds |\n|---|---|---|---|")
    for name, found in results["targets"].items():
        cells = [
            f"{f['median']:.{digits}f} ({f['min']:.{digits}f}-{f['max']:.{digits}f})"
            for f, digits in zip((found[m] for m in MEASURES), (3, 1, 2), strict=True)
        ]
        print(f"| {name} | {' | '.join(cells)} |")
    print()
    for other in ("floor", "node"):
        ratios = [results["ratios"].get(f"serve/{other} {m}") for m in MEASURES]
        if ratios[0] is not None:
            print(f"| serve/{other} | {' | '.join(f'{r:.2f}' for r in ratios)} |")
    print(
        f"\nmachine: {machine['cpu']}, {machine['logical_cpus']} logical CPUs, "
        f"{machine.get('memory_gib')} GiB, Python {machine['python']}, PostgreSQL "
        f"{machine['postgresql']}, git {machine['git']}; load average "
        f"{machine['load_average_at_start']} at start, {machine['load_average_at_end']} at end"
    )
    print(f"command: {results['command']}")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7, help="timed rounds (default 7)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first (default 1)")
    parser.add_argument(
        "--node", action=argparse.BooleanOptionalAction, default=True, help="the Node peer too"
    )
    parser.add_argument(
        "--node-peer", type=Path, default=NODE_PEER, help=f"its source (default {NODE_PEER})"
    )
    parser.add_argument("--output", type=Path, default=RESULTS, help="results JSON")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.warmup < 0:
        parser.error("--rounds must be at least 1 and --warmup at least 0")
    return args


def main() -> None:
    args = parse_args()
    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="coldstart-")))
        results = run(args, workdir, stack)
    print_table(results)
    report.write_json(results, args.output)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
