"""What a bench run reports: machine facts, the table on stdout, JSON, and the PNG chart."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from importlib.metadata import version
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def machine_facts() -> dict[str, Any]:
    """CPU, cores, memory, load, OS, Python and library versions, git commit."""
    facts: dict[str, Any] = {
        "cpu": _cpu_model(),
        "logical_cpus": os.cpu_count(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "load_average_at_start": load_average(),
    }
    try:
        import psutil

        facts["physical_cores"] = psutil.cpu_count(logical=False)
        facts["memory_gib"] = round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:
        pass
    facts["packages"] = {
        name: _version(name)
        for name in ("quoteapi", "fastapi", "starlette", "uvicorn", "sqlalchemy", "asyncpg")
    }
    facts["packages"]["pyjwt"] = _version("pyjwt")
    git = subprocess.run(  # noqa: S603 - a fixed command
        ["git", "-C", str(REPO), "describe", "--always", "--dirty"],  # noqa: S607
        capture_output=True,
        text=True,
        check=False,
    )
    facts["git"] = git.stdout.strip() or None
    return facts


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _version(name: str) -> str | None:
    try:
        return version(name)
    except Exception:
        return None


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _ratio(service: dict[str, Any] | None, baseline: dict[str, Any] | None) -> str:
    if not service or not baseline or not baseline["rps"]:
        return "-"
    return f"{service['rps'] / baseline['rps']:.2f}"


def print_report(results: dict[str, Any]) -> None:
    """The human summary: machine facts, the headline table, sweep, memory, RLS, users."""
    m = results["machine"]
    s = results["settings"]
    print()
    print(f"command:   {results['command']}")
    print(
        f"machine:   {m['cpu']}, {m['logical_cpus']} logical CPUs"
        + (f" ({m['physical_cores']} cores)" if m.get("physical_cores") else "")
        + (f", {m['memory_gib']} GiB" if m.get("memory_gib") else "")
    )
    print(
        f"software:  {m['os']}; Python {m['python']}; PostgreSQL {m.get('postgresql')} "
        f"(embedded, {'durable' if s['durable'] else 'fsync off'}); {m.get('wrk')}; "
        f"git {m.get('git')}"
    )
    print(
        f"load avg:  {m.get('load_average_at_start')} at start, "
        f"{m.get('load_average_at_end')} at end (other work on the machine skews the figures)"
    )
    print(
        f"settings:  {s['workers']} worker(s), {s['users']:,} users ({s['users'] // 2:,} with a "
        f"quote), {s['duration_s']} s a run, {s['connections']} connections, "
        f"{s['wrk_threads']} wrk threads, DB pool {s['pool_size']}/worker"
    )
    print(
        f"tokens:    reuse = {s['pool_users']:,} users' tokens in turn (the frontend: one token "
        f"per user, cached); fresh = {s['fresh_tokens']:,} distinct tokens (every request a "
        "verification-cache miss)"
    )
    print()
    header = (
        f"{'scenario':<16}{'tokens':<7}| {'service rps':>11} {'p50 ms':>7} {'p99 ms':>7} "
        f"| {'raw rps':>8} {'raw+gc':>8} {'tutorial':>8} {'bare rps':>8} "
        f"| {'svc/raw':>7} {'svc/raw+gc':>10} {'svc/tut':>7} {'svc/bare':>8}"
    )
    print(header)
    print("-" * len(header))
    for row in results["scenarios"]:
        svc = row["service"]
        others = [row.get(name) or {} for name in ("raw", "raw_gc", "tutorial", "bare")]
        flag = "  !" if row["unexpected"] else ""
        print(
            f"{row['label']:<16}{row['tokens']:<7}| {_fmt(svc['rps']):>11} "
            f"{_fmt(svc['p50_ms'], 2):>7} {_fmt(svc['p99_ms'], 2):>7} | "
            + " ".join(f"{_fmt(other.get('rps')):>8}" for other in others)
            + f" | {_ratio(svc, others[0]):>7} {_ratio(svc, others[1]):>10} "
            f"{_ratio(svc, others[2]):>7} {_ratio(svc, others[3]):>8}{flag}"
        )
    print(
        "raw = PyJWT on every request + raw asyncpg (no token cache: its reuse and fresh rows "
        "are one run); raw+gc = the same with the service's QUOTEAPI_GC_GEN0_THRESHOLD; "
        "tutorial = PyJWT + SQLModel AsyncSession.get in one dependency; bare = FastAPI "
        "returning a JSON dict (one run per method)."
    )
    unexpected = [r for r in results["scenarios"] if r["unexpected"]]
    for row in unexpected:
        print(f"  ! {row['label']} {row['tokens']}: unexpected answers {row['unexpected']}")
    _print_cpu(results["scenarios"])

    sweep = results.get("sweep")
    if sweep and sweep["points"]:
        points0 = sweep["points"][0]
        print()
        print(f"concurrency sweep ({sweep['scenario']}, {sweep['duration_s']} s a point):")
        names = [n for n in ("service", "raw", "raw_gc", "tutorial", "bare") if n in points0]
        print(
            f"{'connections':>11} | "
            + " | ".join(f"{n + ' rps':>12} {'p50':>6} {'p99':>6}" for n in names)
        )
        for point in sweep["points"]:
            print(
                f"{point['connections']:>11} | "
                + " | ".join(
                    f"{_fmt(point[n]['rps']):>12} {_fmt(point[n]['p50_ms'], 2):>6} "
                    f"{_fmt(point[n]['p99_ms'], 2):>6}"
                    for n in names
                )
            )

    memory = results.get("memory")
    if memory:
        print()
        print("worker memory (RSS, MiB):")
        for sample in memory["samples"]:
            rss = ", ".join(f"{x:.1f}" for x in sample["service_worker_rss_mib"])
            print(f"  service after {sample['requests']:>10,} requests: {rss}")
        if memory.get("baselines_rss_mib"):
            print(
                "  baselines at the end: "
                + ", ".join(
                    f"{name} {', '.join(f'{x:.1f}' for x in rss)}"
                    for name, rss in memory["baselines_rss_mib"].items()
                )
            )
        if memory.get("note"):
            print(f"  ({memory['note']})")

    rls = results.get("rls")
    if rls:
        print()
        if rls.get("skipped") or rls.get("error"):
            print(f"row-level security: {rls.get('skipped') or 'failed: ' + rls['error']}")
        else:
            on, off = rls["app_role_rls_on"], rls["superuser_rls_off"]
            print(f"row-level security ({rls['scenario']}, {rls['connections']} connections):")
            print(
                f"  app role, RLS on:    {_fmt(on['rps'])} rps, p50 {_fmt(on['p50_ms'], 2)} ms, "
                f"p99 {_fmt(on['p99_ms'], 2)} ms"
            )
            print(
                f"  superuser, RLS off:  {_fmt(off['rps'])} rps, p50 {_fmt(off['p50_ms'], 2)} ms,"
                f" p99 {_fmt(off['p99_ms'], 2)} ms"
            )
            if off["rps"]:
                print(f"  throughput with RLS: {(on['rps'] / off['rps'] - 1) * 100:+.1f}%")

    users = results.get("users_compare")
    if isinstance(users, dict):
        print(f"\nusers compare failed: {users['error']}")
    elif users:
        print()
        print(f"users ({users[0]['scenario']}, {users[0]['connections']} connections):")
        for entry in users:
            rss = ", ".join(f"{x:.1f}" for x in entry["service_worker_rss_mib"])
            print(
                f"  {entry['users']:>10,} users: {_fmt(entry['result']['rps'])} rps, "
                f"p99 {_fmt(entry['result']['p99_ms'], 2)} ms, table "
                f"{entry['table_mib']:.1f} MiB, worker RSS {rss} MiB"
            )
    print()


def _print_cpu(rows: list[dict[str, Any]]) -> None:
    """CPU time per request of each target's server and of PostgreSQL, in the same runs."""
    names = (("service", "service"), ("raw", "raw"), ("raw_gc", "raw+gc"), ("tutorial", "tutorial"))
    print()
    print("CPU per request, us: the server's processes / PostgreSQL's")
    print(f"{'scenario':<16}{'tokens':<7}| " + " ".join(f"{label:>15}" for _, label in names))
    for row in rows:
        cells = []
        for key, _ in names:
            cpu = (row.get(key) or {}).get("cpu_us_per_request") or {}
            server, postgres = cpu.get("server"), cpu.get("postgres")
            cells.append(f"{_fmt(server, 0)} / {_fmt(postgres, 0)}" if server else "-")
        print(f"{row['label']:<16}{row['tokens']:<7}| " + " ".join(f"{c:>15}" for c in cells))


