"""POST /webhooks/clerk over HTTP on the real database: Svix signatures, replays, size limits,
`user.deleted` erasure, and the `quoteapi webhook-send` sender end to end."""

from __future__ import annotations

import asyncio
import base64
import json
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from quoteapi.app import create_app
from quoteapi.database.url import parse_database_url
from quoteapi.migrations import alembic_config, upgrade_async
from quoteapi.problems import PROBLEM_MEDIA_TYPE
from quoteapi.settings import ConfigError
from quoteapi.webhooks.signatures import MAX_BODY_BYTES, TOLERANCE_SECONDS
from tests.support.app import RunningApp, make_settings, running_app
from tests.support.logs import events, everything
from tests.support.problems import assert_problem
from tests.support.processes import ServerProcess, clean_env
from tests.support.tokens import MintToken, bearer
from tests.support.webhooks import (
    OTHER_SECRET,
    TEST_SECRET,
    URL,
    recorded_deliveries,
    signature,
    signed,
    store_quotes,
    stored_users,
    user_deleted,
)

# --- user.deleted -----------------------------------------------------------------------------


async def test_user_deleted_removes_only_that_users_row(
    client: httpx.AsyncClient, owner_engine: AsyncEngine
) -> None:
    await store_quotes(owner_engine, "user_a", "user_b")
    body, headers = signed(user_deleted("user_a"), msg_id="msg_delete_a")

    response = await client.post(URL, content=body, headers=headers)

    assert response.status_code == 200
    assert response.json() == {"outcome": "deleted"}
    assert await stored_users(owner_engine) == {"user_b"}
    assert await recorded_deliveries(owner_engine) == {"msg_delete_a"}


async def test_user_deleted_for_a_user_without_a_quote_is_acknowledged(
    client: httpx.AsyncClient, owner_engine: AsyncEngine
) -> None:
    await store_quotes(owner_engine, "user_b")
    body, headers = signed(user_deleted("user_never_saved"))
    response = await client.post(URL, content=body, headers=headers)
    assert response.json() == {"outcome": "deleted"}
    assert await stored_users(owner_engine) == {"user_b"}


async def test_redelivery_of_the_same_svix_id_changes_nothing(
    client: httpx.AsyncClient, owner_engine: AsyncEngine
) -> None:
    await store_quotes(owner_engine, "user_a")
    body, headers = signed(user_deleted("user_a"), msg_id="msg_replayed")
    assert (await client.post(URL, content=body, headers=headers)).json()["outcome"] == "deleted"
    await store_quotes(owner_engine, "user_a")  # the row is re-created in between

    # Svix signs each attempt afresh: same svix-id, new timestamp and signature.
    body, headers = signed(user_deleted("user_a"), msg_id="msg_replayed")
    response = await client.post(URL, content=body, headers=headers)

    assert response.status_code == 200
    assert response.json() == {"outcome": "duplicate"}
    assert await stored_users(owner_engine) == {"user_a"}


async def test_concurrent_deliveries_of_one_svix_id_act_once(
    client: httpx.AsyncClient, owner_engine: AsyncEngine
) -> None:
    await store_quotes(owner_engine, "user_a")
    body, headers = signed(user_deleted("user_a"), msg_id="msg_concurrent")

    responses = await asyncio.gather(
        *(client.post(URL, content=body, headers=headers) for _ in range(4))
    )

    outcomes = sorted(r.json()["outcome"] for r in responses)
    assert outcomes == ["deleted", "duplicate", "duplicate", "duplicate"]


@pytest.mark.parametrize(
    "event",
    [
        {"type": "user.deleted", "data": {"deleted": True}},
        {"type": "user.updated", "data": {"id": "user_a", "first_name": "A"}},
    ],
    ids=["user-deleted-without-data-id", "unknown-event-type"],
)
async def test_an_event_with_nothing_to_do_is_acknowledged_and_changes_nothing(
    client: httpx.AsyncClient, owner_engine: AsyncEngine, event: dict[str, Any]
) -> None:
    await store_quotes(owner_engine, "user_a")
    body, headers = signed(event)

    response = await client.post(URL, content=body, headers=headers)

    assert response.status_code == 200
    assert response.json() == {"outcome": "ignored"}
    assert await stored_users(owner_engine) == {"user_a"}
    assert await recorded_deliveries(owner_engine) == set()


