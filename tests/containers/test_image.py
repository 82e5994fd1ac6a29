"""The project's image (the real Dockerfile) run for real: `quoteapi migrate` and `quoteapi
serve` in containers against the test PostgreSQL on loopback, on the host's network, reached
on 127.0.0.1 only. The image must stay small, run as a non-root user on a read-only root file
system, report healthy through its own HEALTHCHECK, and stop gracefully on `docker stop`."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import asyncpg
import httpx
import pytest

from quoteapi.database.url import parse_database_url
from quoteapi.migrations import head_revision
from tests.containers.docker import (
    BASE_IMAGE,
    docker,
    image_size,
    inspect,
    report,
    wait_until_healthy,
)
from tests.support.databases import app_role, new_database
from tests.support.locks import hold_row_lock_until_a_put_waits
from tests.support.polling import until
from tests.support.processes import free_port, serve_env
from tests.support.tokens import TEST_KEY, mint

pytestmark = pytest.mark.slow

MB = 1_000_000
# What the project's layers may add to the base image (docs/deploying.md: Containers, "Image size").
LAYER_BUDGET = 160 * MB
SETTING_PREFIXES = ("DATABASE_", "CLERK_", "QUOTEAPI_")


@dataclass(frozen=True)
class Container:
    name: str
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def _settings_env(database_url: str, **settings: object) -> dict[str, str]:
    """The test server's settings (tokens signed by TEST_KEY verify) as container variables."""
    env = serve_env(database_url, **settings)
    return {k: v for k, v in env.items() if k.startswith(SETTING_PREFIXES)}


def _run_args(env: dict[str, str]) -> list[str]:
    """`-e NAME` for each variable: values come from the docker command's environment, never
    from its argv."""
    return [arg for name in env for arg in ("-e", name)]


def _start(image: str, database_url: str, **settings: object) -> Container:
    """`quoteapi serve` in a detached container on the host's network, read-only, on a free
    port of 127.0.0.1's (QUOTEAPI_PORT); returns once /healthz answers."""
    container = Container(f"quoteapi-test-{uuid.uuid4().hex[:10]}", free_port())
    env = _settings_env(database_url, quoteapi_port=container.port, **settings)
    docker(
        "run", "--detach", "--name", container.name, "--network", "host", "--read-only",
        *_run_args(env), image, env=env,
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"{container.url}/healthz", timeout=1).status_code == 200:
                return container
        except httpx.TransportError:
            pass
        state = inspect(container.name)["State"]
        if not state["Running"] or time.monotonic() > deadline:
            logs = docker("logs", container.name, check=False)
            raise AssertionError(f"{container.name} not serving ({state['Status']}):\n{logs}")
        time.sleep(0.1)  # poll interval


def _remove(container: Container) -> None:
    docker("rm", "--force", container.name, check=False)


@pytest.fixture(scope="module")
async def owner_url(server_url: str) -> AsyncIterator[str]:
    """An empty database of this module's own on the test PostgreSQL (127.0.0.1), as a
    superuser."""
    async with new_database(server_url, "quoteapi_containers") as url:
        yield url


@pytest.fixture(scope="module")
def migrated(image: str, owner_url: str) -> str:
    """`quoteapi migrate` run in a container against `owner_url`; the URL."""
    env = {"DATABASE_URL": owner_url}
    docker(
        "run", "--rm", "--network", "host", "--read-only", *_run_args(env),
        image, "quoteapi", "migrate", env=env,
    )  # fmt: skip
    return owner_url


@pytest.fixture(scope="module")
async def app_url(migrated: str) -> AsyncIterator[str]:
    """The least-privilege role the service connects as in production."""
    async with app_role(migrated) as url:
        yield url


@pytest.fixture(scope="module")
def api(image: str, app_url: str) -> Iterator[Container]:
    container = _start(image, app_url)
    yield container
    _remove(container)


