"""Docker through its command line, for the container tests: is an engine usable, build an
image from a clean checkout, run and inspect containers, wait for Docker's own health status.

Networking rule: the tests reach containers on 127.0.0.1 only (host networking, or ports
published on 127.0.0.1), builds use `--network host`, and the only networks are the ones a test
creates itself (compose's project network), removed when it ends."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

# A registry this machine cannot reach makes the base images locally
# (docs/deploying.md: Containers).
LOCAL_IMAGES_SCRIPT = "deploy/local-images.sh"
BASE_IMAGE = "python:3.11-slim"


def report(config: pytest.Config, line: str) -> None:
    """Write `line` to the test output as it runs, even when pytest captures output: timings
    and sizes belong in CI's log."""
    terminal = config.pluginmanager.get_plugin("terminalreporter")
    capture = config.pluginmanager.get_plugin("capturemanager")
    if terminal is None:
        return
    if capture is None:
        terminal.write_line(line)
        return
    with capture.global_and_fixture_disabled():
        terminal.write_line(line)


def docker(
    *args: str,
    env: Mapping[str, str] | None = None,
    timeout: float = 300,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """`docker ARGS`, its output captured; with `env`, those variables are added to this
    process's environment (so that `-e NAME` passes a value without putting it in argv)."""
    result = subprocess.run(
        ["docker", *args],
        env={**os.environ, **env} if env is not None else None,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"docker {' '.join(args[:3])} ... exited {result.returncode}:\n"
            f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        )
    return result


def unusable_reason() -> str | None:
    """Why Docker cannot be used here, or None when an engine answers."""
    if shutil.which("docker") is None:
        return "the docker command is not installed (apt-get install docker.io)"
    try:
        info = docker("info", "--format", "{{.ServerVersion}}", timeout=20, check=False)
    except subprocess.TimeoutExpired:
        return "the Docker engine does not answer (docker info timed out)"
    if info.returncode != 0:
        return f"no Docker engine answers (start dockerd): {info.stderr.strip()[:200]}"
    return None


def require_docker() -> None:
    """Skip without Docker; under CI, where .ci/run sets Docker up, fail instead."""
    reason = unusable_reason()
    if reason is None:
        return
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; .ci/run installs and starts it")
    pytest.skip(reason)


def inspect(name: str) -> dict[str, Any]:
    """`docker inspect NAME` of a container or an image."""
    found: list[dict[str, Any]] = json.loads(docker("inspect", name).stdout)
    return found[0]


def wait_until_healthy(container: str, within: float) -> float:
    """Poll Docker's health status of `container` until it is `healthy`; the seconds it took."""
    started = time.monotonic()
    status = "none"
    while time.monotonic() - started < within:
        state = inspect(container)["State"]
        if not state["Running"]:
            logs = docker("logs", container, check=False)
            raise AssertionError(f"{container} exited {state['ExitCode']}:\n{logs.stderr}")
        status = state.get("Health", {}).get("Status", "none")
        if status == "healthy":
            return time.monotonic() - started
        time.sleep(0.5)  # poll interval; Docker probes every few seconds
    raise AssertionError(f"{container} was {status}, not healthy, after {within} s")


def image_size(image: str) -> int:
    """Bytes of `image`, its base included."""
    size: int = inspect(image)["Size"]
    return size


def clean_checkout(repo_root: Path, destination: Path) -> Path:
    """The repository's files as a fresh clone has them (tracked and new, not ignored: no
    virtual environment, data directory or `.env`), copied to `destination`."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=repo_root,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = repo_root / name
        if source.is_file():  # a file deleted in the work tree is not in a checkout either
            target = destination / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    return destination