async def test_deliveries_older_than_the_retention_are_pruned(
    client: httpx.AsyncClient, owner_engine: AsyncEngine
) -> None:
    async with owner_engine.begin() as connection:
        await connection.execute(
            text(
                "INSERT INTO webhook_deliveries (svix_id, event_type, received_at) VALUES"
                " ('msg_old', 'user.deleted', now() - interval '8 days'),"
                " ('msg_recent', 'user.deleted', now() - interval '6 days')"
            )
        )
    body, headers = signed(user_deleted("user_a"), msg_id="msg_new")

    await client.post(URL, content=body, headers=headers)

    assert await recorded_deliveries(owner_engine) == {"msg_recent", "msg_new"}


# --- Refused deliveries: 400 with one code per reason, nothing changed ------------------------


def tampered_body(body: bytes, headers: dict[str, str]) -> tuple[bytes, dict[str, str]]:
    return body.replace(b"user_a", b"user_b"), headers


def signed_with_another_secret(
    body: bytes, headers: dict[str, str]
) -> tuple[bytes, dict[str, str]]:
    return signed(body, msg_id=headers["svix-id"], secret=OTHER_SECRET)


@pytest.mark.parametrize(
    "spoil", [tampered_body, signed_with_another_secret], ids=["tampered-body", "wrong-secret"]
)
async def test_a_signature_that_does_not_verify_returns_400_and_changes_nothing(
    client: httpx.AsyncClient,
    owner_engine: AsyncEngine,
    spoil: Callable[[bytes, dict[str, str]], tuple[bytes, dict[str, str]]],
) -> None:
    await store_quotes(owner_engine, "user_a", "user_b")
    body, headers = spoil(*signed(user_deleted("user_a")))

    response = await client.post(URL, content=body, headers=headers)

    assert_problem(response, 400, "webhook-invalid-signature")
    assert await stored_users(owner_engine) == {"user_a", "user_b"}
    assert await recorded_deliveries(owner_engine) == set()


@pytest.mark.parametrize(
    ("offset", "code"),
    [(-TOLERANCE_SECONDS - 60, "webhook-stale"), (TOLERANCE_SECONDS + 60, "webhook-future")],
    ids=["stale", "future"],
)
async def test_timestamp_outside_the_tolerance_returns_400_naming_the_direction(
    client: httpx.AsyncClient, owner_engine: AsyncEngine, offset: int, code: str
) -> None:
    await store_quotes(owner_engine, "user_a")
    body, headers = signed(user_deleted("user_a"), timestamp=int(time.time()) + offset)
    response = await client.post(URL, content=body, headers=headers)
    assert_problem(response, 400, code)
    assert await stored_users(owner_engine) == {"user_a"}


@pytest.mark.parametrize("header", ["svix-id", "svix-timestamp", "svix-signature"])
async def test_missing_header_returns_400_naming_it(client: httpx.AsyncClient, header: str) -> None:
    body, headers = signed(user_deleted("user_a"))
    del headers[header]
    response = await client.post(URL, content=body, headers=headers)
    assert_problem(response, 400, "webhook-missing-header")
    assert header in response.json()["detail"]


async def test_signature_list_with_one_good_entry_among_bad_ones_is_accepted(
    client: httpx.AsyncClient, owner_engine: AsyncEngine
) -> None:
    await store_quotes(owner_engine, "user_a")
    body, headers = signed(user_deleted("user_a"))
    wrong = signature(body, headers["svix-id"], int(headers["svix-timestamp"]), OTHER_SECRET)
    unknown_version = "v1a," + base64.b64encode(b"x" * 64).decode()
    headers["svix-signature"] = f"{wrong} {headers['svix-signature']} {unknown_version}"

    response = await client.post(URL, content=body, headers=headers)

    assert response.json() == {"outcome": "deleted"}
    assert await stored_users(owner_engine) == set()


@pytest.mark.parametrize(
    "entry",
    ["v1", "v1,not base64!", "v1,abc,def", ",c2ln", "v1,c2ln=x", "garbage"],
)
async def test_malformed_signature_entry_returns_400_even_beside_a_good_one(
    client: httpx.AsyncClient, owner_engine: AsyncEngine, entry: str
) -> None:
    await store_quotes(owner_engine, "user_a")
    body, headers = signed(user_deleted("user_a"))
    headers["svix-signature"] = f"{entry} {headers['svix-signature']}"

    response = await client.post(URL, content=body, headers=headers)

    assert_problem(response, 400, "webhook-malformed-header")
    assert await stored_users(owner_engine) == {"user_a"}


