"""/me/message over HTTP against the app on the real test PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import logging

import httpx
import pytest

from quoteapi.settings import Settings
from tests.support.app import RunningApp, make_settings
from tests.support.jwks import JwksServer
from tests.support.problems import assert_problem
from tests.support.tokens import TEST_ISSUER, AuthHeaders

ALICE = "user_alice"
BOB = "user_bob"
# Versions start at 1: no quote ever carries this ETag.
NEVER_AN_ETAG = '"0"'


@pytest.fixture(params=["direct", pytest.param("pgbouncer", marks=pytest.mark.slow)])
def settings(
    request: pytest.FixtureRequest, database_url: str, jwks_server: JwksServer
) -> Settings:
    """Every test here runs twice: on the database directly, and through PgBouncer in
    transaction mode (as behind Neon's -pooler endpoints)."""
    if request.param == "direct":
        return make_settings(database_url, clerk_jwks_url=jwks_server.url, clerk_issuer=TEST_ISSUER)
    return make_settings(
        request.getfixturevalue("pooled_database_url"),
        clerk_jwks_url=jwks_server.url,
        clerk_issuer=TEST_ISSUER,
        database_transaction_pooler=True,
    )


@pytest.fixture
def alice(auth_headers: AuthHeaders) -> dict[str, str]:
    return auth_headers(ALICE)


@pytest.fixture
def bob(auth_headers: AuthHeaders) -> dict[str, str]:
    return auth_headers(BOB)


async def _put(
    client: httpx.AsyncClient, headers: dict[str, str], message: object, **extra: str
) -> httpx.Response:
    return await client.put("/me/message", json={"message": message}, headers={**headers, **extra})


# --- The life cycle ---------------------------------------------------------------------------


async def test_life_cycle_create_read_replace_delete(
    client: httpx.AsyncClient, alice: dict[str, str]
) -> None:
    assert_problem(await client.get("/me/message", headers=alice), 404, "message-not-found")

    created = await _put(client, alice, "Stay hungry.")
    assert created.status_code == 201
    assert created.headers["location"] == "/me/message"
    assert created.json()["message"] == "Stay hungry."

    read = await client.get("/me/message", headers=alice)
    assert read.status_code == 200
    assert read.json() == created.json()
    assert read.headers["etag"] == created.headers["etag"]

    replaced = await _put(client, alice, "Stay foolish.")
    assert replaced.status_code == 200
    assert replaced.json()["message"] == "Stay foolish."
    assert replaced.json()["created_at"] == created.json()["created_at"]
    assert replaced.json()["updated_at"] > created.json()["updated_at"]
    assert replaced.headers["etag"] != created.headers["etag"]

    deleted = await client.delete("/me/message", headers=alice)
    assert deleted.status_code == 204
    assert deleted.content == b""
    assert_problem(await client.get("/me/message", headers=alice), 404, "message-not-found")
    assert_problem(await client.delete("/me/message", headers=alice), 404, "message-not-found")


async def test_body_has_rfc3339_timestamps_and_a_strong_etag(
    client: httpx.AsyncClient, alice: dict[str, str]
) -> None:
    response = await _put(client, alice, "Carpe diem.")
    body = response.json()
    assert set(body) == {"message", "created_at", "updated_at"}
    for stamp in (body["created_at"], body["updated_at"]):
        assert stamp[10] == "T"
        assert stamp.endswith("Z") or stamp[-6] in "+-"
    etag = response.headers["etag"]
    assert etag.startswith('"')
    assert etag.endswith('"')


async def test_a_recreated_quote_never_reuses_an_old_etag(
    client: httpx.AsyncClient, alice: dict[str, str]
) -> None:
    first = (await _put(client, alice, "One.")).headers["etag"]
    await client.delete("/me/message", headers=alice)
    second = await _put(client, alice, "Two.")
    assert second.status_code == 201
    assert second.headers["etag"] != first
    stale = await _put(client, alice, "Three.", **{"If-Match": first})
    assert_problem(stale, 412, "precondition-failed")


# --- Conditional requests ---------------------------------------------------------------------


async def test_get_with_matching_if_none_match_returns_304(
    client: httpx.AsyncClient, alice: dict[str, str]
) -> None:
    etag = (await _put(client, alice, "Be here now.")).headers["etag"]
    for header in (etag, f"W/{etag}", f'"1", {etag}', "*"):
        response = await client.get("/me/message", headers={**alice, "If-None-Match": header})
        assert response.status_code == 304, header
        assert response.headers["etag"] == etag
        assert response.content == b""


async def test_a_304_carries_the_etag_and_cache_control_of_the_200(
    client: httpx.AsyncClient, alice: dict[str, str]
) -> None:
    # RFC 9110, section 15.4.5: a 304 sends the headers a 200 would, Cache-Control among them.
    etag = (await _put(client, alice, "Be here now.")).headers["etag"]
    full = await client.get("/me/message", headers=alice)
    unchanged = await client.get("/me/message", headers={**alice, "If-None-Match": etag})
    assert unchanged.status_code == 304
    for name in ("etag", "cache-control"):
        assert unchanged.headers.get(name) == full.headers[name], name


async def test_get_with_other_if_none_match_returns_200(
    client: httpx.AsyncClient, alice: dict[str, str]
) -> None:
    await _put(client, alice, "Be here now.")
    response = await client.get("/me/message", headers={**alice, "If-None-Match": NEVER_AN_ETAG})
    assert response.status_code == 200


@pytest.mark.parametrize("if_match", ["current-etag", "*"], ids=["current-etag", "star"])
async def test_put_with_an_if_match_that_matches_replaces(
    client: httpx.AsyncClient, alice: dict[str, str], if_match: str
) -> None:
    etag = (await _put(client, alice, "Old.")).headers["etag"]
    header = etag if if_match == "current-etag" else if_match
    response = await _put(client, alice, "New.", **{"If-Match": header})
    assert response.status_code == 200
    assert response.json()["message"] == "New."


async def test_put_with_stale_etag_returns_412_and_keeps_the_newer_quote(
    client: httpx.AsyncClient, alice: dict[str, str]
) -> None:
    seen_by_both_tabs = (await _put(client, alice, "Original.")).headers["etag"]
    assert (await _put(client, alice, "Tab A wins.", **{"If-Match": seen_by_both_tabs})).is_success
    lost = await _put(client, alice, "Tab B loses.", **{"If-Match": seen_by_both_tabs})
    assert_problem(lost, 412, "precondition-failed")
    assert (await client.get("/me/message", headers=alice)).json()["message"] == "Tab A wins."


async def test_put_with_if_match_and_nothing_stored_returns_412(
    client: httpx.AsyncClient, alice: dict[str, str]
) -> None:
    for header in ('"123"', "*", "not-an-etag"):
        response = await _put(client, alice, "Nope.", **{"If-Match": header})
        assert_problem(response, 412, "precondition-failed")
    assert (await client.get("/me/message", headers=alice)).status_code == 404


async def test_put_with_if_none_match_star_creates_once(
    client: httpx.AsyncClient, alice: dict[str, str]
) -> None:
    created = await _put(client, alice, "Save once.", **{"If-None-Match": "*"})
    assert created.status_code == 201
    again = await _put(client, alice, "Save twice?", **{"If-None-Match": "*"})
    assert_problem(again, 412, "precondition-failed")
    assert (await client.get("/me/message", headers=alice)).json()["message"] == "Save once."


async def test_put_with_if_none_match_of_the_current_etag_returns_412(
    client: httpx.AsyncClient, alice: dict[str, str]
) -> None:
    etag = (await _put(client, alice, "Current.")).headers["etag"]
    response = await _put(client, alice, "Other.", **{"If-None-Match": etag})
    assert_problem(response, 412, "precondition-failed")
    other = await _put(client, alice, "Other.", **{"If-None-Match": NEVER_AN_ETAG})
    assert other.status_code == 200


async def test_delete_honours_if_match(client: httpx.AsyncClient, alice: dict[str, str]) -> None:
    etag = (await _put(client, alice, "Keep me?")).headers["etag"]
    stale = await client.delete("/me/message", headers={**alice, "If-Match": NEVER_AN_ETAG})
    assert_problem(stale, 412, "precondition-failed")
    assert (await client.get("/me/message", headers=alice)).status_code == 200
    current = await client.delete("/me/message", headers={**alice, "If-Match": etag})
    assert current.status_code == 204


# RFC 9110, sections 13.1 and 13.2: If-Match compares strongly, If-None-Match weakly; If-Match
# is evaluated first; a failed If-None-Match is 304 for GET and 412 for the other methods.
@pytest.mark.parametrize(
    ("method", "conditions", "status"),
    [
        ("PUT", {"If-Match": "W/{etag}"}, 412),
        ("GET", {"If-Match": "W/{etag}"}, 412),
        ("DELETE", {"If-Match": "W/{etag}"}, 412),
        ("GET", {"If-Match": NEVER_AN_ETAG}, 412),
        ("GET", {"If-Match": '"1", {etag}'}, 200),
        ("GET", {"If-Match": NEVER_AN_ETAG, "If-None-Match": "{etag}"}, 412),
        ("GET", {"If-Match": "{etag}", "If-None-Match": "W/{etag}"}, 304),
        ("DELETE", {"If-None-Match": "{etag}"}, 412),
        ("DELETE", {"If-None-Match": "W/{etag}"}, 412),
        ("DELETE", {"If-None-Match": "*"}, 412),
        ("DELETE", {"If-None-Match": NEVER_AN_ETAG}, 204),
        ("PUT", {"If-None-Match": "W/{etag}"}, 412),
        # Tags compare character by character: "07" is not "7".
        ("PUT", {"If-Match": "{zero_padded}"}, 412),
        ("DELETE", {"If-Match": "{zero_padded}"}, 412),
        ("GET", {"If-None-Match": "{zero_padded}"}, 200),
        ("PUT", {"If-None-Match": "W/{zero_padded}"}, 200),
    ],
)
async def test_preconditions_compare_and_apply_as_rfc_9110_says(
    client: httpx.AsyncClient,
    alice: dict[str, str],
    method: str,
    conditions: dict[str, str],
    status: int,
) -> None:
    etag = (await _put(client, alice, "Stored.")).headers["etag"]
    tags = {"etag": etag, "zero_padded": f'"0{etag[1:]}'}
    headers = {name: value.format(**tags) for name, value in conditions.items()}
    body = {"message": "Changed."} if method == "PUT" else None
    response = await client.request(method, "/me/message", json=body, headers={**alice, **headers})
    assert response.status_code == status, response.text
    if status == 412:
        assert_problem(response, 412, "precondition-failed")
        kept = await client.get("/me/message", headers=alice)
        assert (kept.json()["message"], kept.headers["etag"]) == ("Stored.", etag)


# RFC 9110, section 5.3: several field lines of one name are one comma-separated list.
@pytest.mark.parametrize(
    ("method", "name", "status"),
    [
        ("GET", "If-None-Match", 304),
        ("PUT", "If-None-Match", 412),
        ("DELETE", "If-None-Match", 412),
        ("GET", "If-Match", 200),
        ("PUT", "If-Match", 200),
        ("DELETE", "If-Match", 204),
    ],
)
async def test_a_condition_sent_on_several_lines_is_read_as_one_list(
    client: httpx.AsyncClient, alice: dict[str, str], method: str, name: str, status: int
) -> None:
    etag = (await _put(client, alice, "Stored.")).headers["etag"]
    lines = [(name, NEVER_AN_ETAG), (name, etag)]  # the current tag on the second line only
    body = {"message": "Changed."} if method == "PUT" else None
    response = await client.request(
        method, "/me/message", json=body, headers=[*alice.items(), *lines]
    )
    assert response.status_code == status, response.text
    if status == 412:
        assert_problem(response, 412, "precondition-failed")
        kept = await client.get("/me/message", headers=alice)
        assert (kept.json()["message"], kept.headers["etag"]) == ("Stored.", etag)


@pytest.mark.parametrize(
    "conditions", [{"If-Match": '"1"'}, {"If-Match": "*"}, {"If-None-Match": "*"}]
)
async def test_delete_with_nothing_stored_is_404_whatever_the_conditions(
    client: httpx.AsyncClient, alice: dict[str, str], conditions: dict[str, str]
) -> None:
    response = await client.delete("/me/message", headers={**alice, **conditions})
    assert_problem(response, 404, "message-not-found")


# --- Input --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("message", "stored"),
    [
        ("  padded  ", "padded"),
        ("line one\r\nline two", "line one\nline two"),
        ("col\tumn", "col\tumn"),
        ("x" * 1000, "x" * 1000),
        ("  " + "y" * 1000 + "\n", "y" * 1000),
        ("Ünïcødé ✓ 名言", "Ünïcødé ✓ 名言"),
    ],
)
async def test_message_is_stored_trimmed_and_normalised(
    client: httpx.AsyncClient, alice: dict[str, str], message: str, stored: str
) -> None:
    response = await _put(client, alice, message)
    assert response.status_code == 201, response.text
    assert (await client.get("/me/message", headers=alice)).json()["message"] == stored