def write_json(results: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".json.tmp")
    partial.write_text(json.dumps(results, indent=2) + "\n")
    partial.replace(path)


def write_chart(results: dict[str, Any], path: Path) -> str | None:
    """The PNG: throughput and p99 against concurrency, and the headline rows; returns a note
    instead when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "no chart: matplotlib is missing (pip install -c requirements.lock -e '.[bench]')"

    targets = (
        ("service", "quoteapi"),
        ("raw", "raw baseline"),
        ("raw_gc", "raw + GC setting"),
        ("tutorial", "tutorial style"),
        ("bare", "bare FastAPI"),
    )
    figure = plt.figure(figsize=(13, 9), constrained_layout=True)
    grid = figure.add_gridspec(2, 2)
    throughput, p99 = figure.add_subplot(grid[0, 0]), figure.add_subplot(grid[0, 1])
    headline = figure.add_subplot(grid[1, :])
    points = results["sweep"]["points"] if results.get("sweep") else []
    # The headline GET-hit row: a star at its own concurrency (a separate, longer run).
    star = next(
        (r for r in results["scenarios"] if (r["scenario"], r["tokens"]) == ("get-hit", "reuse")),
        None,
    )
    for n, (key, label) in enumerate(targets):
        color = f"C{n}"
        xs = [p["connections"] for p in points if p.get(key)]
        throughput.plot(
            xs, [p[key]["rps"] for p in points if p.get(key)], marker="o", color=color, label=label
        )
        p99.plot(
            xs,
            [p[key]["p99_ms"] for p in points if p.get(key)],
            marker="o",
            color=color,
            label=label,
        )
        if star and star.get(key):
            headline_label = "headline run" if n == 0 else None
            throughput.plot(
                star["connections"], star[key]["rps"], "*", ms=12, color=color, label=headline_label
            )
            p99.plot(
                star["connections"],
                star[key]["p99_ms"],
                "*",
                ms=12,
                color=color,
                label=headline_label,
            )
    ticks = sorted({p["connections"] for p in points} | ({star["connections"]} if star else set()))
    for axis, title, unit in (
        (throughput, "throughput", "requests/s"),
        (p99, "p99 latency", "ms (log)"),
    ):
        axis.set_xscale("log", base=2)
        axis.set_xticks(ticks)
        axis.set_xticklabels([str(t) for t in ticks])
        axis.set_xlabel("connections")
        axis.set_ylabel(unit)
        scenario = "GET hit, reused tokens"
        axis.set_title(f"{title}: {scenario}")
        axis.grid(True, alpha=0.3)
        axis.legend()
    p99.set_yscale("log")

    rows = results["scenarios"]
    width = 0.27
    for i, (key, label) in enumerate(targets):
        headline.bar(
            [n + (i - 1) * width for n in range(len(rows))],
            [row[key]["rps"] if row.get(key) else 0 for row in rows],
            width,
            label=label,
        )
    headline.set_xticks(range(len(rows)))
    headline.set_xticklabels([f"{row['label']}\n{row['tokens']}" for row in rows])
    headline.set_ylabel("requests/s")
    s = results["settings"]
    headline.set_title(
        f"headline at {s['connections']} connections, {s['workers']} worker(s), "
        f"{s['users']:,} users"
    )
    headline.grid(True, axis="y", alpha=0.3)
    headline.legend()
    m = results["machine"]
    figure.suptitle(
        f"quoteapi bench, {m['cpu']}, {m['logical_cpus']} CPUs, git {m.get('git')}", fontsize=10
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return None