@pytest.mark.parametrize("timestamp", ["soon", "1.7e9", "-5", "nan", "99999999999999999999"])
async def test_malformed_timestamp_returns_400(client: httpx.AsyncClient, timestamp: str) -> None:
    body, headers = signed(user_deleted("user_a"))
    headers["svix-timestamp"] = timestamp
    response = await client.post(URL, content=body, headers=headers)
    assert_problem(response, 400, "webhook-malformed-header")


@pytest.mark.parametrize("body", [b"not json", b"[1, 2]", b'{"data": {}}', b"\xff\xfe"])
async def test_signed_body_that_is_not_an_event_returns_400(
    client: httpx.AsyncClient, body: bytes
) -> None:
    body, headers = signed(body)
    response = await client.post(URL, content=body, headers=headers)
    assert_problem(response, 400, "webhook-invalid-body")


# --- Size limit -------------------------------------------------------------------------------

# The app-wide body-limit middleware may answer first (its own `*-too-large` code); either way
# the body is refused with 413 problem+json.


async def test_body_over_one_mebibyte_returns_413(client: httpx.AsyncClient) -> None:
    body, headers = signed(b" " * (MAX_BODY_BYTES + 1))
    response = await client.post(URL, content=body, headers=headers)
    assert response.status_code == 413
    assert response.headers["content-type"] == PROBLEM_MEDIA_TYPE
    assert response.json()["code"].endswith("too-large")


async def test_streamed_body_over_the_limit_without_content_length_returns_413(
    client: httpx.AsyncClient,
) -> None:
    _, headers = signed(b"{}")
    chunks_sent = 0

    async def chunks() -> AsyncIterator[bytes]:
        nonlocal chunks_sent
        for _ in range(64):  # 4 MiB offered, 64 KiB at a time
            chunks_sent += 1
            yield b" " * 65536

    response = await client.post(URL, content=chunks(), headers=headers)

    assert response.status_code == 413
    assert "content-length" not in response.request.headers
    assert response.json()["code"].endswith("too-large")


async def test_body_of_exactly_one_mebibyte_is_accepted(client: httpx.AsyncClient) -> None:
    event = json.dumps({"type": "user.updated", "data": {"id": "user_a"}, "pad": ""}).encode()
    padded = event.replace(b'"pad": ""', b'"pad": "' + b"x" * (MAX_BODY_BYTES - len(event)) + b'"')
    assert len(padded) == MAX_BODY_BYTES
    body, headers = signed(padded)
    response = await client.post(URL, content=body, headers=headers)
    assert response.json() == {"outcome": "ignored"}


# --- Configuration ----------------------------------------------------------------------------


@pytest.mark.parametrize("secret", [None, ""])
async def test_endpoint_is_absent_without_a_signing_secret(
    database_url: str, secret: str | None
) -> None:
    settings = make_settings(database_url, clerk_webhook_signing_secret=secret)
    async with running_app(settings, lifespan=False) as api:
        body, headers = signed(user_deleted("user_a"))
        response = await api.http.post(URL, content=body, headers=headers)
    assert_problem(response, 404, "not-found")


@pytest.mark.parametrize("secret", ["sk_test_abcdef", "whsec_====", "whsec_not*base64"])
def test_a_malformed_signing_secret_stops_start_up(database_url: str, secret: str) -> None:
    with pytest.raises(ConfigError) as raised:
        create_app(make_settings(database_url, clerk_webhook_signing_secret=secret))
    assert raised.value.variable == "CLERK_WEBHOOK_SIGNING_SECRET"
    assert secret not in str(raised.value)


async def test_migration_0002_downgrades_and_upgrades_cleanly(empty_database_url: str) -> None:
    from alembic import command

    target = parse_database_url(empty_database_url)
    await upgrade_async(target)
    await asyncio.to_thread(command.downgrade, alembic_config(target), "0001")
    async with (
        running_app(make_settings(empty_database_url)) as api,
        (await api.engine()).connect() as connection,
    ):
        assert await connection.scalar(text("SELECT to_regclass('webhook_deliveries')")) is None
        assert await connection.scalar(text("SELECT to_regclass('user_messages')")) is not None
    await upgrade_async(target)