@pytest.mark.parametrize(
    "message",
    [
        "",
        "   ",
        " \n\t ",
        "x" * 1001,
        "nul\x00byte",
        "bell\x07",
        "esc\x1b[31m",
        "c1\x9b",
        "quote\x1d\x1d",  # str.strip() would drop these separators silently
        123,
        None,
        ["a"],
        {"a": 1},
        True,
    ],
    ids=[
        "empty",
        "spaces",
        "whitespace",
        "too-long",
        "nul",
        "bell",
        "escape",
        "c1",
        "trailing-separators",
        "number",
        "null",
        "list",
        "object",
        "bool",
    ],
)
async def test_unacceptable_message_returns_422_pointing_at_the_field(
    client: httpx.AsyncClient, alice: dict[str, str], message: object
) -> None:
    body = assert_problem(await _put(client, alice, message), 422, "validation-failed")
    assert body["errors"][0]["pointer"] == "/message"  # type: ignore[index]
    assert (await client.get("/me/message", headers=alice)).status_code == 404


@pytest.mark.parametrize(
    ("payload", "pointer"),
    [
        ({"message": "ok", "mesage": "typo"}, "/mesage"),
        ({"message": "ok", "user_id": BOB}, "/user_id"),
        ({}, "/message"),
        (["message"], ""),
    ],
)
async def test_unknown_or_missing_fields_return_422(
    client: httpx.AsyncClient, alice: dict[str, str], payload: object, pointer: str
) -> None:
    response = await client.put("/me/message", json=payload, headers=alice)
    body = assert_problem(response, 422, "validation-failed")
    assert body["errors"][0]["pointer"] == pointer  # type: ignore[index]


