"""Fixtures of the container tests: Docker (skipped without it, failed without it under CI),
the base images (real ones, or stand-ins made by deploy/local-images.sh) and the project's
image built from a clean checkout with the real Dockerfile."""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.containers.docker import (
    LOCAL_IMAGES_SCRIPT,
    clean_checkout,
    docker,
    report,
    require_docker,
)


@pytest.fixture(scope="session")
def docker_engine() -> None:
    require_docker()


@pytest.fixture(scope="session")
def base_images(docker_engine: None, repo_root: Path, pytestconfig: pytest.Config) -> None:
    """The images the Dockerfile and compose.yaml name: already there, pulled, or stand-ins."""
    if os.geteuid() != 0:
        pytest.skip(f"{LOCAL_IMAGES_SCRIPT} runs debootstrap, which needs root")
    started = time.monotonic()
    result = subprocess.run(
        ["bash", str(repo_root / LOCAL_IMAGES_SCRIPT)],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    report(pytestconfig, f"\n{result.stderr.rstrip()}")
    report(pytestconfig, f"{LOCAL_IMAGES_SCRIPT}: {time.monotonic() - started:.1f} s")
    assert result.returncode == 0, result.stderr


@pytest.fixture(scope="session")
def image(
    base_images: None,
    repo_root: Path,
    tmp_path_factory: pytest.TempPathFactory,
    pytestconfig: pytest.Config,
) -> Iterator[str]:
    """The project's image, built with `docker build --network host` from a clean checkout;
    removed at the end."""
    tag = f"quoteapi-test:{uuid.uuid4().hex[:10]}"
    context = clean_checkout(repo_root, tmp_path_factory.mktemp("checkout"))
    started = time.monotonic()
    docker("build", "--network", "host", "-q", "-t", tag, str(context), timeout=900)
    report(pytestconfig, f"docker build: {time.monotonic() - started:.1f} s")
    yield tag
    docker("rmi", "-f", tag, check=False)