# --- The CLI sender, against a `quoteapi serve` process on a free loopback port ---------------


@pytest.fixture
def served_url(api: RunningApp, webhook_server: ServerProcess) -> str:
    """The webhook URL of a real `quoteapi serve`, on the database `api` emptied."""
    return f"{webhook_server.url}{URL}"


async def run_cli(*args: str, secret: str, cwd: Path) -> tuple[int, str, str]:
    # cwd: an empty folder, so a developer's .env is not read; the secret comes from the env.
    env = clean_env({"clerk_webhook_signing_secret": secret})
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "quoteapi",
        *args,
        cwd=cwd,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


@pytest.mark.slow
async def test_cli_webhook_send_is_accepted_and_deletes_the_user(
    served_url: str, owner_engine: AsyncEngine, tmp_path: Path
) -> None:
    await store_quotes(owner_engine, "user_cli", "user_other")

    code, out, err = await run_cli(
        "webhook-send", "--url", served_url, "--user", "user_cli", secret=TEST_SECRET, cwd=tmp_path
    )

    assert code == 0, err
    assert out.startswith("200 ")
    assert json.loads(out.removeprefix("200 ")) == {"outcome": "deleted"}
    assert await stored_users(owner_engine) == {"user_other"}


@pytest.mark.slow
async def test_cli_webhook_send_ends_a_session(
    served_url: str, tmp_path: Path, mint_token: MintToken
) -> None:
    # One event type: the three act alike (tests/webhooks/test_clerk_lifecycle.py).
    code, out, err = await run_cli(
        *("webhook-send", "--url", served_url, "--event", "session.ended"),
        *("--user", "user_cli", "--session", "sess_cli"),
        secret=TEST_SECRET,
        cwd=tmp_path,
    )

    assert code == 0, err
    assert json.loads(out.removeprefix("200 ")) == {"outcome": "revoked"}
    auth = bearer(mint_token("user_cli", sid="sess_cli"))
    async with httpx.AsyncClient(timeout=10) as http:
        response = await http.get(served_url.replace(URL, "/me/message"), headers=auth)
    assert_problem(response, 401, "session-revoked")


async def test_cli_webhook_send_of_a_session_event_needs_the_session(tmp_path: Path) -> None:
    code, _, err = await run_cli(
        "webhook-send",
        "--event",
        "session.revoked",
        "--user",
        "user_cli",
        secret=TEST_SECRET,
        cwd=tmp_path,
    )
    assert code != 0
    assert "--session is required for session.revoked" in err


@pytest.mark.slow
async def test_cli_webhook_send_with_another_secret_is_refused(
    served_url: str, owner_engine: AsyncEngine, tmp_path: Path
) -> None:
    await store_quotes(owner_engine, "user_cli")

    code, out, _ = await run_cli(
        "webhook-send", "--url", served_url, "--user", "user_cli", secret=OTHER_SECRET, cwd=tmp_path
    )

    assert code == 1
    assert out.startswith("400 ")
    assert "webhook-invalid-signature" in out
    assert await stored_users(owner_engine) == {"user_cli"}


async def test_openapi_documents_the_endpoint(client: httpx.AsyncClient) -> None:
    operation = (await client.get("/openapi.json")).json()["paths"][URL]["post"]
    assert operation["requestBody"]["required"] is True
    assert {"200", "400", "413"} <= set(operation["responses"])


async def test_logs_carry_neither_the_secret_nor_the_body(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG", logger="quoteapi")
    event = {"type": "user.updated", "data": {"id": "user_a", "first_name": "Zebediah"}}
    for secret in (TEST_SECRET, OTHER_SECRET):
        body, headers = signed(event, secret=secret)
        await client.post(URL, content=body, headers=headers)

    logged = everything(caplog.records)
    assert events(caplog.records, "webhook_ignored")
    refused = events(caplog.records, "webhook_refused")
    assert [e["code"] for e in refused] == ["webhook-invalid-signature"]
    assert "Zebediah" not in logged
    assert TEST_SECRET.removeprefix("whsec_") not in logged