@pytest.mark.parametrize(
    "content",
    [b'{"message": "unterminated', b'{"message": "caf\xe9"}'],
    ids=["not-json", "not-utf8"],
)
async def test_body_that_is_not_utf8_json_returns_400_invalid_json(
    client: httpx.AsyncClient, alice: dict[str, str], content: bytes
) -> None:
    response = await client.put(
        "/me/message", content=content, headers={**alice, "Content-Type": "application/json"}
    )
    assert_problem(response, 400, "invalid-json")


async def test_put_with_both_if_match_and_if_none_match(
    client: httpx.AsyncClient, alice: dict[str, str]
) -> None:
    etag = (await _put(client, alice, "First.")).headers["etag"]
    both = {"If-Match": etag, "If-None-Match": NEVER_AN_ETAG}
    assert (await _put(client, alice, "Second.", **both)).status_code == 200
    contradicting = {"If-Match": "*", "If-None-Match": "*"}
    assert_problem(await _put(client, alice, "Third.", **contradicting), 412, "precondition-failed")


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded"])
async def test_wrong_content_type_returns_415(
    client: httpx.AsyncClient, alice: dict[str, str], content_type: str
) -> None:
    response = await client.put(
        "/me/message",
        content=b'{"message": "hello"}',
        headers={**alice, "Content-Type": content_type},
    )
    assert_problem(response, 415, "unsupported-media-type")


