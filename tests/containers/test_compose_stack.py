"""compose.yaml brought up for real (Docker Compose v2): PostgreSQL, the one-shot `migrate` and
`grants`, PgBouncer in transaction mode and the API as the least-privilege role, on the base
images deploy/local-images.sh provides. The API is published on 127.0.0.1 only; the stack's
one network is the project's own, and nothing of the project outlives the test."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml

from tests.containers.docker import docker, report, wait_until_healthy
from tests.support.processes import free_port
from tests.support.tokens import TEST_ISSUER, TEST_KEY, mint

pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class Stack:
    project: str
    files: tuple[Path, ...]
    env: dict[str, str]
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def compose(self, *args: str, timeout: float = 300) -> str:
        options = ["--project-name", self.project]
        for file in self.files:
            options += ["--file", str(file)]
        return docker("compose", *options, *args, env=self.env, timeout=timeout).stdout

    def container(self, service: str) -> str:
        return self.compose("ps", "--all", "--quiet", service).strip()

    def leftovers(self) -> dict[str, list[str]]:
        """The project's containers, networks and volumes that still exist."""
        label = f"label=com.docker.compose.project={self.project}"
        return {
            kind: docker(*command, "--filter", label, "--quiet").stdout.split()
            for kind, command in {
                "containers": ("ps", "--all"),
                "networks": ("network", "ls"),
                "volumes": ("volume", "ls"),
            }.items()
        }


def _publishable_key(frontend_api: str) -> str:
    """A Clerk-shaped publishable key naming `frontend_api` (compose.yaml requires one)."""
    return "pk_test_" + base64.b64encode(f"{frontend_api}$".encode()).decode().rstrip("=")


@pytest.fixture
def stack(image: str, tmp_path: Path, repo_root: Path) -> Iterator[Stack]:
    """compose.yaml with a test override: the API and `migrate` use the image the tests built,
    tokens are verified with the test key (no network), and the API is published on a free
    port of 127.0.0.1 instead of every interface's 8000. Taken down, volumes too, at the end."""
    port = free_port()
    override = {
        "services": {
            "migrate": {"image": image, "pull_policy": "never"},
            "api": {
                "image": image,
                "pull_policy": "never",
                "environment": {"CLERK_JWT_KEY": TEST_KEY.public_pem, "CLERK_ISSUER": TEST_ISSUER},
                "ports": [f"127.0.0.1:{port}:8000"],
            },
        }
    }
    # `!override` replaces compose.yaml's list of ports instead of adding to it.
    text = yaml.safe_dump(override).replace("ports:\n", "ports: !override\n")
    (tmp_path / "compose.test.yaml").write_text(text)
    stack = Stack(
        project=f"quoteapi-test-{uuid.uuid4().hex[:8]}",
        files=(repo_root / "compose.yaml", tmp_path / "compose.test.yaml"),
        env={
            "POSTGRES_PASSWORD": uuid.uuid4().hex,
            "QUOTEAPI_APP_PASSWORD": uuid.uuid4().hex,
            "CLERK_PUBLISHABLE_KEY": _publishable_key(TEST_ISSUER.removeprefix("https://")),
        },
        port=port,
    )
    try:
        yield stack
    finally:
        stack.compose("down", "--volumes", "--remove-orphans", "--timeout", "10")


def test_the_whole_stack_serves_keeps_data_across_an_api_restart_and_leaves_nothing(
    stack: Stack, pytestconfig: pytest.Config
) -> None:
    stack.compose("up", "--detach", "--no-build", "--pull", "never", timeout=600)
    took = wait_until_healthy(stack.container("api"), within=120)
    report(pytestconfig, f"\ncompose: api healthy {took:.1f} s after `up` returned")
    for one_shot in ("migrate", "grants"):
        state = json.loads(docker("inspect", stack.container(one_shot)).stdout)[0]["State"]
        assert (state["Status"], state["ExitCode"]) == ("exited", 0), one_shot

    headers = {"Authorization": f"Bearer {mint(TEST_KEY, 'user_compose')}"}
    with httpx.Client(base_url=stack.url, headers=headers, timeout=10) as http:
        assert http.get("/readyz").status_code == 200
        created = http.put("/me/message", json={"message": "Compose me."})
        assert created.status_code == 201, created.text
        etag = created.headers["etag"]
        stale = http.put("/me/message", json={"message": "x"}, headers={"If-Match": '"0"'})
        assert stale.status_code == 412

        stack.compose("restart", "api")
        took = wait_until_healthy(stack.container("api"), within=120)
        report(pytestconfig, f"compose: api healthy {took:.1f} s after `restart` returned")
        read = http.get("/me/message")
        assert read.status_code == 200
        assert (read.json()["message"], read.headers["etag"]) == ("Compose me.", etag)
        assert http.delete("/me/message").status_code == 204
        assert http.get("/me/message").status_code == 404

    stack.compose("down", "--volumes", "--remove-orphans", "--timeout", "10")
    assert stack.leftovers() == {"containers": [], "networks": [], "volumes": []}
