"""wrk: find it (installing Debian's package when we are root), run it, read its result line."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

SCRIPT = Path(__file__).resolve().parent / "load.lua"
INSTALL_HINT = (
    "wrk is not installed. Install it with `sudo apt-get install wrk` (Debian/Ubuntu), "
    "`sudo dnf install wrk` (Fedora) or `brew install wrk` (macOS), then run this again."
)


class WrkMissing(RuntimeError):
    """wrk is not on PATH and could not be installed."""


def find_wrk(*, install: bool = True) -> str:
    """The path of wrk; as root on Debian/Ubuntu, `apt-get install -y wrk` first if needed."""
    found = shutil.which("wrk")
    if found is not None:
        return found
    apt = shutil.which("apt-get")
    if install and apt is not None and hasattr(os, "geteuid") and os.geteuid() == 0:
        print("bench: wrk is missing; installing Debian's package (we are root)", flush=True)
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}

        def apt_get(*args: str) -> None:
            subprocess.run([apt, *args], env=env, check=False, stdin=subprocess.DEVNULL)  # noqa: S603

        apt_get("install", "-y", "-qq", "wrk")
        if shutil.which("wrk") is None:  # the package lists may be missing or stale
            apt_get("update", "-qq")
            apt_get("install", "-y", "-qq", "wrk")
        found = shutil.which("wrk")
        if found is not None:
            return found
    raise WrkMissing(INSTALL_HINT)


def version(wrk: str) -> str:
    """wrk's version line (`wrk -v` exits 1 after printing it)."""
    result = subprocess.run(  # noqa: S603
        [wrk, "-v"], capture_output=True, text=True, check=False
    )
    return (result.stdout or result.stderr).splitlines()[0].strip()


@dataclass(frozen=True)
class Result:
    """One wrk run: throughput, latency percentiles (ms) and what the server answered."""

    requests: int
    seconds: float
    rps: float
    p50_ms: float | None
    p90_ms: float | None
    p99_ms: float | None
    mean_ms: float | None
    max_ms: float | None
    statuses: dict[str, int]
    socket_errors: dict[str, int] = field(default_factory=dict)
    connections: int = 0
    # CPU time per request during the run, µs: "server" (the server's processes) and
    # "postgres" (every PostgreSQL process); filled in by bench/run.py.
    cpu_us_per_request: dict[str, float] = field(default_factory=dict)

    def unexpected(self, expected: int) -> int:
        """Responses with another status than `expected`, plus socket errors."""
        other = sum(count for status, count in self.statuses.items() if status != str(expected))
        return other + sum(self.socket_errors.values())

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def run(
    wrk: str,
    url: str,
    *,
    tokens: Path,
    mode: str,
    connections: int,
    duration: int,
    threads: int,
    offset: int = 0,
) -> Result:
    """Drive `url` (…/me/message) for `duration` seconds with `connections` connections."""
    threads = max(1, min(threads, connections))
    command = [
        wrk,
        f"--threads={threads}",
        f"--connections={connections}",
        f"--duration={duration}s",
        "--timeout=10s",
        f"--script={SCRIPT}",
        url,
        "--",
        str(tokens),
        mode,
        str(threads),
        str(offset),
    ]
    completed = subprocess.run(  # noqa: S603
        command, capture_output=True, text=True, check=False
    )
    line = next(
        (x for x in completed.stdout.splitlines() if x.startswith("BENCH_RESULT ")),
        None,
    )
    if completed.returncode != 0 or line is None:
        raise RuntimeError(
            f"wrk failed ({completed.returncode}): {completed.stderr.strip() or completed.stdout}"
        )
    raw = json.loads(line.removeprefix("BENCH_RESULT "))
    seconds = raw["duration_us"] / 1e6

    def ms(key: str) -> float | None:
        value = raw[key]
        return None if value is None else round(value / 1000, 3)

    return Result(
        requests=int(raw["requests"]),
        seconds=round(seconds, 3),
        rps=round(raw["requests"] / seconds, 1) if seconds else 0.0,
        p50_ms=ms("p50_us"),
        p90_ms=ms("p90_us"),
        p99_ms=ms("p99_us"),
        mean_ms=ms("latency_mean_us"),
        max_ms=ms("latency_max_us"),
        statuses={k: int(v) for k, v in sorted(raw["statuses"].items())},
        # wrk's `status` error counts every answer of 400 and up: the statuses above say more.
        socket_errors={k: int(v) for k, v in raw["errors"].items() if v and k != "status"},
        connections=connections,
    )