async def test_body_over_16_kib_returns_413(
    client: httpx.AsyncClient, alice: dict[str, str]
) -> None:
    payload = json.dumps({"message": "x" * 17 * 1024}).encode()
    response = await client.put(
        "/me/message", content=payload, headers={**alice, "Content-Type": "application/json"}
    )
    assert_problem(response, 413, "payload-too-large")


async def test_streamed_body_over_16_kib_is_refused_before_it_is_all_read(
    client: httpx.AsyncClient, alice: dict[str, str]
) -> None:
    sent_chunks = 0

    async def endless_body() -> object:
        nonlocal sent_chunks
        yield b'{"message": "'
        for _ in range(1000):  # would be 1 MiB; the server must stop reading long before
            sent_chunks += 1
            yield b"x" * 1024

    response = await client.put(
        "/me/message",
        content=endless_body(),  # type: ignore[arg-type]
        headers={**alice, "Content-Type": "application/json"},
    )
    assert_problem(response, 413, "payload-too-large")
    assert sent_chunks < 100


# --- Scoping: the user id comes only from the token ----------------------------------------------


async def test_a_users_quote_is_untouched_by_other_users_requests(
    client: httpx.AsyncClient, alice: dict[str, str], bob: dict[str, str]
) -> None:
    etag = (await _put(client, alice, "Alice's.")).headers["etag"]
    assert (await client.get("/me/message", headers=bob)).status_code == 404
    assert (await _put(client, bob, "Bob's.", **{"If-Match": etag})).status_code == 412
    assert (
        await client.delete("/me/message", headers={**bob, "If-Match": etag})
    ).status_code == 404
    assert (await _put(client, bob, "Bob's.")).status_code == 201
    assert (await client.delete("/me/message", headers=bob)).status_code == 204
    # Attempts to name another user anywhere but the token change nothing.
    await client.get(f"/me/message?user_id={ALICE}", headers={**bob, "X-User-Id": ALICE})
    await client.delete(f"/me/message?user_id={ALICE}", headers={**bob, "X-User-Id": ALICE})
    response = await client.get("/me/message", headers=alice)
    assert response.json()["message"] == "Alice's."
    assert response.headers["etag"] == etag


