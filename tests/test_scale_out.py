"""Scale-out: two `quoteapi serve` processes (replicas behind a load balancer) share one
database through a real PgBouncer in transaction mode. The API keeps no state between requests
(only caches: verified tokens, signing keys), so any replica answers for any user."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import pytest

from tests.conftest import TEST_ISSUER, TEST_KEY, MintToken
from tests.test_web_browser import _free_port

_OWN_PREFIXES = ("DATABASE_", "CLERK_", "QUOTEAPI_", "NEXT_PUBLIC_CLERK_", "CORS_")


@contextmanager
def replica(database_url: str, workdir: Path) -> Iterator[str]:
    """`python -m quoteapi serve` on a free port; yields its base URL once /readyz is 200."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(_OWN_PREFIXES)}
    env |= {
        "DATABASE_URL": database_url,
        "DATABASE_TRANSACTION_POOLER": "true",
        "DATABASE_POOL_SIZE": "3",
        "CLERK_JWT_KEY": TEST_KEY.public_pem,
        "CLERK_ISSUER": TEST_ISSUER,
    }
    log = workdir / "serve.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "quoteapi", "serve", "--port", str(port)],
            cwd=workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, f"{url} not ready in 60 s:\n{log.read_text()}"
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.05)  # poll interval
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture(scope="module")
def replicas(
    pooled_database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[httpx.Client, httpx.Client]]:
    workdir = tmp_path_factory.mktemp("replicas")
    with ExitStack() as stack:
        urls = [stack.enter_context(replica(pooled_database_url, workdir / n)) for n in "ab"]
        clients = [stack.enter_context(httpx.Client(base_url=url, timeout=10)) for url in urls]
        yield clients[0], clients[1]


def test_a_write_on_one_replica_is_read_on_the_other(
    replicas: tuple[httpx.Client, httpx.Client], mint_token: MintToken
) -> None:
    a, b = replicas
    auth = {"Authorization": f"Bearer {mint_token(f'user_scale_{uuid.uuid4().hex[:8]}')}"}
    created = a.put("/me/message", json={"message": "Written on A."}, headers=auth)
    assert created.status_code == 201
    read = b.get("/me/message", headers=auth)
    assert read.status_code == 200
    assert read.json()["message"] == "Written on A."
    assert read.headers["etag"] == created.headers["etag"]


def test_etags_hold_across_replicas_and_a_delete_on_one_is_seen_by_the_other(
    replicas: tuple[httpx.Client, httpx.Client], mint_token: MintToken
) -> None:
    a, b = replicas
    auth = {"Authorization": f"Bearer {mint_token(f'user_scale_{uuid.uuid4().hex[:8]}')}"}
    first = a.put("/me/message", json={"message": "One."}, headers=auth).headers["etag"]
    replaced = b.put("/me/message", json={"message": "Two."}, headers={**auth, "If-Match": first})
    assert replaced.status_code == 200
    stale = a.put("/me/message", json={"message": "Lost."}, headers={**auth, "If-Match": first})
    assert stale.status_code == 412
    assert a.get("/me/message", headers=auth).json()["message"] == "Two."
    current = replaced.headers["etag"]
    assert a.delete("/me/message", headers={**auth, "If-Match": current}).status_code == 204
    assert b.get("/me/message", headers=auth).status_code == 404