@pytest.fixture
async def superuser(migrated: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(**parse_database_url(migrated).connect_kwargs)
    yield connection
    await connection.close()


def _bearer(user: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {mint(TEST_KEY, user)}"}


def test_the_projects_layers_stay_within_the_size_budget(
    image: str, pytestconfig: pytest.Config
) -> None:
    base, total = image_size(BASE_IMAGE), image_size(image)
    added = total - base
    report(
        pytestconfig,
        f"\nimage {total / MB:.0f} MB = base {BASE_IMAGE} {base / MB:.0f} MB"
        f" + the project's layers {added / MB:.0f} MB (budget {LAYER_BUDGET / MB:.0f} MB)",
    )
    assert added <= LAYER_BUDGET


async def test_migrate_in_a_container_brings_an_empty_database_to_head(
    superuser: asyncpg.Connection,
) -> None:
    assert await superuser.fetchval("SELECT version_num FROM alembic_version") == head_revision()


def test_a_quote_lives_and_dies_through_the_container(api: Container) -> None:
    headers = _bearer("user_container_life_cycle")
    with httpx.Client(base_url=api.url, headers=headers, timeout=10) as http:
        created = http.put("/me/message", json={"message": "Ship it."})
        assert created.status_code == 201, created.text
        read = http.get("/me/message")
        assert read.status_code == 200
        assert read.json()["message"] == "Ship it."
        etag = read.headers["etag"]
        replaced = http.put(
            "/me/message", json={"message": "Ship it again."}, headers={"If-Match": etag}
        )
        assert replaced.status_code == 200, replaced.text
        stale = http.put("/me/message", json={"message": "Too late."}, headers={"If-Match": etag})
        assert stale.status_code == 412
        assert http.get("/me/message").json()["message"] == "Ship it again."
        assert http.delete("/me/message").status_code == 204
        assert http.get("/me/message").status_code == 404


def test_dockers_healthcheck_reports_healthy_on_the_port_the_server_was_given(
    api: Container, pytestconfig: pytest.Config
) -> None:
    assert api.port != 8000  # QUOTEAPI_PORT moved both the server and the probe
    took = wait_until_healthy(api.name, within=60)
    report(pytestconfig, f"\nhealthy {took:.1f} s later (HEALTHCHECK every 10 s)")


def test_serves_as_a_non_root_user_on_a_read_only_root_file_system(api: Container) -> None:
    assert inspect(api.name)["HostConfig"]["ReadonlyRootfs"] is True
    assert docker("exec", api.name, "id", "-u").stdout.strip() == "10001"
    server_uid = docker("exec", api.name, "stat", "-c", "%u", "/proc/1").stdout.strip()
    assert server_uid == "10001"
    written = docker("exec", api.name, "touch", "/opt/quoteapi/x", check=False)
    assert written.returncode != 0
    assert "Read-only file system" in written.stderr


def test_serve_port_that_disagrees_with_quoteapi_port_is_refused_at_start(image: str) -> None:
    # The image sets QUOTEAPI_PORT=8000 for its HEALTHCHECK: `--port 9000` would be unhealthy.
    env = {
        "DATABASE_URL": "postgresql://nobody:x@127.0.0.1:1/none",
        "CLERK_JWT_KEY": TEST_KEY.public_pem,
    }
    result = docker(
        "run", "--rm", "--network", "none", *_run_args(env),
        image, "quoteapi", "serve", "--port", "9000", env=env, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip().startswith("quoteapi: configuration error: QUOTEAPI_PORT")


async def test_docker_stop_lets_the_request_in_flight_finish_and_exits_0(
    image: str, app_url: str, superuser: asyncpg.Connection, pytestconfig: pytest.Config
) -> None:
    grace = 15
    container = await asyncio.to_thread(
        _start, image, app_url, quoteapi_shutdown_grace_seconds=grace
    )
    try:
        user = "user_container_stop"
        headers = _bearer(user)
        async with httpx.AsyncClient(base_url=container.url, timeout=30) as http:
            created = await http.put("/me/message", json={"message": "before"}, headers=headers)
            assert created.status_code in (200, 201)
            transaction, in_flight = await hold_row_lock_until_a_put_waits(
                superuser, http, user, headers
            )
            stopped = time.monotonic()
            stop = asyncio.create_task(
                asyncio.to_thread(docker, "stop", "--time", str(grace + 5), container.name)
            )
            await until(
                lambda: _refuses(container), within=10, what="new connections refused after SIGTERM"
            )
            assert not in_flight.done()
            await transaction.commit()
            response = await in_flight
            await stop
        took = time.monotonic() - stopped
        assert response.status_code == 200, response.text
        state = inspect(container.name)["State"]
        report(
            pytestconfig,
            f"\nexited {state['ExitCode']}, {took:.2f} s after docker stop (grace {grace} s)",
        )
        assert state["ExitCode"] == 0
        assert took < grace
    finally:
        _remove(container)


def _refuses(container: Container) -> bool:
    try:
        httpx.get(f"{container.url}/healthz", timeout=0.5)
    except (httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError):
        # Refused, or reset: a connection queued as the listening socket closed is reset.
        return True
    return False