async def test_50_users_concurrently_each_see_only_their_own_quote(
    client: httpx.AsyncClient, auth_headers: AuthHeaders
) -> None:
    users = [f"user_concurrent_{n}" for n in range(50)]

    async def write_then_read(user: str) -> tuple[int, int, str]:
        headers = auth_headers(user)
        written = await _put(client, headers, f"quote of {user}")
        read = await client.get("/me/message", headers=headers)
        return written.status_code, read.status_code, read.json()["message"]

    results = await asyncio.gather(*(write_then_read(user) for user in users))
    assert results == [(201, 200, f"quote of {user}") for user in users]


# --- Errors everywhere ----------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["POST", "PATCH"])
async def test_other_methods_return_405_with_allow(
    client: httpx.AsyncClient, alice: dict[str, str], method: str
) -> None:
    response = await client.request(method, "/me/message", headers=alice)
    assert_problem(response, 405, "method-not-allowed")
    assert response.headers["allow"] == "DELETE, GET, HEAD, PUT"


async def test_unknown_route_returns_404_problem(client: httpx.AsyncClient) -> None:
    assert_problem(await client.get("/me/messages"), 404, "not-found")


async def test_request_id_is_accepted_and_echoed(
    client: httpx.AsyncClient, alice: dict[str, str]
) -> None:
    response = await client.get("/me/message", headers={**alice, "X-Request-ID": "trace-42"})
    assert response.headers["x-request-id"] == "trace-42"
    assert response.json()["request_id"] == "trace-42"


async def test_unusable_request_id_is_replaced_by_a_generated_one(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/healthz", headers={"X-Request-ID": "bad id\twith spaces"})
    generated = response.headers["x-request-id"]
    assert generated != "bad id\twith spaces"
    assert len(generated) == 32


async def test_one_access_log_line_per_request_without_token_or_quote(
    client: httpx.AsyncClient, alice: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="quoteapi.access")
    await _put(client, alice, "A very private quote.", **{"X-Request-ID": "log-1"})
    (record,) = [r for r in caplog.records if r.name == "quoteapi.access"]
    # The request id is the formatter's to add: tests/platform/test_logs.py.
    assert record.fields == {  # type: ignore[attr-defined]
        "event": "request",
        "method": "PUT",
        "route": "/me/message",
        "status": 201,
        "duration_ms": record.fields["duration_ms"],  # type: ignore[attr-defined]
    }
    token = alice["Authorization"].removeprefix("Bearer ")
    for text in (caplog.text, str(record.fields)):  # type: ignore[attr-defined]
        assert token not in text
        assert "private quote" not in text


async def test_unexpected_error_returns_500_problem_without_internals(api: RunningApp) -> None:
    @api.app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("password=hunter2 at /srv/secret.py line 42")

    async with api.client(raise_app_exceptions=False) as raw:
        response = await raw.get("/boom")
    body = assert_problem(response, 500, "internal-error")
    assert "hunter2" not in response.text
    assert "secret.py" not in response.text
    assert "Traceback" not in str(body)
